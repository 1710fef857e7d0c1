"""The training driver: policy -> features -> data -> model -> fit -> run directory.

The run directory (layout, state files, what makes it self-contained) is owned by
``keras_captioning.run_directory.RunDirectory``; the features by ``features.fingerprint``.

Data order on ``--resume``: epoch ``e`` always shuffles with seed ``train.seed + e`` and the
pipeline is rebuilt from the resumed epoch, so a resumed run sees exactly the data order an
uninterrupted run would from that epoch on. A Ctrl-C mid-epoch saves the weights reached so
far and reruns that whole epoch on resume (a documented approximation: some batches of that
epoch are seen twice).
"""

from __future__ import annotations

import logging
import math
import os
import sys

from keras_captioning.config import ExperimentConfig
from keras_captioning.errors import CaptioningError
from keras_captioning.run_directory import RunDirectory

log = logging.getLogger(__name__)



def _shard_pattern(features_dir: str, split: str) -> str:
    return os.path.join(features_dir, f"{split}-*-of-*.tfrecord")


def check_compatibility(cfg: ExperimentConfig, manifest: dict, vocab) -> None:
    """Stops before training when the vocabulary does not match the shards' token ids.

    Whether the shards belong to the config is ``features.fingerprint``'s call (``build_features``).
    """
    features_dir = cfg.features_dir
    expected = manifest.get("vocab_fingerprint")
    if expected and expected != vocab.fingerprint():
        raise CaptioningError(
            f"{features_dir}/vocab.json: does not match the token ids in the shards (fingerprint "
            f"{vocab.fingerprint()[:12]} vs manifest {expected[:12]}); rerun features with --overwrite"
        )


def _strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _feature_cache(cfg: ExperimentConfig, manifest: dict, feature: str):
    """The train split's ``FeatureCache`` when ``train.cache_features`` asks for one, else None."""
    from keras_captioning.data.feature_cache import CACHE_LIMIT_BYTES, FeatureCache, cached_bytes

    setting = cfg.train.cache_features
    if setting == "off" or cfg.train.caption_mode != "all" or cfg.train.strategy != "default":
        return None  # "on" with another mode or strategy is refused when the config loads
    size = cached_bytes(manifest, "train", feature)
    if setting == "auto" and size > CACHE_LIMIT_BYTES:
        log.info("train features take %.1f GiB > %.0f GiB: read from the shards each epoch "
                 "(train.cache_features=on holds them in memory anyway)", size / 2**30, CACHE_LIMIT_BYTES / 2**30)
        return None
    return FeatureCache.from_shards(_shard_pattern(cfg.features_dir, "train"), feature)


def _epoch_datasets(cfg: ExperimentConfig, feature: str, first_epoch: int, steps: int, max_length: int,
                    manifest: dict):
    """One stream of ``steps`` batches per epoch, epoch ``e`` shuffled with seed+e.

    Without ``train.length_buckets`` every batch is padded to ``max_length`` (the longest stored
    caption, as the study padded to its longest caption): one shape means one traced graph. With
    buckets, each batch is padded to the smallest bucket width holding it: a few traced widths.
    """
    from keras_captioning.data.pipeline import make_train_dataset

    pattern = _shard_pattern(cfg.features_dir, "train")
    cache = _feature_cache(cfg, manifest, feature)  # one for all epochs
    ds = None
    for epoch in range(first_epoch, cfg.train.epochs):
        part = make_train_dataset(
            pattern, cfg.train.batch_size, feature=feature, caption_mode=cfg.train.caption_mode,
            shuffle=True, seed=cfg.train.seed + epoch, shuffle_buffer=cfg.train.shuffle_buffer,
            max_length=max_length, length_buckets=cfg.train.length_buckets, batch_layout=cfg.train.batch_layout,
            cache=cache,
        ).take(steps)
        ds = part if ds is None else ds.concatenate(part)
    return ds


def open_run_dir(run_dir: str, resume: bool, overwrite: bool) -> dict | None:
    """The one rule for an existing run folder, for every training stage.

    Returns its ``run.json`` info when the run is to be resumed, else None (the folder is then
    absent or removed). A run that died before its first checkpoint holds nothing to keep or
    continue: ``train`` and ``train --resume`` both start it again. A finished or interrupted
    run is continued only with ``resume`` and replaced only with ``overwrite``.
    """
    run = RunDirectory(run_dir)
    if run.exists() and not run.has_checkpoint():
        log.warning("%s: the run stopped before its first checkpoint; starting it again from epoch 1", run_dir)
        run.remove()
        return None
    if resume:
        return run.info()
    if run.exists():
        if not overwrite:
            raise CaptioningError(f"{run_dir}: a run is already there; pass --resume to continue it "
                                  "or --overwrite to start again")
        run.remove()
    return None


def train(cfg: ExperimentConfig, resume: bool = False, overwrite: bool = False) -> str:
    """Trains ``cfg``'s model and returns the run directory."""
    if cfg.train.objective == "scst":  # fine-tunes train.init_from's best.keras: training/scst_stage.py
        from keras_captioning.training.scst_stage import train_scst

        return train_scst(cfg, resume=resume, overwrite=overwrite)
    # First, before any TensorFlow op: MultiWorkerMirroredStrategy configures the runtime.
    strategy = _strategy(cfg.train.strategy)
    if cfg.train.strategy == "multiworker":
        _check_features_ready(cfg)
    if strategy.extended.should_checkpoint:
        info = open_run_dir(cfg.run_dir, resume, overwrite)
        return _train(cfg, strategy, cfg.run_dir, info)
    # A worker other than the chief (MultiWorkerMirroredStrategy) runs the same steps and
    # callbacks, which take part in collective ops, but writes into a folder of its own that
    # is removed at the end; it resumes from the chief's run directory (a shared filesystem).
    import shutil
    import tempfile

    info = RunDirectory(cfg.run_dir).info() if resume else None
    scratch = tempfile.mkdtemp(prefix="keras_captioning-worker-")
    try:
        _train(cfg, strategy, scratch, info, resume_from=cfg.run_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return cfg.run_dir


def _check_features_ready(cfg: ExperimentConfig) -> None:
    """Multi-worker training reads features; it never extracts them (workers would race)."""
    from keras_captioning.features.fingerprint import decide

    decision, changed = decide(cfg)
    if decision != "reuse":
        why = "; ".join(changed) if changed else "missing or incomplete"
        raise CaptioningError(
            f"{cfg.features_dir}: train.strategy=multiworker needs finished features on every worker "
            f"({why}); run `python -m keras_captioning features --config ...` there first")


def _train(cfg: ExperimentConfig, strategy, run_dir: str, info: dict | None, resume_from: str | None = None) -> str:
    """The training run itself, written into ``run_dir`` (resumed from ``resume_from`` or it)."""
    import keras

    from keras_captioning.data.pipeline import count_examples, make_eval_dataset, make_train_dataset
    from keras_captioning.data.vocab import Vocabulary
    from keras_captioning.features.build import build_features
    from keras_captioning.models.registry import build_model, model_type
    from keras_captioning.training import callbacks as cb
    from keras_captioning.training.precision import set_policy

    state = None
    resume = info is not None
    resume_from = resume_from or run_dir
    if resume and info.get("model_type") != cfg.model.type:
        raise CaptioningError(f"{resume_from}: holds a '{info.get('model_type')}' model, not "
                              f"model.type='{cfg.model.type}'")

    # The policy must be set before any layer is built.
    policy = set_policy(cfg.train.mixed_precision)

    manifest = build_features(cfg)
    vocab = Vocabulary.load(os.path.join(cfg.features_dir, "vocab.json"))
    check_compatibility(cfg, manifest, vocab)
    feature = model_type(cfg.model.type).feature

    n_train = count_examples(manifest, "train", cfg.train.caption_mode)
    if n_train == 0:
        raise CaptioningError(f"{cfg.features_dir}: the train split has no captioned images")
    steps = cfg.train.steps_per_epoch or math.ceil(n_train / cfg.train.batch_size)
    RunDirectory(run_dir).create(cfg, vocab, cfg.features_dir, policy=policy)

    # Seeds the weight initialisation (and Python/NumPy) so a run is repeatable; the data
    # order is seeded separately, per epoch.
    keras.utils.set_random_seed(cfg.train.seed)
    with strategy.scope():
        if resume:
            model, state = cb.load_resume_point(resume_from)  # last.keras, else the one before
            log.info("resumed %s at epoch %d (optimizer step %d)", resume_from, int(state["next_epoch"]),
                     int(model.optimizer.iterations.numpy()))
        else:
            model = build_model(cfg, len(vocab), manifest["grid_shape"], {
                "pad_id": vocab.pad_id, "start_id": vocab.start_id, "end_id": vocab.end_id})
            model.compile(
                optimizer=keras.optimizers.Adam(cfg.train.learning_rate, clipnorm=cfg.train.clipnorm),
                jit_compile=cfg.train.jit_compile,
            )
        if not model.optimizer.built:  # in the scope, before fit (CaptionModel._maybe_symbolic_build)
            model.optimizer.build(model.trainable_variables)

    first_epoch = int(state["next_epoch"]) if state else 0
    if first_epoch >= cfg.train.epochs:
        log.info("%s: already trained for %d epochs (train.epochs=%d); nothing to do",
                 run_dir, first_epoch, cfg.train.epochs)
        return run_dir
    if state:
        cb.truncate_log(os.path.join(run_dir, "log.csv"), first_epoch)  # epochs about to be rerun

    max_length = int(manifest.get("longest_caption") or cfg.data.max_length or 0) or None
    train_ds = _epoch_datasets(cfg, feature, first_epoch, steps, max_length, manifest)
    val_ds, val_steps = None, None
    n_val = count_examples(manifest, "val", "all") if "val" in manifest.get("counts", {}) else 0
    if n_val:
        # Repeated with an explicit step count: Keras keeps one validation iterator for the
        # whole fit, and each epoch then validates on exactly one pass.
        val_steps = math.ceil(n_val / cfg.train.batch_size)
        val_ds = make_train_dataset(_shard_pattern(cfg.features_dir, "val"), cfg.train.batch_size,
                                    feature=feature, caption_mode="all", shuffle=False,
                                    max_length=max_length).repeat()

    from keras_captioning.training.selection import DecodedValidation, MetricSchedule, monitor_for

    monitor, mode = monitor_for(cfg.train.select_on)
    selection = []
    if val_ds is None:
        log.warning("%s: no val split; best.keras is not selected (last.keras is every epoch's)",
                    cfg.features_dir)
    elif monitor != "val_loss":
        selection.append(DecodedValidation(
            make_eval_dataset(_shard_pattern(cfg.features_dir, "val"), cfg.eval.batch_size, feature=feature),
            vocab, max_length=cfg.eval.max_length, max_images=cfg.train.val_decode_images))
    schedule = MetricSchedule(
        monitor, mode, lr_factor=cfg.train.lr_decay_factor,
        lr_patience=cfg.train.lr_patience if cfg.train.lr_schedule == "plateau" else None,
        min_lr=cfg.train.min_learning_rate,
        stop_patience=cfg.train.early_stopping_patience if val_ds is not None else None)
    schedule.load_state((state or {}).get("schedule"))
    nan_guard = cb.NaNGuard()
    ckpt = cb.RunCheckpoint(run_dir, nan_guard, best=(state or {}).get("best"), monitor=monitor, mode=mode,
                            schedule=schedule, best_val_loss=(state or {}).get("best_val_loss"))
    tracker = cb.EpochTracker(first_epoch)
    # Order matters: the decoded scores and the schedule write into the epoch's logs before
    # the checkpoint, log.csv and TensorBoard read them.
    callbacks = [tracker, nan_guard, *selection, schedule, ckpt,
                 keras.callbacks.CSVLogger(os.path.join(run_dir, "log.csv"), append=bool(state)),
                 cb.ScalarSummaries(os.path.join(run_dir, "tensorboard"))]
    if cfg.train.terminate_on_nan:
        callbacks.append(keras.callbacks.TerminateOnNaN())

    log.info("training %s: %d examples, %d steps/epoch, epochs %d..%d, policy %s, strategy %s",
             cfg.model.type, n_train, steps, first_epoch + 1, cfg.train.epochs, policy,
             cfg.train.strategy)
    try:
        model.fit(train_ds, validation_data=val_ds, validation_steps=val_steps, epochs=cfg.train.epochs,
                  shuffle=False,  # the pipeline shuffles, seeded per epoch
                  initial_epoch=first_epoch, steps_per_epoch=steps, callbacks=callbacks,
                  verbose="auto" if sys.stdout.isatty() else 2)  # no progress bars in log files
    except KeyboardInterrupt:
        ckpt.save_interrupted(tracker.epoch)
        log.warning("interrupted: checkpoint saved in %s; continue with --resume", run_dir)
        raise
    except Exception as err:
        raise _shard_read_error(err, cfg.features_dir, run_dir) from None
    finally:
        _draw_curves(run_dir)
    if nan_guard.triggered:
        raise CaptioningError(f"{run_dir}: training stopped on a non-finite loss; the last good "
                              "checkpoint is checkpoints/last.keras")
    return run_dir


def _shard_read_error(err: Exception, features_dir: str, run_dir: str) -> Exception:
    """``err`` as a CaptioningError naming the damaged shard when it is a read error."""
    import glob

    from keras_captioning.data.shards import shard_read_error

    return shard_read_error(err, sorted(glob.glob(_shard_pattern(features_dir, "*"))),
                            "extract the features again (features --overwrite), then train with "
                            f"--resume (checkpoints in {run_dir} are kept)")


def _draw_curves(run_dir: str) -> None:
    from keras_captioning.viz import plot_loss_curves

    csv_path = os.path.join(run_dir, "log.csv")
    if os.path.exists(csv_path):
        plot_loss_curves(csv_path, os.path.join(run_dir, "loss.png"))

