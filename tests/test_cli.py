"""The command line: decoding flags checked against the ranges table before anything loads."""


import pytest

from keras_captioning.cli import main


@pytest.mark.parametrize("flags, message", [
    (["--beam", "0"], "error: --beam=0 is out of range; valid: [1, 100]"),
    (["--beam", "100000"], "error: --beam=100000 is out of range; valid: [1, 100]"),
    (["--max-length", "0"], "error: --max-length=0 is out of range; valid: [1, 1000]"),
])
def test_caption_and_export_flags_out_of_range(root, flags, message, capsys):
    """caption / export check their decoding flags against the same table, before loading anything."""
    for command in (["caption", str(root / "missing.jpg")], ["export", "--out", str(root / "x")]):
        assert main([*command, "--run", str(root / "run"), *flags]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [message]
