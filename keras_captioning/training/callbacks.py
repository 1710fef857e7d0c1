"""Callbacks that keep a run directory recoverable: atomic checkpoints, NaN guard, run state.

Checkpoints are whole ``.keras`` files (weights *and* optimizer state), written through
``utils.atomic_output`` (a temporary name, then a rename), so a ``kill -9`` or a full disk
during a save leaves the previous one intact and the new one unrecorded.
The last checkpoint replaced is kept as ``previous.keras`` (with its ``previous-state.json``)
until the new one and its state are both written; ``--resume`` takes the newest pair that
loads and agrees (same optimizer step), so a damaged ``last.keras`` costs one epoch, not the run.
A non-finite loss stops training and no checkpoint is written after it, so ``last.keras``
always holds the last good weights.
"""

from __future__ import annotations

import json
import logging
import math
import os

import keras

from keras_captioning.run_directory import RunDirectory
from keras_captioning.utils import atomic_output, write_json_atomic

log = logging.getLogger(__name__)

LAST, PREVIOUS, PREVIOUS_STATE = RunDirectory.LAST, RunDirectory.PREVIOUS, RunDirectory.PREVIOUS_STATE


def read_checkpoint(path: str, compile: bool = True) -> keras.Model:
    """Loads a ``.keras`` checkpoint; a missing, truncated or foreign file is a CaptioningError naming it."""
    import zipfile

    import keras_captioning.models  # noqa: F401  (registers the custom classes)
    from keras_captioning.errors import CaptioningError

    if not os.path.isfile(path):
        raise CaptioningError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):  # Keras says "File not found" for a truncated archive
        raise CaptioningError(f"{path}: not a complete .keras file ({os.path.getsize(path)} bytes; "
                              "truncated or damaged)")
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as err:  # zip, h5 and deserialisation errors all mean "cannot use this file"
        reason = " ".join(str(err).split())[:200]
        raise CaptioningError(f"{path}: cannot be loaded as a checkpoint ({type(err).__name__}: "
                              f"{reason})") from None


def load_resume_point(run_dir: str):
    """``(model, state)`` of the newest checkpoint that loads and matches its state file.

    Tries ``last.keras`` then ``previous.keras`` against ``state.json`` then
    ``previous-state.json``; a pair matches when the state's ``optimizer_iterations`` is the
    model's optimizer step. Raises CaptioningError naming every file tried and why.
    """
    from keras_captioning.errors import CaptioningError

    run = RunDirectory(run_dir)
    states, problems = [], []
    for path in (run.state_path, run.previous_state_path):
        try:
            with open(path, encoding="utf-8") as fh:
                states.append(json.load(fh))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as err:
            problems.append(f"{path}: unreadable ({err})")
    for name in (LAST, PREVIOUS):
        path = run.checkpoint(name)
        if not os.path.exists(path):
            continue
        try:
            model = read_checkpoint(path)
        except CaptioningError as err:
            problems.append(str(err))
            continue
        step = int(model.optimizer.iterations.numpy())
        state = next((s for s in states if s.get("optimizer_iterations") == step), None)
        if state is None:
            problems.append(f"{path}: no state file records its optimizer step {step}")
            continue
        if name != LAST:
            log.warning("resuming from %s (epoch %d): %s", path, int(state["next_epoch"]), "; ".join(problems))
        return model, state
    raise CaptioningError(f"{run_dir}: no usable checkpoint to resume from ({'; '.join(problems) or 'none found'}); "
                          "train again with --overwrite")


def truncate_log(csv_path: str, first_epoch: int) -> None:
    """Drops log.csv rows of epochs >= ``first_epoch`` (a resume from an older checkpoint reruns them)."""
    if not os.path.exists(csv_path):
        return
    with open(csv_path, encoding="utf-8") as fh:
        lines = fh.readlines()
    keep = lines[:1] + [ln for ln in lines[1:] if ln.split(",", 1)[0].strip().isdigit()
                        and int(ln.split(",", 1)[0]) < first_epoch]
    if len(keep) != len(lines):
        with atomic_output(csv_path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(keep)


def atomic_save_model(model: keras.Model, path: str) -> None:
    """Saves ``model`` to ``path`` through ``atomic_output`` (a full disk: one error naming ``path``)."""
    with atomic_output(path, suffix=".keras") as tmp:
        model.save(tmp)


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


def _improved(value, best, mode) -> bool:
    from keras_captioning.training.selection import improved

    return value is not None and improved(float(value), best, mode)


class RunCheckpoint(keras.callbacks.Callback):
    """Writes ``checkpoints/last.keras`` every epoch and ``best.keras`` on a new best ``monitor``.

    ``monitor`` is a key of the epoch logs (``val_cider_d`` from ``DecodedValidation``, or
    ``val_loss``) and ``mode`` says whether larger ("max") or smaller ("min") is better. When the
    selection is not ``val_loss``, ``best-val_loss.keras`` keeps the lowest-val_loss weights too
    (what the study's selection would have kept), so both can be evaluated from one run.

    ``state.json`` records the next epoch to run, the best value so far, the optimizer step and
    the schedule's counters (``schedule``, a ``MetricSchedule``), so ``--resume`` restarts at the
    right epoch with the right data order and the same plateau / early-stopping state.
    """

    def __init__(self, run_dir: str, nan_guard: NaNGuard | None = None, best: float | None = None,
                 monitor: str = "val_loss", mode: str = "min", schedule=None, best_val_loss: float | None = None):
        super().__init__()
        self.run_dir = run_dir
        self.run = RunDirectory(run_dir)
        self.ckpt_dir = self.run.checkpoints_dir
        self.nan_guard = nan_guard
        self.monitor = monitor
        self.mode = mode
        self.best = best
        self.best_val_loss = best_val_loss
        self.schedule = schedule
        os.makedirs(self.ckpt_dir, exist_ok=True)

    def save_state(self, next_epoch: int, interrupted: bool = False) -> None:
        self.run.write_state(
            {
                "next_epoch": next_epoch,
                "select_on": self.monitor,
                "best": self.best,
                "best_val_loss": self.best_val_loss,
                "optimizer_iterations": int(self.model.optimizer.iterations.numpy()),
                "schedule": self.schedule.state() if self.schedule is not None else None,
                "interrupted": interrupted,
            },
        )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.nan_guard is not None and self.nan_guard.triggered:
            return  # never overwrite the last good checkpoint with non-finite weights
        if not all(math.isfinite(float(v)) for k, v in logs.items() if "loss" in k):
            return
        if _improved(logs.get(self.monitor), self.best, self.mode):
            self.best = float(logs[self.monitor])
            atomic_save_model(self.model, self.run.checkpoint("best"))
        val_loss = logs.get("val_loss")
        if _improved(val_loss, self.best_val_loss, "min"):
            self.best_val_loss = float(val_loss)
            if self.monitor != "val_loss":
                atomic_save_model(self.model, self.run.checkpoint("best-val_loss"))
        self.save_last(epoch + 1)

    def save_interrupted(self, epoch: int) -> None:
        """Ctrl-C mid-epoch: keep the current weights; ``--resume`` reruns that epoch."""
        if self.nan_guard is not None and self.nan_guard.triggered:
            return
        self.save_last(epoch, interrupted=True)

    def save_last(self, next_epoch: int, interrupted: bool = False) -> None:
        """Writes ``last.keras`` and ``state.json``, keeping the pair they replace as the fallback.

        The new checkpoint is complete (temporary file) before anything is renamed; if the
        process dies between the renames, ``load_resume_point`` pairs files by optimizer step.
        """
        last = self.run.checkpoint(LAST)
        state = self.run.state_path
        with atomic_output(last, suffix=".keras") as tmp:
            self.model.save(tmp)
            if os.path.exists(last) and os.path.exists(state):
                try:
                    with open(state, encoding="utf-8") as fh:
                        previous_state = json.load(fh)
                except (OSError, ValueError):
                    previous_state = None  # an unreadable state cannot vouch for the old checkpoint
                if previous_state is not None:
                    os.replace(last, self.run.checkpoint(PREVIOUS))
                    write_json_atomic(self.run.previous_state_path, previous_state)
        self.save_state(next_epoch, interrupted=interrupted)


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
