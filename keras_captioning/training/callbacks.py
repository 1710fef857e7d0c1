"""Callbacks that keep a run directory recoverable: atomic checkpoints, NaN guard, run state.

Checkpoints are whole ``.keras`` files (weights *and* optimizer state), written to a
temporary name and renamed, so a ``kill -9`` during a save leaves the previous one intact.
A non-finite loss stops training and no checkpoint is written after it, so ``last.keras``
always holds the last good weights.
"""

from __future__ import annotations

import json
import logging
import math
import os

import keras

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


def atomic_save_model(model: keras.Model, path: str) -> None:
    """Saves ``model`` to ``path`` through a temporary file and an atomic rename."""
    tmp = f"{path[:-len('.keras')]}.tmp-{os.getpid()}.keras"
    model.save(tmp)
    os.replace(tmp, path)


def write_json_atomic(path: str, payload: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_state(run_dir: str) -> dict | None:
    path = os.path.join(run_dir, STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite batch loss, with a message saying what to do."""

    def __init__(self):
        super().__init__()
        self.triggered = False

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.triggered = True
            self.model.stop_training = True
            log.error(
                "non-finite loss (%s) at batch %d: training stopped; the last good checkpoint is "
                "kept. Lower train.learning_rate or set train.clipnorm, then --resume.",
                loss, batch,
            )


class RunCheckpoint(keras.callbacks.Callback):
    """Writes ``checkpoints/last.keras`` every epoch and ``best.keras`` on a new best val_loss.

    ``state.json`` records the next epoch to run, the best val_loss so far and the global
    step, so ``--resume`` restarts at the right epoch with the right data order.
    """

    def __init__(self, run_dir: str, nan_guard: NaNGuard | None = None, best: float = math.inf):
        super().__init__()
        self.run_dir = run_dir
        self.ckpt_dir = os.path.join(run_dir, "checkpoints")
        self.nan_guard = nan_guard
        self.best = best
        os.makedirs(self.ckpt_dir, exist_ok=True)

    def save_state(self, next_epoch: int, interrupted: bool = False) -> None:
        write_json_atomic(
            os.path.join(self.run_dir, STATE_FILE),
            {
                "next_epoch": next_epoch,
                "best_val_loss": None if math.isinf(self.best) else self.best,
                "optimizer_iterations": int(self.model.optimizer.iterations.numpy()),
                "interrupted": interrupted,
            },
        )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.nan_guard is not None and self.nan_guard.triggered:
            return  # never overwrite the last good checkpoint with non-finite weights
        if not all(math.isfinite(float(v)) for k, v in logs.items() if "loss" in k):
            return
        val_loss = logs.get("val_loss")
        if val_loss is not None and float(val_loss) < self.best:
            self.best = float(val_loss)
            atomic_save_model(self.model, os.path.join(self.ckpt_dir, "best.keras"))
        atomic_save_model(self.model, os.path.join(self.ckpt_dir, "last.keras"))
        self.save_state(epoch + 1)

    def save_interrupted(self, epoch: int) -> None:
        """Ctrl-C mid-epoch: keep the current weights; ``--resume`` reruns that epoch."""
        if self.nan_guard is not None and self.nan_guard.triggered:
            return
        atomic_save_model(self.model, os.path.join(self.ckpt_dir, "last.keras"))
        self.save_state(epoch, interrupted=True)


class ScalarSummaries(keras.callbacks.Callback):
    """Epoch scalars as TensorBoard event files, written with TensorFlow alone.

    Keras's TensorBoard callback (and ``tf.summary.scalar``) need the separate ``tensorboard``
    package, which TensorFlow no longer installs; the low-level ``tf.summary.write`` with the
    scalars plugin's metadata writes the same events, and ``tensorboard --logdir`` reads them.
    """

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir
        self._writers = {}

    def _writer(self, name: str):
        import tensorflow as tf

        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.log_dir, name))
        return self._writers[name]

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        ).SerializeToString()
        for key, value in (logs or {}).items():
            split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            with self._writer(split).as_default():
                tf.summary.write(f"epoch_{name}", tf.constant(float(value), tf.float32), step=epoch,
                                 metadata=metadata)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


class EpochTracker(keras.callbacks.Callback):
    """Remembers the epoch in progress (for the Ctrl-C checkpoint)."""

    def __init__(self, initial_epoch: int = 0):
        super().__init__()
        self.epoch = initial_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
