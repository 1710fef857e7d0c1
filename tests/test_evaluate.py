"""evaluate: decode a split, score it, write the report folder; its writers and its errors."""

import errno
import os
import re

import pytest

from keras_captioning import utils
from keras_captioning.errors import CaptioningError
from keras_captioning.evaluate import evaluate_run


def test_a_full_disk_while_writing_the_report_is_one_line_and_marks_nothing_complete(tiny_run, tmp_path,
                                                                                       monkeypatch):
    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "report"
    monkeypatch.setattr(utils, "fsync_path", full)
    target = out / "predictions.json"
    with pytest.raises(CaptioningError, match="^" + re.escape(f"{target}: cannot write it (No space left on device)")):
        evaluate_run(tiny_run.run_dir, split="val", beam=1, out_dir=str(out), metrics=["BLEU-4"])
    assert os.listdir(out) == []  # no temporary file, and no scores.json claiming a report
    monkeypatch.undo()
    result = evaluate_run(tiny_run.run_dir, split="val", beam=1, out_dir=str(out), metrics=["BLEU-4"])
    assert (out / "scores.json").is_file() and result["scores"]["BLEU-4"] >= 0
