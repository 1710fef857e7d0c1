"""The one writer of the epoch logs: decoded scores, the schedule, then the checkpoint.

Keras hands every callback the same ``logs`` dict, in list order. So that no callback
depends on where it sits in that list, the loop puts this one first and it alone writes:

    val_cider_d, val_bleu_4   ``DecodedValidation`` (when the stage decodes the val split)
    learning_rate             ``MetricSchedule`` (the rate the epoch ran with)
    step_*                    removed: per-step values a stage's ``train_step`` returns
                              (SCST's ``steps.csv``) are not epoch values

then steps the schedule (plateau decay, early stopping) and writes the checkpoints
(``RunCheckpoint``, which records the schedule's counters). Every other callback (log.csv,
TensorBoard, a stage's own) only reads the logs.
"""

from __future__ import annotations

import keras


class EpochEnd(keras.callbacks.Callback):
    """Runs validation -> schedule -> checkpoint at every epoch end, in that fixed order.

    Args:
        checkpoint: the run's ``RunCheckpoint``.
        schedule: its ``MetricSchedule``.
        validation: a ``DecodedValidation`` or None.
    """

    def __init__(self, checkpoint, schedule, validation=None):
        super().__init__()
        self.steps = [s for s in (validation, schedule, checkpoint) if s is not None]

    def set_model(self, model):
        super().set_model(model)
        for step in self.steps:
            step.set_model(model)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        for key in [k for k in logs if k.startswith("step_")]:
            del logs[key]
        for step in self.steps:
            step.on_epoch_end(epoch, logs)
