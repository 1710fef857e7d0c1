"""The SCST fine-tuning stage: a cross-entropy run's best.keras -> its own run directory.

``train(cfg)`` with ``train.objective=scst`` comes here. The run directory has the layout of
every run (``trainer.py``'s docstring), plus ``steps.csv`` (one row per step: loss, reward,
baseline, advantage, length, entropy) and ``run.json`` keys ``objective``, ``init_from`` and
``init_val_cider_d``. The stage:

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
import math
import os
import shutil
import sys

import keras

from keras_captioning.config import ExperimentConfig
from keras_captioning.errors import CaptioningError
from keras_captioning.run_directory import RunDirectory
from keras_captioning.training import callbacks as cb

log = logging.getLogger(__name__)

STEPS_FILE = "steps.csv"


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
    """Appends the step's ``step_*`` values to ``steps.csv`` and keeps them out of the epoch logs."""

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

    def on_epoch_end(self, epoch, logs=None):
        for key in [k for k in (logs or {}) if k.startswith("step_")]:
            del logs[key]


def _check_init_run(cfg: ExperimentConfig, vocab) -> str:
    """The init run's best.keras, after checking it belongs to these features and this model type."""
    init = cfg.train.init_from
    init_run = RunDirectory(init)
    info = init_run.info()
    if info.get("model_type") != cfg.model.type:
        raise CaptioningError(f"{init}: holds a '{info.get('model_type')}' model, not model.type="
                              f"'{cfg.model.type}'")
    if info.get("backbone") != cfg.features.backbone:
        raise CaptioningError(f"{init}: trained on '{info.get('backbone')}' features, not "
                              f"features.backbone='{cfg.features.backbone}'")
    init_vocab = init_run.vocab()
    if init_vocab.fingerprint() != vocab.fingerprint():
        raise CaptioningError(f"{init}/vocab.json: not the vocabulary of {cfg.features_dir} (the model's "
                              "token ids would not match the features' captions)")
    path = init_run.checkpoint("best")
    if not os.path.isfile(path):
        raise CaptioningError(f"{path}: not found; SCST starts from a cross-entropy run's best checkpoint")
    return path


def train_scst(cfg: ExperimentConfig, resume: bool = False, overwrite: bool = False) -> str:
    """Runs the SCST stage of ``cfg`` and returns its run directory."""
    from keras_captioning.data.pipeline import count_examples, make_eval_dataset
    from keras_captioning.data.vocab import Vocabulary
    from keras_captioning.features.build import build_features
    from keras_captioning.models.registry import model_type
    from keras_captioning.training import trainer as tr
    from keras_captioning.training.precision import set_policy
    from keras_captioning.training.scst import SCSTTrainer
    from keras_captioning.training.selection import DecodedValidation, MetricSchedule

    if cfg.train.strategy != "default":
        raise CaptioningError("train.objective=scst runs on one device: set train.strategy=default")
    run_dir = cfg.run_dir
    # Checked before anything below can delete run_dir (--overwrite, a dead first attempt).
    if os.path.abspath(cfg.train.init_from) == os.path.abspath(run_dir):
        raise CaptioningError(f"train.run_dir={run_dir} is the init run itself; SCST writes its own "
                              "run directory (set train.run_dir, e.g. runs/<name>_scst)")
    info = tr.open_run_dir(run_dir, resume, overwrite)
    resume = info is not None
    if resume and info.get("objective") != "scst":
        raise CaptioningError(f"{run_dir}: not an SCST run; resume it without train.objective=scst")

    policy = set_policy(cfg.train.mixed_precision)
    manifest = build_features(cfg)
    vocab = Vocabulary.load(os.path.join(cfg.features_dir, "vocab.json"))
    tr.check_compatibility(cfg, manifest, vocab)
    init_path = _check_init_run(cfg, vocab)
    feature = model_type(cfg.model.type).feature
    train_pattern = tr._shard_pattern(cfg.features_dir, "train")
    n_images = count_examples(manifest, "train", "random")
    if n_images == 0:
        raise CaptioningError(f"{cfg.features_dir}: the train split has no captioned images")
    steps = cfg.train.steps_per_epoch or math.ceil(n_images / cfg.train.batch_size)

    reward = build_reward(train_pattern, vocab, reward_end=cfg.train.scst_reward_end)
    log.info("scst reward: CIDEr-D%s over %d training images' references (document frequencies "
             "computed once)", " with END as a word" if cfg.train.scst_reward_end else "", reward.num_images)

    keras.utils.set_random_seed(cfg.train.seed)
    state = None
    if resume:
        captioner, state = cb.load_resume_point(run_dir)
        log.info("resumed %s at epoch %d (optimizer step %d)", run_dir, int(state["next_epoch"]),
                 int(captioner.optimizer.iterations.numpy()))
    else:
        captioner = cb.read_checkpoint(init_path, compile=False)
        optimizer = keras.optimizers.Adam(cfg.train.learning_rate, clipnorm=cfg.train.clipnorm)
        captioner.compile(optimizer=optimizer)
    model = SCSTTrainer(captioner, reward, samples=cfg.train.scst_samples, baseline=cfg.train.scst_baseline,
                        max_length=cfg.train.scst_max_length, seed=cfg.train.seed,
                        dropout=cfg.train.scst_dropout)
    # One optimizer for both: the wrapper applies it, the captioner's checkpoints carry it.
    model.compile(optimizer=captioner.optimizer, jit_compile=False)  # the reward is a numpy_function

    val_pattern = tr._shard_pattern(cfg.features_dir, "val")
    has_val = "val" in manifest.get("counts", {}) and count_examples(manifest, "val", "random") > 0
    if not has_val:
        raise CaptioningError(f"{cfg.features_dir}: SCST selects and stops on the val split's CIDEr-D; "
                              "there is no val split")
    val_ds = make_eval_dataset(val_pattern, cfg.eval.batch_size, feature=feature)
    validation = DecodedValidation(val_ds, vocab, max_length=cfg.eval.max_length,
                                   max_images=cfg.train.val_decode_images)
    validation.set_model(model)

    if not resume:
        logs = {}
        validation.on_epoch_end(-1, logs)  # the init model's score: the best to beat
        init_score = logs["val_cider_d"]
        run = RunDirectory(run_dir)
        os.makedirs(run.checkpoints_dir, exist_ok=True)
        shutil.copyfile(init_path, run.checkpoint("best"))
        run.create(cfg, vocab, cfg.features_dir, policy=policy, objective="scst",
                   init_from=cfg.train.init_from, init_val_cider_d=init_score)
        state = {"best": init_score, "schedule": {"best": init_score}, "next_epoch": 0}
        log.info("scst: init model %s scores val CIDEr-D %.1f (greedy); best.keras until an epoch beats it",
                 init_path, 100 * init_score)

    first_epoch = int(state.get("next_epoch", 0))
    if first_epoch >= cfg.train.epochs:
        log.info("%s: already trained for %d epochs; nothing to do", run_dir, first_epoch)
        return run_dir
    cb.truncate_log(os.path.join(run_dir, "log.csv"), first_epoch)

    ds = None
    for epoch in range(first_epoch, cfg.train.epochs):
        part = make_image_dataset(train_pattern, cfg.train.batch_size, feature=feature,
                                  seed=cfg.train.seed + epoch,  # the trainer's per-epoch data order
                                  shuffle_buffer=min(cfg.train.shuffle_buffer, 2048))
        part = part.repeat().take(steps)
        ds = part if ds is None else ds.concatenate(part)

    monitor, mode = "val_cider_d", "max"
    patience = cfg.train.early_stopping_patience or 1
    schedule = MetricSchedule(monitor, mode, lr_factor=cfg.train.lr_decay_factor,
                              lr_patience=(cfg.train.lr_patience if cfg.train.lr_schedule == "plateau"
                                           else None),
                              min_lr=cfg.train.min_learning_rate, stop_patience=patience)
    schedule.load_state(state.get("schedule"))
    nan_guard = cb.NaNGuard()
    ckpt = cb.RunCheckpoint(run_dir, nan_guard, best=state.get("best"), monitor=monitor, mode=mode,
                            schedule=schedule)
    tracker = cb.EpochTracker(first_epoch)
    callbacks = [tracker, nan_guard, StepLog(os.path.join(run_dir, STEPS_FILE), first_epoch), validation,
                 schedule, ckpt,
                 keras.callbacks.CSVLogger(os.path.join(run_dir, "log.csv"), append=first_epoch > 0),
                 cb.ScalarSummaries(os.path.join(run_dir, "tensorboard"))]
    if cfg.train.terminate_on_nan:
        callbacks.append(keras.callbacks.TerminateOnNaN())

    log.info("scst %s: %d images, %d steps/epoch x %d images x K=%d samples (%s baseline, <= %d steps), "
             "epochs %d..%d", cfg.model.type, n_images, steps, cfg.train.batch_size, cfg.train.scst_samples,
             cfg.train.scst_baseline, cfg.train.scst_max_length, first_epoch + 1, cfg.train.epochs)
    try:
        model.fit(ds, epochs=cfg.train.epochs, initial_epoch=first_epoch, steps_per_epoch=steps,
                  shuffle=False,  # make_image_dataset shuffles, seeded per epoch
                  callbacks=callbacks, verbose="auto" if sys.stdout.isatty() else 2)
    except KeyboardInterrupt:
        ckpt.save_interrupted(tracker.epoch)
        log.warning("interrupted: checkpoint saved in %s; continue with --resume", run_dir)
        raise
    finally:
        tr._draw_curves(run_dir)
    if nan_guard.triggered:
        raise CaptioningError(f"{run_dir}: training stopped on a non-finite loss; the last good "
                              "checkpoint is checkpoints/last.keras")
    return run_dir
