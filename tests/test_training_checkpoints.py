"""Training checkpoints: a damaged last checkpoint falls back to the previous one; a run that died
before its first checkpoint starts again."""

import csv
import json
import logging
import shutil

import pytest

from tests.helpers import smoke_config


@pytest.mark.slow  # a resumed training; the damaged-file message: tests/test_evaluate.py, the restart: the test below
def test_truncated_last_checkpoint_resume_falls_back_to_previous(root, tmp_path, caplog):
    from keras_captioning.training.trainer import train

    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    ckpt = run / "checkpoints"
    assert (ckpt / "previous.keras").exists()  # epoch 1's checkpoint, kept when epoch 2's was written
    last = ckpt / "last.keras"
    last.write_bytes(last.read_bytes()[:1000])
    cfg = smoke_config(root, **{"train.run_dir": run, "train.epochs": 3})
    with caplog.at_level(logging.WARNING):
        train(cfg, resume=True)
    assert f"resuming from {ckpt / 'previous.keras'} (epoch 1)" in caplog.text
    assert f"{last}: not a complete .keras file" in caplog.text
    assert json.loads((run / "state.json").read_text())["next_epoch"] == 3
    with open(run / "log.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [0, 1, 2]  # epoch 2 rerun, logged once


@pytest.mark.parametrize("resume", [pytest.param(False, marks=pytest.mark.slow), True])  # the same restart
def test_run_that_died_before_its_first_checkpoint_starts_again(root, tmp_path, resume, caplog):
    from keras_captioning.training.trainer import train

    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(root / "run" / "run.json", run / "run.json")  # what a crash in epoch 1 leaves
    shutil.copyfile(root / "run" / "config.yaml", run / "config.yaml")
    cfg = smoke_config(root, **{"train.run_dir": run, "train.epochs": 1})
    with caplog.at_level(logging.WARNING):
        train(cfg, resume=resume)
    assert "stopped before its first checkpoint; starting it again from epoch 1" in caplog.text
    assert json.loads((run / "state.json").read_text())["next_epoch"] == 1
