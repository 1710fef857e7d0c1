"""``train --resume`` checks the config: what alters the model, data or features is refused in
one line; epochs, patience and the schedule may change and are recorded; config.yaml always
describes the model in checkpoints/."""

import json
import os

import pytest

from keras_captioning.errors import CaptioningError
from keras_captioning.run_directory import RunDirectory
from keras_captioning.training.run_configs import RESUMABLE, config_changes
from keras_captioning.training.trainer import train
from tests.helpers import smoke_config


def _cfg(tiny_run, run_dir, **extra):
    return smoke_config(tiny_run.root, run=os.path.relpath(run_dir, tiny_run.root), **extra)


def test_config_changes_splits_refused_from_allowed(tmp_path):
    old = smoke_config(tmp_path)
    refused, allowed = config_changes(old, smoke_config(tmp_path, **{"model.units": 64, "train.epochs": 5,
                                                                       "eval.beam": 1}))
    assert refused == ["model.units: 32 -> 64"]
    assert allowed == ["eval.beam: 2 -> 1", "train.epochs: 2 -> 5"]
    assert config_changes(old, smoke_config(tmp_path)) == ([], [])
    for key in ("train.batch_size", "train.seed", "data.vocab_size", "features.backbone", "train.learning_rate"):
        assert key not in RESUMABLE


def test_resume_refuses_a_model_change_in_one_line_and_keeps_config_yaml(tiny_run, copy_run):
    run = RunDirectory(copy_run)
    before = open(run.config_path, encoding="utf-8").read()
    with pytest.raises(CaptioningError) as err:
        train(_cfg(tiny_run, copy_run, **{"model.units": 64, "data.vocab_size": 3, "train.epochs": 3}), resume=True)
    message = str(err.value)
    assert "\n" not in message
    assert "model.units: 32 -> 64" in message and "data.vocab_size: 5000 -> 3" in message
    assert "train.epochs" not in message.split("(")[0]  # allowed: not listed as a refused change
    assert open(run.config_path, encoding="utf-8").read() == before
    assert run.config().model.units == 32


def test_resume_with_more_epochs_records_the_change(tiny_run, copy_run):
    run = RunDirectory(copy_run)
    trained = run.state()["next_epoch"]
    train(_cfg(tiny_run, copy_run, **{"train.epochs": trained + 1, "train.early_stopping_patience": 4}),
          resume=True)
    assert run.state()["next_epoch"] == trained + 1
    assert run.config().train.epochs == trained + 1 and run.config().model.units == 32
    resumed = json.loads(open(run.file(run.INFO), encoding="utf-8").read())["resumed"]
    assert len(resumed) == 1 and resumed[0]["at_epoch"] == trained
    changed = [c for c in resumed[0]["changed"] if not c.startswith("train.run_dir")]  # the copy moved it
    assert changed == ["train.early_stopping_patience: None -> 4", f"train.epochs: {trained} -> {trained + 1}"]
