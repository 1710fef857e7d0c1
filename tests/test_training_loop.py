"""The one loop: stages plug in without copying it, and the epoch logs have one writer."""

import keras
import numpy as np

from keras_captioning.run_directory import RunDirectory
from keras_captioning.training.epoch_end import EpochEnd
from keras_captioning.training.stage import Stage
from keras_captioning.training.trainer import train
from tests.helpers import smoke_config


class _Recorder(keras.callbacks.Callback):
    def __init__(self, name, calls, writes=None):
        super().__init__()
        self.name, self.calls, self.writes = name, calls, writes or {}

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append((self.name, dict(logs), self.model))
        logs.update(self.writes)


def test_epoch_end_runs_validation_then_schedule_then_checkpoint():
    calls = []
    validation = _Recorder("validation", calls, {"val_cider_d": 0.5})
    schedule = _Recorder("schedule", calls, {"learning_rate": 0.1})
    checkpoint = _Recorder("checkpoint", calls)
    end = EpochEnd(checkpoint, schedule, validation)  # given in any order: run in the fixed one
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    end.set_model(model)
    logs = {"loss": 1.0, "step_reward": 3.0}
    end.on_epoch_end(0, logs)
    assert [c[0] for c in calls] == ["validation", "schedule", "checkpoint"]
    assert all(c[2] is model for c in calls)
    assert calls[1][1] == {"loss": 1.0, "val_cider_d": 0.5}  # the schedule sees the decoded score
    assert calls[2][1] == {"loss": 1.0, "val_cider_d": 0.5, "learning_rate": 0.1}  # the checkpoint sees both
    assert logs == {"loss": 1.0, "val_cider_d": 0.5, "learning_rate": 0.1}  # step_* values left out
    calls.clear()
    EpochEnd(checkpoint, schedule).on_epoch_end(1, {})  # no decoded validation
    assert [c[0] for c in calls] == ["schedule", "checkpoint"]


class _InMemoryStage(Stage):
    """A stage with its own model and its own data (not the shards): what a fine-tuning stage does."""

    objective = "in_memory"
    built = []

    def num_examples(self, ctx):
        return 8

    def build_model(self, ctx):
        from keras_captioning.models.registry import build_model

        vocab = ctx.vocab
        model = build_model(self.cfg, len(vocab), ctx.manifest["grid_shape"], {
            "pad_id": vocab.pad_id, "start_id": vocab.start_id, "end_id": vocab.end_id})
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        self.built.append(model)
        return model

    def epoch_dataset(self, ctx, epoch, steps):
        import tensorflow as tf

        rng = np.random.default_rng(self.cfg.train.seed + epoch)
        regions, dim = ctx.manifest["grid_shape"]
        captions = np.zeros((8, 6), "int32")
        captions[:, 0], captions[:, 1:4], captions[:, 4] = ctx.vocab.start_id, 5, ctx.vocab.end_id
        data = {"features": rng.normal(size=(8, regions, dim)).astype("float32"), "captions": captions}
        return tf.data.Dataset.from_tensor_slices(data).batch(4).take(steps)

    def selection(self, ctx):
        return "loss", "min", None


def test_a_stage_supplies_its_own_model_and_data(tiny_run, tmp_path):
    cfg = smoke_config(tiny_run.root, run=tmp_path / "in-memory", **{"train.epochs": 2})
    run_dir = train(cfg, stage_class=_InMemoryStage)
    run = RunDirectory(run_dir)
    assert run.info()["objective"] == "in_memory"
    assert run.state()["next_epoch"] == 2 and run.has_checkpoint()
    assert len(open(run.log_csv, encoding="utf-8").read().splitlines()) == 3
    assert len(_InMemoryStage.built) == 1
