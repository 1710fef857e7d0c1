"""The training driver: policy -> features -> data -> model -> fit -> run directory.

A run directory holds everything needed to resume, evaluate and caption:

    run.json            package + run-format version, model type, backbone, features dir
    config.yaml         the resolved experiment config
    vocab.json          the vocabulary the model was trained with
    manifest.json       the feature manifest it trained on
    checkpoints/        last.keras (every epoch, with optimizer state), best.keras (val_loss)
    state.json          next epoch to run, best val_loss, optimizer step
    log.csv             one row per epoch (loss, accuracy, perplexity, val_*)
    tensorboard/        TensorBoard event files
    loss.png            the loss curves

Data order on ``--resume``: epoch ``e`` always shuffles with seed ``train.seed + e`` and the
pipeline is rebuilt from the resumed epoch, so a resumed run sees exactly the data order an
uninterrupted run would from that epoch on. A Ctrl-C mid-epoch saves the weights reached so
far and reruns that whole epoch on resume (a documented approximation: some batches of that
epoch are seen twice).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys

from keras_captioning import __version__
from keras_captioning.config import ExperimentConfig, from_dict, save_config
from keras_captioning.errors import CaptioningError

log = logging.getLogger(__name__)

RUN_FORMAT_VERSION = 1


def _shard_pattern(features_dir: str, split: str) -> str:
    return os.path.join(features_dir, f"{split}-*-of-*.tfrecord")


def check_run_dir(run_dir: str) -> dict:
    """Reads ``run.json`` and refuses run directories written by an incompatible version."""
    path = os.path.join(run_dir, "run.json")
    if not os.path.exists(path):
        raise CaptioningError(f"{run_dir}: not a run directory (no run.json); train one with "
                              "`python -m keras_captioning train`")
    try:
        with open(path, encoding="utf-8") as fh:
            info = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise CaptioningError(f"{path}: unreadable run info ({exc})") from None
    version = info.get("run_format")
    if version != RUN_FORMAT_VERSION:
        raise CaptioningError(
            f"{path}: run format {version!r} (package {info.get('package_version', '?')}) is not "
            f"the supported format {RUN_FORMAT_VERSION} (package {__version__}); retrain it, or "
            "use the package version that wrote it"
        )
    return info


def load_run_config(run_dir: str) -> ExperimentConfig:
    import yaml

    check_run_dir(run_dir)
    with open(os.path.join(run_dir, "config.yaml"), encoding="utf-8") as fh:
        return from_dict(yaml.safe_load(fh), os.path.join(run_dir, "config.yaml"))


def check_compatibility(cfg: ExperimentConfig, manifest: dict, vocab) -> None:
    """Stops before training when features, vocabulary and config do not belong together."""
    features_dir = cfg.features_dir
    if manifest.get("backbone") != cfg.features.backbone:
        raise CaptioningError(
            f"{features_dir}/manifest.json: features were extracted with backbone "
            f"'{manifest.get('backbone')}' but features.backbone is '{cfg.features.backbone}'; "
            "set features.out_dir to a new folder or features.backbone to match"
        )
    expected = manifest.get("vocab_fingerprint")
    if expected and expected != vocab.fingerprint():
        raise CaptioningError(
            f"{features_dir}/vocab.json: does not match the token ids in the shards (fingerprint "
            f"{vocab.fingerprint()[:12]} vs manifest {expected[:12]}); rerun features with --overwrite"
        )


def build_model(cfg: ExperimentConfig, vocab_size: int, grid_shape, special_ids: dict):
    """Builds the configured model; ``grid_shape`` is (regions, channels) from the manifest."""
    from keras_captioning.models import AttentionCaptioner, build_merge_captioner

    num_regions, feature_dim = int(grid_shape[0]), int(grid_shape[1])
    m = cfg.model
    if m.type == "merge":
        return build_merge_captioner(
            vocab_size=vocab_size, feature_dim=feature_dim, embedding_dim=m.embedding_dim,
            units=m.merge_units, dropout=m.merge_dropout, **special_ids,
        )
    return AttentionCaptioner(
        vocab_size=vocab_size, feature_dim=feature_dim, num_regions=num_regions,
        embedding_dim=m.embedding_dim, units=m.units, rnn=m.rnn,
        attention_units=m.attention_units, attention_vector=m.attention_vector,
        dropout=m.dropout, attention_reg=m.attention_reg, **special_ids,
    )


def _strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _epoch_datasets(cfg: ExperimentConfig, feature: str, first_epoch: int, steps: int, max_length: int):
    """One stream of ``steps`` batches per epoch, epoch ``e`` shuffled with seed+e.

    Every batch is padded to ``max_length`` (the longest stored caption, as the study padded to
    its longest caption): one shape means one traced graph, where per-batch lengths would retrace.
    """
    from keras_captioning.data.pipeline import make_train_dataset

    pattern = _shard_pattern(cfg.features_dir, "train")
    ds = None
    for epoch in range(first_epoch, cfg.train.epochs):
        part = make_train_dataset(
            pattern, cfg.train.batch_size, feature=feature, caption_mode=cfg.train.caption_mode,
            shuffle=True, seed=cfg.train.seed + epoch, shuffle_buffer=cfg.train.shuffle_buffer,
            max_length=max_length,
        ).take(steps)
        ds = part if ds is None else ds.concatenate(part)
    return ds


def train(cfg: ExperimentConfig, resume: bool = False, overwrite: bool = False) -> str:
    """Trains ``cfg``'s model and returns the run directory."""
    import keras

    from keras_captioning.data.pipeline import count_examples, make_train_dataset
    from keras_captioning.data.vocab import Vocabulary
    from keras_captioning.features.build import build_features
    from keras_captioning.training import callbacks as cb
    from keras_captioning.training.precision import set_policy

    run_dir = cfg.run_dir
    state = None
    if resume:
        info = check_run_dir(run_dir)
        if info.get("model_type") != cfg.model.type:
            raise CaptioningError(f"{run_dir}: holds a '{info.get('model_type')}' model, not "
                                  f"model.type='{cfg.model.type}'")
        state = cb.read_state(run_dir)
        if state is None or not os.path.exists(os.path.join(run_dir, "checkpoints", "last.keras")):
            raise CaptioningError(f"{run_dir}: no checkpoint to resume from; train without --resume")
    elif os.path.exists(os.path.join(run_dir, "run.json")):
        if not overwrite:
            raise CaptioningError(f"{run_dir}: a run is already there; pass --resume to continue it "
                                  "or --overwrite to start again")
        shutil.rmtree(run_dir)

    # The policy must be set before any layer is built.
    policy = set_policy(cfg.train.mixed_precision)

    manifest = build_features(cfg)
    vocab = Vocabulary.load(os.path.join(cfg.features_dir, "vocab.json"))
    check_compatibility(cfg, manifest, vocab)
    feature = "pooled" if cfg.model.type == "merge" else "grid"

    n_train = count_examples(manifest, "train", cfg.train.caption_mode)
    if n_train == 0:
        raise CaptioningError(f"{cfg.features_dir}: the train split has no captioned images")
    steps = cfg.train.steps_per_epoch or math.ceil(n_train / cfg.train.batch_size)
    first_epoch = int(state["next_epoch"]) if state else 0
    if first_epoch >= cfg.train.epochs:
        log.info("%s: already trained for %d epochs (train.epochs=%d); nothing to do",
                 run_dir, first_epoch, cfg.train.epochs)
        return run_dir

    os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    save_config(cfg, os.path.join(run_dir, "config.yaml"))
    vocab.save(os.path.join(run_dir, "vocab.json"))
    shutil.copyfile(os.path.join(cfg.features_dir, "manifest.json"), os.path.join(run_dir, "manifest.json"))
    cb.write_json_atomic(os.path.join(run_dir, "run.json"), {
        "run_format": RUN_FORMAT_VERSION, "package_version": __version__,
        "model_type": cfg.model.type, "backbone": cfg.features.backbone,
        "features_dir": cfg.features_dir, "policy": policy,
    })

    # Seeds the weight initialisation (and Python/NumPy) so a run is repeatable; the data
    # order is seeded separately, per epoch.
    keras.utils.set_random_seed(cfg.train.seed)
    strategy = _strategy(cfg.train.strategy)
    with strategy.scope():
        if state:
            import keras_captioning.models  # noqa: F401  (registers the classes load_model needs)

            model = keras.saving.load_model(os.path.join(run_dir, "checkpoints", "last.keras"))
            log.info("resumed %s at epoch %d (optimizer step %d)", run_dir, first_epoch,
                     int(model.optimizer.iterations.numpy()))
        else:
            model = build_model(cfg, len(vocab), manifest["grid_shape"], {
                "pad_id": vocab.pad_id, "start_id": vocab.start_id, "end_id": vocab.end_id})
            model.compile(
                optimizer=keras.optimizers.Adam(cfg.train.learning_rate, clipnorm=cfg.train.clipnorm),
                jit_compile=cfg.train.jit_compile,
            )

    max_length = int(manifest.get("longest_caption") or cfg.data.max_length or 0) or None
    train_ds = _epoch_datasets(cfg, feature, first_epoch, steps, max_length)
    val_ds, val_steps = None, None
    n_val = count_examples(manifest, "val", "all") if "val" in manifest.get("counts", {}) else 0
    if n_val:
        # Repeated with an explicit step count: Keras keeps one validation iterator for the
        # whole fit, and each epoch then validates on exactly one pass.
        val_steps = math.ceil(n_val / cfg.train.batch_size)
        val_ds = make_train_dataset(_shard_pattern(cfg.features_dir, "val"), cfg.train.batch_size,
                                    feature=feature, caption_mode="all", shuffle=False,
                                    max_length=max_length).repeat()

    nan_guard = cb.NaNGuard()
    best = state.get("best_val_loss") if state else None
    ckpt = cb.RunCheckpoint(run_dir, nan_guard, best=best if best is not None else math.inf)
    tracker = cb.EpochTracker(first_epoch)
    callbacks = [tracker, nan_guard, ckpt,
                 keras.callbacks.CSVLogger(os.path.join(run_dir, "log.csv"), append=bool(state)),
                 cb.ScalarSummaries(os.path.join(run_dir, "tensorboard"))]
    if cfg.train.terminate_on_nan:
        callbacks.append(keras.callbacks.TerminateOnNaN())
    if cfg.train.early_stopping_patience and val_ds is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=cfg.train.early_stopping_patience))

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
    finally:
        _draw_curves(run_dir)
    if nan_guard.triggered:
        raise CaptioningError(f"{run_dir}: training stopped on a non-finite loss; the last good "
                              "checkpoint is checkpoints/last.keras")
    return run_dir


def _draw_curves(run_dir: str) -> None:
    from keras_captioning.viz import plot_loss_curves

    csv_path = os.path.join(run_dir, "log.csv")
    if os.path.exists(csv_path):
        plot_loss_curves(csv_path, os.path.join(run_dir, "loss.png"))

