"""utils.atomic_output: the one writer; a failed write leaves no file and says one line."""

import os

import pytest

from keras_captioning.errors import CaptioningError
from keras_captioning.utils import atomic_output, write_json_atomic


def test_atomic_output_renames_on_success(tmp_path):
    target = tmp_path / "a.txt"
    with atomic_output(target) as tmp:
        assert not target.exists()
        with open(tmp, "w") as fh:
            fh.write("done")
    assert target.read_text() == "done"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_atomic_output_removes_the_temporary_file_on_failure(tmp_path):
    target = tmp_path / "a.txt"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []


def test_os_error_becomes_one_line_naming_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    target = blocker / "x.json"  # a folder that is a file
    with pytest.raises(CaptioningError) as err:
        write_json_atomic(target, {"a": 1})
    assert str(target) in str(err.value) and "\n" not in str(err.value)
    assert os.listdir(tmp_path) == ["file"]


def test_suffix_keeps_the_ending(tmp_path):
    with atomic_output(tmp_path / "m.keras", suffix=".keras") as tmp:
        assert tmp.endswith(".keras")
        open(tmp, "w").close()
    assert (tmp_path / "m.keras").exists()
