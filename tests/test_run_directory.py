"""The run directory is self-contained and owned by ``RunDirectory``: copy a run elsewhere,
delete the features and the dataset, and ``caption`` still writes the same captions."""

import os
import shutil

import pytest

from keras_captioning.captioner import Captioner
from keras_captioning.cli import main
from keras_captioning.run_directory import RunDirectory
from tests.helpers import smoke_config


def _photos(root, target, count=4):
    target.mkdir()
    for path in sorted((root / "data" / "images").iterdir())[:count]:
        shutil.copy(path, target / path.name)
    return sorted(str(p) for p in target.iterdir())


def _cli_captions(run_dir, images, capsys):
    capsys.readouterr()
    assert main(["caption", "--run", str(run_dir), *images]) == 0
    return [line.split("\t")[1] for line in capsys.readouterr().out.splitlines() if "\t" in line]


def test_layout_paths_and_state(tmp_path):
    run = RunDirectory(tmp_path / "r")
    assert run.checkpoint("best") == str(tmp_path / "r" / "checkpoints" / "best.keras")
    assert run.checkpoint("last.keras") == run.checkpoint("last")
    assert not run.exists() and run.state() is None and not run.has_checkpoint()
    os.makedirs(run.checkpoints_dir)
    run.write_state({"next_epoch": 3})
    assert run.state() == {"next_epoch": 3}
    assert not [n for n in os.listdir(run.path) if ".tmp-" in n]


def test_copied_run_captions_without_features_and_data(tiny_run, tmp_path, capsys):
    images = _photos(tiny_run.root, tmp_path / "photos")
    expected = _cli_captions(tiny_run.run_dir, images, capsys)
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(tiny_run.run_dir, moved)
    hidden = [tiny_run.root / name for name in ("features", "data")]
    for path in hidden:  # the shared run's inputs vanish for the length of this test
        os.rename(path, f"{path}.hidden")
    try:
        assert _cli_captions(moved, images, capsys) == expected
    finally:
        for path in hidden:
            os.rename(f"{path}.hidden", path)


@pytest.mark.slow
def test_random_weight_encoder_travels_with_the_run(tmp_path, capsys):
    """A randomly initialised MobileNet: its seeded weights are kept in the run itself."""
    from keras_captioning.training.trainer import train

    root = tmp_path / "w"
    cfg = smoke_config(root, "attention", "run", **{
        "features.backbone": "mobilenet", "features.alpha": 0.25, "features.image_size": 64,
        "features.weights": "none", "train.epochs": 1, "train.select_on": "val_loss"})
    run_dir = train(cfg)
    assert os.path.isfile(RunDirectory(run_dir).encoder_weights)
    images = _photos(root, tmp_path / "photos")
    expected = [r["caption"] for r in Captioner.from_run(run_dir).caption(images)]
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(run_dir, moved)
    for name in ("features", "data", "run"):
        shutil.rmtree(root / name)
    assert _cli_captions(moved, images, capsys) == expected


def test_captioning_error_is_a_value_error():
    from keras_captioning.errors import CaptioningError

    assert issubclass(CaptioningError, ValueError)
