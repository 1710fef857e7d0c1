"""Issue 9 for training: mismatches caught up front, NaN stops cleanly, Ctrl-C and kill -9
leave a checkpoint that ``--resume`` continues with its optimizer state and data order."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_captioning.errors import CaptioningError
from keras_captioning.features.build import build_features
from keras_captioning.run_directory import RunDirectory
from keras_captioning.training import callbacks as cb
from keras_captioning.training.trainer import train
from tests.helpers import SMOKE, smoke_config, smoke_overrides, subprocess_env


@pytest.fixture(scope="module")
def features_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    build_features(smoke_config(root))
    return root


def _state(run):
    return json.loads(open(os.path.join(run, "state.json")).read())


def _log_epochs(run):
    with open(os.path.join(run, "log.csv")) as fh:
        return [int(r["epoch"]) for r in csv.DictReader(fh)]


def _optimizer_state(path):
    import keras

    import keras_captioning.models  # noqa: F401

    model = keras.saving.load_model(path)
    return int(model.optimizer.iterations.numpy()), [np.array(v) for v in model.optimizer.variables]


def test_backbone_mismatch_detected_before_training(features_root):
    cfg = smoke_config(features_root, run="mismatch", **{"features.backbone": "mobilenet"})
    with pytest.raises(CaptioningError, match=r"features: features were made with other settings \(.*features\.backbone: 'patches' -> 'mobilenet'"):
        train(cfg)
    assert not os.path.exists(features_root / "mismatch" / "checkpoints")


def test_vocabulary_mismatch_detected(features_root, tmp_path):
    import shutil

    feats = tmp_path / "features"
    shutil.copytree(features_root / "features", feats)
    vocab = json.loads((feats / "vocab.json").read_text())
    from keras_captioning.data.vocab import Vocabulary

    words = Vocabulary.load(str(feats / "vocab.json")).id_to_word
    words[4], words[5] = words[5], words[4]  # same words, different ids
    Vocabulary(words, vocab.get("counts")).save(str(feats / "vocab.json"))
    cfg = smoke_config(features_root, run="vocab-mismatch", **{"features.out_dir": feats})
    with pytest.raises(CaptioningError, match="does not match the token ids in the shards"):
        train(cfg)


def test_unknown_backbone_lists_valid_ones(tmp_path):
    cfg = smoke_config(tmp_path, **{"features.backbone": "vgg16"})
    with pytest.raises(CaptioningError, match=r"vgg16.*inception_v3.*resnet50"):
        build_features(cfg)


def test_old_run_directory_refused(copy_run, tiny_run):
    info_path = os.path.join(copy_run, "run.json")
    info = json.loads(open(info_path).read())
    info["run_format"] = 0
    info["package_version"] = "0.0.1"
    with open(info_path, "w") as fh:
        fh.write(json.dumps(info))
    with pytest.raises(CaptioningError, match=r"run format 0 \(package 0.0.1\) is not the supported format"):
        RunDirectory(copy_run).info()
    cfg = smoke_config(tiny_run.root, **{"train.run_dir": copy_run, "train.epochs": 3})
    with pytest.raises(CaptioningError, match="is not the supported format"):
        train(cfg, resume=True)


@pytest.mark.slow  # a training run of its own
def test_resume_restores_step_count_and_optimizer_state(features_root):
    run = features_root / "resume"
    train(smoke_config(features_root, run="resume", **{"train.epochs": 1}))
    steps, before = _optimizer_state(str(run / "checkpoints" / "last.keras"))
    assert steps > 0 and _state(run)["optimizer_iterations"] == steps
    train(smoke_config(features_root, run="resume", **{"train.epochs": 2}), resume=True)
    after_steps, _ = _optimizer_state(str(run / "checkpoints" / "last.keras"))
    assert after_steps == 2 * steps  # continued counting, not restarted
    assert _state(run)["next_epoch"] == 2 and _log_epochs(run) == [0, 1]
    # the checkpoint carries Adam's moment estimates (not only the weights): they are non-zero
    # after one epoch, and a fresh optimizer would start them at zero and the step count at 0.
    moments = [v for v in before if v.ndim > 0 and v.size > 1]
    assert moments and all(np.abs(v).sum() > 0 for v in moments)


@pytest.mark.slow  # a training run of its own
def test_nan_loss_stops_and_keeps_last_good_checkpoint(features_root, monkeypatch, caplog):
    import tensorflow as tf

    import keras_captioning.data.pipeline as pipeline

    run = features_root / "nan"
    original = pipeline.make_train_dataset

    def poisoned(*args, seed=0, **kwargs):
        ds = original(*args, seed=seed, **kwargs)
        if seed >= 1:  # epochs after the first: NaN features
            ds = ds.map(lambda b: {**b, "features": b["features"] * tf.constant(float("nan"), b["features"].dtype)})
        return ds

    monkeypatch.setattr(pipeline, "make_train_dataset", poisoned)
    cfg = smoke_config(features_root, run="nan", **{"train.epochs": 3})
    with pytest.raises(CaptioningError, match="stopped on a non-finite loss; the last good checkpoint"):
        train(cfg)
    assert "non-finite loss" in caplog.text and "--resume" in caplog.text
    assert _state(run)["next_epoch"] == 1  # epoch 1 (NaN) never checkpointed
    import keras

    model = keras.saving.load_model(str(run / "checkpoints" / "last.keras"))
    assert all(np.isfinite(np.array(w)).all() for w in model.weights)


@pytest.mark.slow  # a training run of its own
def test_ctrl_c_leaves_usable_checkpoint(features_root, monkeypatch):
    run = features_root / "ctrlc"

    def interrupt(self, batch, logs=None):
        if self.epoch == 1 and batch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(cb.EpochTracker, "on_train_batch_end", interrupt, raising=False)
    with pytest.raises(KeyboardInterrupt):
        train(smoke_config(features_root, run="ctrlc", **{"train.epochs": 3}))
    state = _state(run)
    assert state["interrupted"] is True and state["next_epoch"] == 1
    monkeypatch.undo()
    train(smoke_config(features_root, run="ctrlc", **{"train.epochs": 3}), resume=True)
    assert _state(run)["next_epoch"] == 3 and _state(run)["interrupted"] is False


@pytest.mark.slow
def test_kill_9_during_training_then_resume(tmp_path):
    overrides = smoke_overrides(tmp_path, "attention", "run", **{"train.epochs": 8, "data.synthetic_images": 200})
    cmd = [sys.executable, "-m", "keras_captioning", "train", "--config", SMOKE]
    cmd += [x for o in overrides for x in ("--set", o)]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_path = tmp_path / "run" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state_path.exists() and json.loads(state_path.read_text())["next_epoch"] >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state_path.read_text())["next_epoch"]
    assert 2 <= killed_at < 8
    done = subprocess.run(cmd + ["--resume"], env=subprocess_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed {tmp_path / 'run'} at epoch {killed_at}" in done.stderr
    assert _state(tmp_path / "run")["next_epoch"] == 8
    epochs = _log_epochs(tmp_path / "run")
    assert sorted(set(epochs)) == list(range(8)) and epochs[-1] == 7
