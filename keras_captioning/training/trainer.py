"""The one training loop: run folder -> policy -> features -> stage -> fit -> checkpoints.

Every stage (``stage.py``: cross-entropy, SCST, ...) runs through ``train``. The loop owns
the run directory (``RunDirectory``: every file name in it), the precision policy, seeding,
feature currency (``FeatureFolder``), the per-epoch datasets, ``fit``, Ctrl-C, the NaN guard,
the checkpoints, the schedule and the curves; the stage says how to build the model, the
data and its extra callbacks.

Data order on ``--resume``: epoch ``e`` always shuffles with seed ``train.seed + e`` and the
pipeline is rebuilt from the resumed epoch, so a resumed run sees exactly the data order an
uninterrupted run would from that epoch on. A Ctrl-C mid-epoch saves the weights reached so
far and reruns that whole epoch on resume (a documented approximation: some batches of that
epoch are seen twice).
"""

from __future__ import annotations

import logging
import sys

from keras_captioning.config import ExperimentConfig
from keras_captioning.errors import CaptioningError
from keras_captioning.run_directory import RunDirectory

log = logging.getLogger(__name__)


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


def stage_for(cfg: ExperimentConfig):
    """The ``Stage`` of ``train.objective``."""
    if cfg.train.objective == "scst":  # fine-tunes train.init_from's best.keras
        from keras_captioning.training.scst_stage import SCSTStage

        return SCSTStage(cfg)
    if cfg.train.objective == "finetune":  # trains train.init_from's best.keras with its CNN, from images
        from keras_captioning.training.finetune_stage import FineTuneStage

        return FineTuneStage(cfg)
    from keras_captioning.training.cross_entropy_stage import CrossEntropyStage

    return CrossEntropyStage(cfg)


def train(cfg: ExperimentConfig, resume: bool = False, overwrite: bool = False, stage_class=None) -> str:
    """Trains ``cfg``'s model and returns the run directory.

    ``stage_class`` (a ``Stage`` subclass) replaces the stage ``train.objective`` names. With
    ``train.seeds`` it trains one run per seed (``run_configs.seed_configs``: ``<run_dir>/seed-<n>``)
    and returns ``run_dir``, the folder holding them.
    """
    from keras_captioning.training.run_configs import seed_configs

    if cfg.train.seeds:
        for one in seed_configs(cfg):
            log.info("seed %d of train.seeds %s: %s", one.train.seed, cfg.train.seeds, one.run_dir)
            train(one, resume=resume, overwrite=overwrite, stage_class=stage_class)
        return cfg.run_dir
    stage = stage_class(cfg) if stage_class is not None else stage_for(cfg)
    stage.check()
    # First, before any TensorFlow op: MultiWorkerMirroredStrategy configures the runtime.
    from keras_captioning.training.strategy import make_strategy

    strategy = make_strategy(cfg.train.strategy)
    if cfg.train.strategy == "multiworker":
        _check_features_ready(cfg)
    if strategy.extended.should_checkpoint:
        info = open_run_dir(cfg.run_dir, resume, overwrite)
        return _train(stage, strategy, cfg.run_dir, info)
    # A worker other than the chief (MultiWorkerMirroredStrategy) runs the same steps and
    # callbacks, which take part in collective ops, but writes into a folder of its own that
    # is removed at the end; it resumes from the chief's run directory (a shared filesystem).
    import shutil
    import tempfile

    info = RunDirectory(cfg.run_dir).info() if resume else None
    scratch = tempfile.mkdtemp(prefix="keras_captioning-worker-")
    try:
        _train(stage, strategy, scratch, info, resume_from=cfg.run_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return cfg.run_dir


def _check_features_ready(cfg: ExperimentConfig) -> None:
    """Multi-worker training reads features; it never extracts them (workers would race)."""
    from keras_captioning.features.feature_folder import FeatureFolder

    decision, changed = FeatureFolder(cfg.features_dir).decide(cfg)
    if decision != "reuse":
        why = "; ".join(changed) if changed else "missing or incomplete"
        raise CaptioningError(
            f"{cfg.features_dir}: train.strategy=multiworker needs finished features on every worker "
            f"({why}); run `python -m keras_captioning features --config ...` there first")


def _train(stage, strategy, run_dir: str, info: dict | None, resume_from: str | None = None) -> str:
    """The training run itself, written into ``run_dir`` (resumed from ``resume_from`` or it)."""
    import keras

    from keras_captioning.features.build import build_features
    from keras_captioning.features.feature_folder import FeatureFolder
    from keras_captioning.models.registry import model_type
    from keras_captioning.training import callbacks as cb
    from keras_captioning.training.epoch_end import EpochEnd
    from keras_captioning.training.precision import set_policy
    from keras_captioning.training.run_context import RunContext
    from keras_captioning.training.selection import MetricSchedule

    cfg = stage.cfg
    resume = info is not None
    resume_from = resume_from or run_dir
    run = RunDirectory(run_dir)
    allowed = []
    if resume:
        stage.check_resume(info, resume_from)
        allowed = _check_resumed_config(cfg, RunDirectory(resume_from))

    # The policy must be set before any layer is built.
    policy = set_policy(cfg.train.mixed_precision)

    manifest = build_features(cfg)
    features = FeatureFolder(cfg.features_dir)
    vocab = features.vocab()
    features.check_vocab(manifest, vocab)
    ctx = RunContext(cfg=cfg, run=run, resume_from=RunDirectory(resume_from), features=features,
                     manifest=manifest, vocab=vocab, feature=model_type(cfg.model.type).feature, policy=policy)
    stage.prepare(ctx)
    steps = stage.steps_per_epoch(ctx)

    # Seeds the weight initialisation (and Python/NumPy) so a run is repeatable; the data
    # order is seeded separately, per epoch.
    keras.utils.set_random_seed(cfg.train.seed)
    state = None
    with strategy.scope():
        if resume:
            model, state = cb.load_resume_point(resume_from)  # last.keras, else the one before
            log.info("resumed %s at epoch %d (optimizer step %d)", resume_from, int(state["next_epoch"]),
                     int(model.optimizer.iterations.numpy()))
        else:
            model = stage.build_model(ctx)
        fit_model = stage.fit_model(ctx, model)
    validation = stage.decoded_validation(ctx)
    if not resume:
        state, extra = stage.start(ctx, fit_model, validation)
        if stage.objective:  # what check_resume reads back
            extra = {"objective": stage.objective, **extra}
        run.create(cfg, vocab, cfg.features_dir, policy=policy, **extra)
    elif allowed and run.exists():  # config.yaml follows the run; run.json keeps what changed, and when
        info = run.info()
        info.setdefault("resumed", []).append({"at_epoch": int(state["next_epoch"]), "changed": allowed})
        run.write_config(cfg)
        run.write_json(run.INFO, info)

    first_epoch = int(state["next_epoch"]) if state else 0
    if first_epoch >= cfg.train.epochs:
        log.info("%s: already trained for %d epochs (train.epochs=%d); nothing to do",
                 run_dir, first_epoch, cfg.train.epochs)
        return run_dir
    cb.truncate_log(run.log_csv, first_epoch)  # epochs about to be rerun
    state = state or {}

    train_ds = None
    for epoch in range(first_epoch, cfg.train.epochs):
        part = stage.epoch_dataset(ctx, epoch, steps)
        train_ds = part if train_ds is None else train_ds.concatenate(part)
    val_ds, val_steps = stage.validation_data(ctx)

    monitor, mode, stop_patience = stage.selection(ctx)
    schedule = MetricSchedule(
        monitor, mode, lr_factor=cfg.train.lr_decay_factor,
        lr_patience=cfg.train.lr_patience if cfg.train.lr_schedule == "plateau" else None,
        min_lr=cfg.train.min_learning_rate, stop_patience=stop_patience)
    schedule.load_state(state.get("schedule"))
    nan_guard = cb.NaNGuard()
    ckpt = cb.RunCheckpoint(run_dir, nan_guard, best=state.get("best"), monitor=monitor, mode=mode,
                            schedule=schedule, best_val_loss=state.get("best_val_loss"))
    tracker = cb.EpochTracker(first_epoch)
    # EpochEnd is the one writer of the epoch logs (decoded scores, learning rate); every
    # callback after it only reads them, so their order does not matter.
    callbacks = [EpochEnd(ckpt, schedule, validation), tracker, nan_guard, *stage.callbacks(ctx, first_epoch),
                 keras.callbacks.CSVLogger(run.log_csv, append=first_epoch > 0),
                 cb.ScalarSummaries(run.tensorboard_dir)]
    if cfg.train.terminate_on_nan:
        callbacks.append(keras.callbacks.TerminateOnNaN())

    log.info("%s", stage.describe(ctx, steps, first_epoch))
    try:
        fit_model.fit(train_ds, validation_data=val_ds, validation_steps=val_steps, epochs=cfg.train.epochs,
                      shuffle=False,  # the stage's datasets shuffle, seeded per epoch
                      initial_epoch=first_epoch, steps_per_epoch=steps, callbacks=callbacks,
                      verbose="auto" if sys.stdout.isatty() else 2)  # no progress bars in log files
    except KeyboardInterrupt:
        ckpt.save_interrupted(tracker.epoch)
        log.warning("interrupted: checkpoint saved in %s; continue with --resume", run_dir)
        raise
    except OSError as err:  # a logger meeting a full or read-only disk (checkpoints say it themselves)
        raise CaptioningError(f"{run_dir}: cannot write the run ({err.strerror or err}); free space, then "
                              "train with --resume") from None
    except Exception as err:
        raise _shard_read_error(err, features, run_dir) from None
    finally:
        _draw_curves(run)
    if nan_guard.triggered:
        raise CaptioningError(f"{run_dir}: training stopped on a non-finite loss; the last good "
                              "checkpoint is checkpoints/last.keras")
    return run_dir


def _check_resumed_config(cfg: ExperimentConfig, run: RunDirectory) -> list[str]:
    """Refuses, in one line, a resume whose config alters the model, the data or the features.

    Returns the allowed changes (``run_configs.RESUMABLE``: epochs, patience, schedule, ...).
    """
    from keras_captioning.training.run_configs import RESUMABLE, config_changes

    refused, allowed = config_changes(run.config(), cfg)
    if refused:
        may = ", ".join(sorted(k for k in RESUMABLE if "." in k))
        raise CaptioningError(
            f"{run.config_path}: --resume cannot change {'; '.join(refused)} (they alter the model, the data "
            f"or the features; a resume may change {may} and eval.*); start a new run with --overwrite or "
            "another train.run_dir")
    if allowed:
        log.info("%s: resumed with %s", run.path, "; ".join(allowed))
    return allowed


def _shard_read_error(err: Exception, features, run_dir: str) -> Exception:
    """``err`` as a CaptioningError naming the damaged shard when it is a read error."""
    from keras_captioning.data.shards import shard_read_error

    return shard_read_error(err, features.shard_files(),
                            "extract the features again (features --overwrite), then train with "
                            f"--resume (checkpoints in {run_dir} are kept)")


def _draw_curves(run: RunDirectory) -> None:
    """``loss.png`` from ``log.csv``; a disk that refuses it costs the picture, never the run's error."""
    import os

    from keras_captioning.viz import plot_loss_curves

    if not os.path.exists(run.log_csv):
        return
    try:
        plot_loss_curves(run.log_csv, run.loss_png)
    except OSError as err:
        log.warning("%s: not drawn (%s)", run.loss_png, err.strerror or err)
