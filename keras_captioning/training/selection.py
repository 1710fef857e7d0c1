"""Model selection on decoded captions, and the schedule that watches the same number.

Teacher-forced validation loss is not what a captioner is scored on: on real photos it
starts rising while the decoded captions still improve (Flickr8k, attention model: val_loss
rose from epoch 5 on). ``DecodedValidation`` decodes the validation split after every epoch
(batched greedy, through the model's ``decode_step``), scores it with the package's CIDEr-D
and BLEU-4 against all references, and puts ``val_cider_d`` / ``val_bleu_4`` into the epoch's
logs, so the callbacks after it (checkpoint selection, plateau decay, early stopping,
log.csv, TensorBoard) see them like ``val_loss``.

``MetricSchedule`` is the learning-rate decay on a plateau of that metric and early stopping
on it, in one callback whose counters are part of the run state (``state.json``), so
``--resume`` continues the schedule exactly where it was.
"""

from __future__ import annotations

import logging
import math
import time

import keras

log = logging.getLogger(__name__)

#: train.select_on value -> (key in the epoch logs, "max" or "min").
SELECTION_METRICS = {
    "CIDEr-D": ("val_cider_d", "max"),
    "BLEU-4": ("val_bleu_4", "max"),
    "val_loss": ("val_loss", "min"),
}
# Columns DecodedValidation writes -> metric column of keras_captioning.metrics.
_DECODED_COLUMNS = {"val_cider_d": "CIDEr-D", "val_bleu_4": "BLEU-4"}


def monitor_for(select_on: str) -> tuple[str, str]:
    """(log key, mode) of a ``train.select_on`` value."""
    return SELECTION_METRICS[select_on]


def improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None or not math.isfinite(best):
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta


class DecodedValidation(keras.callbacks.Callback):
    """Greedy-decodes a split after every epoch and logs its CIDEr-D and BLEU-4.

    Args:
        dataset: ``make_eval_dataset`` batches (``image_id``, ``features``, ``references``).
        vocab: the run's ``Vocabulary`` (token ids -> words).
        max_length: decoding steps (``eval.max_length``).
        max_images: decode only the first N images of the split (None: all).
    """

    def __init__(self, dataset, vocab, max_length: int, max_images: int | None = None):
        super().__init__()
        self.dataset = dataset
        self.vocab = vocab
        self.max_length = int(max_length)
        self.max_images = max_images

    def decode(self) -> tuple[dict, dict]:
        """(references, hypotheses) ``{image_id: [caption]}`` for the split."""
        from keras_captioning.decoding import decode_captions, greedy_decode

        gts, res = {}, {}
        for batch in self.dataset:
            captions = decode_captions(greedy_decode(self.model, batch["features"], self.max_length), self.vocab)
            for image_id, refs, caption in zip(batch["image_id"].numpy(), batch["references"].numpy(), captions):
                key = image_id.decode("utf-8")
                gts[key] = [r.decode("utf-8") for r in refs if r]
                res[key] = [caption]
                if self.max_images and len(res) >= self.max_images:
                    return gts, res
        return gts, res

    def on_epoch_end(self, epoch, logs=None):
        from keras_captioning.metrics import score_all

        if logs is None:
            return
        started = time.perf_counter()
        gts, res = self.decode()
        # An empty caption (END first) scores 0 rather than stopping the run.
        res = {k: v if v[0].strip() else ["<empty>"] for k, v in res.items()}
        scores = score_all(gts, res, metrics=list(_DECODED_COLUMNS.values()))
        for key, column in _DECODED_COLUMNS.items():
            logs[key] = float(scores[column])
        log.info("epoch %d: decoded %d val images (greedy) in %.1f s: CIDEr-D %.1f, BLEU-4 %.1f",
                 epoch + 1, len(res), time.perf_counter() - started, 100 * logs["val_cider_d"],
                 100 * logs["val_bleu_4"])


class MetricSchedule(keras.callbacks.Callback):
    """Learning-rate decay on a plateau of ``monitor`` and early stopping on it.

    After ``lr_patience`` epochs without improvement the learning rate is multiplied by
    ``lr_factor`` (not below ``min_lr``); after ``stop_patience`` epochs without improvement
    training stops. Either patience may be None (off). ``state()`` / ``load_state()`` carry
    the counters across ``--resume``.
    """

    def __init__(self, monitor: str, mode: str, lr_factor: float = 0.5, lr_patience: int | None = None,
                 min_lr: float = 0.0, stop_patience: int | None = None):
        super().__init__()
        self.monitor = monitor
        self.mode = mode
        self.lr_factor = lr_factor
        self.lr_patience = lr_patience
        self.min_lr = min_lr
        self.stop_patience = stop_patience
        self.best = None
        self.wait = 0  # epochs since the last improvement
        self.lr_wait = 0  # epochs since the last improvement or decay
        self.stopped_epoch = None

    def state(self) -> dict:
        return {"best": self.best, "wait": self.wait, "lr_wait": self.lr_wait}

    def load_state(self, state: dict | None) -> None:
        state = state or {}
        self.best = state.get("best")
        self.wait = int(state.get("wait", 0))
        self.lr_wait = int(state.get("lr_wait", 0))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        value = logs.get(self.monitor)
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logs["learning_rate"] = lr
        if value is None:
            return
        if improved(float(value), self.best, self.mode):
            self.best, self.wait, self.lr_wait = float(value), 0, 0
            return
        self.wait += 1
        self.lr_wait += 1
        if self.lr_patience and self.lr_wait >= self.lr_patience and lr > self.min_lr:
            new_lr = max(lr * self.lr_factor, self.min_lr)
            self.model.optimizer.learning_rate = new_lr
            encoder = getattr(self.model, "encoder_optimizer", None)  # a fine-tuned CNN's own rate decays alike
            if encoder is not None:
                encoder.learning_rate = max(float(keras.ops.convert_to_numpy(encoder.learning_rate)) * self.lr_factor,
                                            self.min_lr)
            self.lr_wait = 0
            log.info("epoch %d: %s did not improve for %d epochs; learning rate %.3g -> %.3g",
                     epoch + 1, self.monitor, self.lr_patience, lr, new_lr)
        if self.stop_patience and self.wait >= self.stop_patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            log.info("epoch %d: %s did not improve for %d epochs (best %.4g); stopping early",
                     epoch + 1, self.monitor, self.wait, self.best)
