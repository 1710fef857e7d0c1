"""The SCST fine-tuning stage: a cross-entropy run's best.keras -> its own run directory.

``train(cfg)`` with ``train.objective=scst`` runs the loop (``trainer.py``) with ``SCSTStage``.
The run directory has the layout of every run (``run_directory.py``), plus ``steps.csv`` (one
row per step: loss, reward, baseline, advantage, length, entropy) and ``run.json`` keys
``objective``, ``init_from`` and ``init_val_cider_d``. The stage:

* checks the init run (``train.init_from``: same model type, backbone and vocabulary as the
  features) and starts from its ``checkpoints/best.keras`` with a fresh Adam
  (``train.learning_rate``; SCST wants a small one, e.g. 5e-5);
* builds the reward once: every training image's references, tokenized, with their n-gram
  vectors and the training split's document frequencies (``CiderDReward``);
* trains on image-major batches (``make_image_dataset``: one row per image, epoch ``e``
  shuffled with seed ``train.seed + e``, as the cross-entropy trainer's data order);
* scores the greedy-decoded val split before the first step: that CIDEr-D is the best to
  beat, and the init weights are ``best.keras`` until an epoch beats them; every epoch then
  decodes the val split (``DecodedValidation``), ``RunCheckpoint`` keeps the best, and
  ``MetricSchedule`` stops the stage after ``train.early_stopping_patience`` (default 1)
  epochs without a new best - a falling val CIDEr-D ends the stage, its best is kept.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil

import keras

from keras_captioning.errors import CaptioningError
from keras_captioning.training import callbacks as cb
from keras_captioning.training.stage import Stage, check_init_stage, init_checkpoint, start_from_init

log = logging.getLogger(__name__)


def make_image_dataset(shard_pattern, batch_size: int, feature: str = "grid", shuffle: bool = True,
                       seed: int = 0, shuffle_buffer: int = 2048):
    """Batches of ``{"image_id": string (B,), "features": float32 (B, ...)}``, one row per image.

    Images whose references are all empty are left out (they cannot be rewarded).
    """
    import tensorflow as tf

    from keras_captioning.data.pipeline import make_eval_dataset

    ds = make_eval_dataset(shard_pattern, batch_size, feature=feature).unbatch()
    ds = ds.filter(lambda d: tf.reduce_any(tf.strings.length(d["references"]) > 0))
    ds = ds.map(lambda d: {"image_id": d["image_id"], "features": d["features"]})
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def collect_references(shard_pattern) -> dict:
    """``{image_id: [reference, ...]}`` of a split (empty strings dropped; images without any left out)."""
    from keras_captioning.data.pipeline import make_eval_dataset

    references = {}
    for batch in make_eval_dataset(shard_pattern, 256, feature="pooled"):
        for image_id, refs in zip(batch["image_id"].numpy(), batch["references"].numpy()):
            texts = [r.decode("utf-8") for r in refs if r]
            if texts:
                references[image_id.decode("utf-8")] = texts
    return references


REWARD_END_TOKEN = "<end-of-caption>"  # the reward's END word (train.scst_reward_end)


def build_reward(shard_pattern, vocab, reward_end: bool = False):
    """The CIDEr-D reward over the split's references (df computed here, once).

    ``reward_end``: the END token counts as a word of every n-gram set (``CiderDReward``'s
    ``end_token``).
    """
    from keras_captioning.metrics.cider_reward import CiderDReward

    words = [vocab.decode([i]) for i in range(len(vocab))]  # "" for PAD/START/END
    return CiderDReward(collect_references(shard_pattern), words=words, end_id=vocab.end_id,
                        end_token=REWARD_END_TOKEN if reward_end else None)


class StepLog(keras.callbacks.Callback):
    """Appends the step's ``step_*`` values to ``steps.csv`` (``EpochEnd`` keeps them out of the epoch logs)."""

    def __init__(self, path: str, first_epoch: int = 0):
        super().__init__()
        self.path = path
        self.epoch = first_epoch
        cb.truncate_log(path, first_epoch)  # a resumed stage reruns epochs >= first_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        from keras_captioning.training.scst import LOGGED

        logs = logs or {}
        new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(["epoch", "step", *LOGGED])
            writer.writerow([self.epoch, batch, *(f"{float(logs.get(f'step_{n}', float('nan'))):.6g}"
                                                  for n in LOGGED)])


class SCSTStage(Stage):
    """Self-critical sequence training from ``train.init_from``'s best checkpoint."""

    objective = "scst"

    def check(self) -> None:
        check_init_stage(self.cfg, "SCST", "scst")

    def prepare(self, ctx) -> None:
        from keras_captioning.data.pipeline import count_examples

        cfg = self.cfg
        self.init_path = init_checkpoint(cfg, ctx.vocab, "SCST")
        if not ("val" in ctx.manifest.get("counts", {}) and count_examples(ctx.manifest, "val", "random") > 0):
            raise CaptioningError(f"{ctx.features.path}: SCST selects and stops on the val split's CIDEr-D; "
                                  "there is no val split")
        if self.num_examples(ctx) == 0:
            return  # the loop says so
        self.reward = build_reward(ctx.features.shard_pattern("train"), ctx.vocab, reward_end=cfg.train.scst_reward_end)
        log.info("scst reward: CIDEr-D%s over %d training images' references (document frequencies "
                 "computed once)", " with END as a word" if cfg.train.scst_reward_end else "", self.reward.num_images)

    def num_examples(self, ctx) -> int:
        from keras_captioning.data.pipeline import count_examples

        return count_examples(ctx.manifest, "train", "random")

    def build_model(self, ctx):
        captioner = cb.read_checkpoint(self.init_path, compile=False)
        captioner.compile(optimizer=keras.optimizers.Adam(self.cfg.train.learning_rate,
                                                          clipnorm=self.cfg.train.clipnorm))
        return captioner

    def fit_model(self, ctx, model):
        from keras_captioning.training.scst import SCSTTrainer

        train = self.cfg.train
        trainer = SCSTTrainer(model, self.reward, samples=train.scst_samples, baseline=train.scst_baseline,
                              max_length=train.scst_max_length, seed=train.seed, dropout=train.scst_dropout)
        # One optimizer for both: the wrapper applies it, the captioner's checkpoints carry it.
        trainer.compile(optimizer=model.optimizer, jit_compile=False)  # the reward is a numpy_function
        return trainer

    def decoded_validation(self, ctx):
        from keras_captioning.data.pipeline import make_eval_dataset
        from keras_captioning.training.selection import DecodedValidation

        val_ds = make_eval_dataset(ctx.features.shard_pattern("val"), self.cfg.eval.batch_size, feature=ctx.feature)
        return DecodedValidation(val_ds, ctx.vocab, max_length=self.cfg.eval.max_length,
                                 max_images=self.cfg.train.val_decode_images)

    def start(self, ctx, fit_model, validation):
        """Scores the init model (the best to beat) and makes it the run's best.keras."""
        return start_from_init(ctx, fit_model, validation, self.init_path,
                               lambda path: shutil.copyfile(self.init_path, path), "scst")

    def epoch_dataset(self, ctx, epoch: int, steps: int):
        part = make_image_dataset(ctx.features.shard_pattern("train"), self.cfg.train.batch_size, feature=ctx.feature,
                                  seed=self.cfg.train.seed + epoch,  # the trainer's per-epoch data order
                                  shuffle_buffer=min(self.cfg.train.shuffle_buffer, 2048))
        return part.repeat().take(steps)

    def selection(self, ctx):
        return "val_cider_d", "max", self.cfg.train.early_stopping_patience or 1

    def callbacks(self, ctx, first_epoch: int) -> list:
        return [StepLog(ctx.run.steps_csv, first_epoch)]

    def describe(self, ctx, steps: int, first_epoch: int) -> str:
        train = self.cfg.train
        return (f"scst {self.cfg.model.type}: {self.num_examples(ctx)} images, {steps} steps/epoch x "
                f"{train.batch_size} images x K={train.scst_samples} samples ({train.scst_baseline} baseline, "
                f"<= {train.scst_max_length} steps), epochs {first_epoch + 1}..{train.epochs}")
