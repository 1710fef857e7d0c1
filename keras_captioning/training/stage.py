"""What a training stage says; the loop (``training/trainer.py``) does everything else.

A stage is the tensorflow/models ``Task`` of this package: it builds its model, its data and
its extra callbacks, and may wrap the model in another one for ``fit`` (SCST's
``SCSTTrainer`` with its own ``train_step``). The loop owns the run directory, the precision
policy, seeding, feature currency, the per-epoch datasets (it concatenates
``epoch_dataset(ctx, e, steps)`` for each epoch to run), ``fit``, Ctrl-C, the NaN guard,
checkpoints, the schedule and the curves. A stage never opens a run folder, seeds, or
writes a checkpoint itself.

Stages now: ``CrossEntropyStage`` (``train.objective=xe``) and ``SCSTStage`` (``scst``).
A stage that trains from images (CNN fine-tuning) returns a dataset of images from
``epoch_dataset`` and a model holding the CNN from ``build_model``: nothing in the loop
reads shards.
"""

from __future__ import annotations

import logging
import math

from keras_captioning.errors import CaptioningError

log = logging.getLogger(__name__)


class Stage:
    """Base class of the training stages; the methods below are the plug-in points.

    Args:
        cfg: the experiment config.
    """

    #: ``run.json``'s ``objective`` for runs of this stage (None: not recorded).
    objective: str | None = None

    def __init__(self, cfg):
        self.cfg = cfg

    # ------------------------------------------------------------------ before the run opens
    def check(self) -> None:
        """Refuses settings this stage cannot run, before the run folder is touched."""

    def check_resume(self, info: dict, run_dir: str) -> None:
        """Refuses to resume a run (``info`` = its ``run.json``) this stage did not write."""
        if info.get("model_type") != self.cfg.model.type:
            raise CaptioningError(f"{run_dir}: holds a '{info.get('model_type')}' model, not "
                                  f"model.type='{self.cfg.model.type}'")
        if info.get("objective") != self.objective:
            raise CaptioningError(f"{run_dir}: a {info.get('objective') or 'cross-entropy'} run; resume it "
                                  f"with its own train.objective")

    # ------------------------------------------------------------------ once per run
    def prepare(self, ctx) -> None:
        """Reads what the stage needs once (counts, reward, init run); ``ctx`` is a ``RunContext``."""

    def num_examples(self, ctx) -> int:
        """Training examples per epoch (the steps are ``ceil(num_examples / batch_size)``)."""
        raise NotImplementedError

    def steps_per_epoch(self, ctx) -> int:
        n = self.num_examples(ctx)
        if n == 0:
            raise CaptioningError(f"{ctx.features.path}: the train split has no captioned images")
        return self.cfg.train.steps_per_epoch or math.ceil(n / self.cfg.train.batch_size)

    def build_model(self, ctx):
        """A new compiled model (a resumed run loads its checkpoint instead). In the strategy scope."""
        raise NotImplementedError

    def fit_model(self, ctx, model):
        """The model ``fit`` trains (``model`` itself, or a wrapper around it). In the strategy scope.

        Checkpoints always save ``model``, never the wrapper.
        """
        return model

    def start(self, ctx, fit_model, validation) -> tuple[dict | None, dict]:
        """A new run's first state (or None) and its extra ``run.json`` keys, before the first epoch."""
        return None, {}

    # ------------------------------------------------------------------ data and selection
    def epoch_dataset(self, ctx, epoch: int, steps: int):
        """Exactly ``steps`` batches for ``epoch``, seeded by ``train.seed + epoch``."""
        raise NotImplementedError

    def validation_data(self, ctx) -> tuple[object | None, int | None]:
        """``(dataset, steps)`` for Keras's validation loss, or ``(None, None)``."""
        return None, None

    def decoded_validation(self, ctx):
        """A ``DecodedValidation`` scoring decoded captions each epoch, or None."""
        return None

    def selection(self, ctx) -> tuple[str, str, int | None]:
        """``(monitor, mode, early-stopping patience or None)``."""
        raise NotImplementedError

    def callbacks(self, ctx, first_epoch: int) -> list:
        """Extra callbacks; they may read the epoch logs but write none (``EpochEnd`` owns them)."""
        return []

    def describe(self, ctx, steps: int, first_epoch: int) -> str:
        """The log line that starts training."""
        return (f"training {self.cfg.model.type}: {self.num_examples(ctx)} examples, {steps} steps/epoch, "
                f"epochs {first_epoch + 1}..{self.cfg.train.epochs}, policy {ctx.policy}")


def start_from_init(ctx, fit_model, validation, init_path: str, write_best, stage: str,
                    monitor: str = "val_cider_d") -> tuple[dict, dict]:
    """The first state of a stage that starts from ``train.init_from``: the init model's decoded val
    score (``monitor``) is the best to beat, and ``write_best(path)`` makes it the run's best.keras."""
    import os

    from keras_captioning.utils import atomic_output

    logs = {}
    validation.set_model(fit_model)
    validation.on_epoch_end(-1, logs)
    score = logs[monitor]
    os.makedirs(ctx.run.checkpoints_dir, exist_ok=True)
    with atomic_output(ctx.run.checkpoint("best"), suffix=".keras") as tmp:
        write_best(tmp)
    log.info("%s: init model %s scores %s %.1f (greedy); best.keras until an epoch beats it",
             stage, init_path, monitor, 100 * score)
    state = {"best": score, "schedule": {"best": score}, "next_epoch": 0}
    return state, {"init_from": ctx.cfg.train.init_from, f"init_{monitor}": score}


def check_init_stage(cfg, stage: str, suffix: str) -> None:
    """A stage that starts from ``train.init_from``: one device, and a run directory of its own.

    Checked before anything can delete ``run_dir`` (``--overwrite``, a dead first attempt).
    """
    import os

    if cfg.train.strategy != "default":
        raise CaptioningError(f"train.objective={cfg.train.objective} runs on one device: set "
                              "train.strategy=default")
    if os.path.abspath(cfg.train.init_from) == os.path.abspath(cfg.run_dir):
        raise CaptioningError(f"train.run_dir={cfg.run_dir} is the init run itself; {stage} writes its own run "
                              f"directory (set train.run_dir, e.g. runs/<name>_{suffix})")


def init_checkpoint(cfg, vocab, stage: str) -> str:
    """``train.init_from``'s best.keras, after checking it belongs to these features and this model type.

    ``stage`` names the stage in the error when the checkpoint is missing.
    """
    import os

    from keras_captioning.run_directory import RunDirectory

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
        raise CaptioningError(f"{init_run.vocab_path}: not the vocabulary of {cfg.features_dir} (the model's "
                              "token ids would not match the features' captions)")
    path = init_run.checkpoint("best")
    if not os.path.isfile(path):
        raise CaptioningError(f"{path}: not found; {stage} starts from a trained run's best checkpoint")
    return path
