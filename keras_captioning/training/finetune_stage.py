"""Fine-tuning the CNN end to end: ``train.objective=finetune`` (sgrvinod's ``fine_tune_encoder``).

Starts from a cached-feature run (``train.init_from``: its ``checkpoints/best.keras``) and
trains the captioner together with the backbone's upper layers, reading images instead of
feature shards. The run directory has the layout of every run; its checkpoints hold an
``EncoderCaptioner`` (the fine-tuned CNN and the captioner in one ``.keras`` file), so the
fine-tuned encoder travels with the run: ``evaluate`` re-extracts the split it scores with
it (``features/fine_tuned.py``), and ``Captioner.from_run`` (hence ``caption``, bundles and
``export``) uses it instead of the ImageNet weights.

* The backbone is built from ``features.*`` (the weights the init run's features came from);
  ``train.finetune_from`` names its first trainable layer, every later layer learns too
  except BatchNormalization (frozen; the CNN runs in inference mode).
* Two Adams: the captioner's (``train.learning_rate``) and the encoder's
  (``train.encoder_learning_rate``, lower).
* Batches are image-major: ``train.batch_size`` images per step, each decoded and encoded
  once, with all of its captions (``ImageCaptionSet``); epoch ``e`` shuffles the images with
  seed ``train.seed + e``.
* Before the first step the init model's greedy val CIDEr-D is scored through the CNN: it is
  the best to beat, and ``best.keras`` holds the init weights until an epoch beats it. Every
  epoch decodes the val split from its pixels; ``train.early_stopping_patience`` stops.
* Progress and speed: a line every ``PROGRESS_SECONDS`` with images/s and the ETA, and the
  epoch's images/s at its end.
"""

from __future__ import annotations

import logging
import time

import keras

from keras_captioning.errors import CaptioningError
from keras_captioning.training.stage import Stage, check_init_stage, init_checkpoint, start_from_init

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 30.0


class _ImageSpeed(keras.callbacks.Callback):
    """Logs progress (images, images/s, ETA) during an epoch and the epoch's images/s at its end."""

    def __init__(self, images_per_step: int, steps: int, total_images: int):
        super().__init__()
        self.images_per_step, self.steps, self.total_images = images_per_step, steps, total_images

    def on_epoch_begin(self, epoch, logs=None):
        from keras_captioning.utils import Progress

        self.epoch, self.started = epoch, time.perf_counter()
        self.progress = Progress(f"epoch {epoch + 1}", self.total_images, unit="images", emit=log.info,
                                 interval=PROGRESS_SECONDS)

    def on_train_batch_end(self, batch, logs=None):
        self.progress.update(min(self.total_images, (batch + 1) * self.images_per_step))

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.started
        log.info("epoch %d: %d images through the CNN and the captioner in %.0f s (%.1f images/s)", epoch + 1,
                 self.total_images, seconds, self.total_images / max(seconds, 1e-9))


class FineTuneStage(Stage):
    """The captioner of ``train.init_from`` and its CNN, trained together from images."""

    objective = "finetune"

    def check(self) -> None:
        cfg = self.cfg
        check_init_stage(cfg, "fine-tuning", "finetune")
        if cfg.features.backbone == "patches":
            raise CaptioningError("features.backbone=patches has no weights to fine-tune")

    def prepare(self, ctx) -> None:
        from keras_captioning.features.build import load_records
        from keras_captioning.features.image_caption_set import ImageCaptionSet
        from keras_captioning.run_directory import RunDirectory

        cfg = self.cfg
        self.init_path = init_checkpoint(cfg, ctx.vocab, "fine-tuning")
        if RunDirectory(cfg.train.init_from).info().get("objective") == self.objective:
            raise CaptioningError(f"{cfg.train.init_from}: is a fine-tuning run; start from the cached-feature "
                                  "run it came from (or --resume this one)")
        records = load_records(cfg)
        size = int(ctx.manifest["image_size"])
        self.image_size = size
        self.sets = {split: ImageCaptionSet.from_records([r for r in records if r.split == split], ctx.vocab, size,
                                                         cfg.data.max_length, name=split)
                     for split in ("train", "val")}
        if not len(self.sets["val"]):
            raise CaptioningError(f"{cfg.data.captions or cfg.data.root}: fine-tuning selects and stops on the val "
                                  "split's CIDEr-D; there is no usable val image")

    def num_examples(self, ctx) -> int:
        return len(self.sets["train"])

    def build_model(self, ctx):
        from keras_captioning.features.run_encoder import rebuild_encoder
        from keras_captioning.models.encoder_captioner import EncoderCaptioner, set_trainable_from
        from keras_captioning.run_directory import RunDirectory
        from keras_captioning.training.callbacks import read_checkpoint

        cfg = self.cfg
        init = RunDirectory(cfg.train.init_from)  # its CNN is the one its features came from
        encoder = rebuild_encoder(init, init.info(), init.manifest(), None)
        learned = set_trainable_from(encoder, cfg.train.finetune_from)
        captioner = read_checkpoint(self.init_path, compile=False)
        model = EncoderCaptioner(encoder, captioner, feature=ctx.feature,
                                 encoder_learning_rate=cfg.train.encoder_learning_rate,
                                 encoder_clipnorm=cfg.train.clipnorm)
        model.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate, clipnorm=cfg.train.clipnorm))
        model.build()
        model.optimizer.build(model.captioner_variables())
        params = sum(int(v.numpy().size) for v in model.encoder_variables())
        log.info("fine-tuning %d encoder layers from %s (%s ... %s, %.2f M parameters) at lr %.3g; the captioner "
                 "at lr %.3g", len(learned), cfg.train.finetune_from, learned[0] if learned else "-",
                 learned[-1] if learned else "-", params / 1e6, cfg.train.encoder_learning_rate, cfg.train.learning_rate)
        return model

    def fit_model(self, ctx, model):
        if not model.optimizer.built:  # a resumed model has both optimizers built by its loader
            model.optimizer.build(model.captioner_variables())
        return model

    def decoded_validation(self, ctx):
        from keras_captioning.training.selection import DecodedValidation

        return DecodedValidation(self.sets["val"].eval_batches(self.cfg.eval.batch_size), ctx.vocab,
                                 max_length=self.cfg.eval.max_length, max_images=self.cfg.train.val_decode_images)

    def start(self, ctx, fit_model, validation):
        """Scores the init model through the CNN (the best to beat) and makes it the run's best.keras."""
        state, extra = start_from_init(ctx, fit_model, validation, self.init_path, fit_model.save, "finetune",
                                       monitor=self.selection(ctx)[0])
        return state, {**extra, "finetune_from": self.cfg.train.finetune_from}

    def epoch_dataset(self, ctx, epoch: int, steps: int):
        return self.sets["train"].train_batches(self.cfg.train.batch_size, seed=self.cfg.train.seed + epoch).take(steps)

    def selection(self, ctx):
        from keras_captioning.training.selection import monitor_for

        monitor, mode = monitor_for(self.cfg.train.select_on)
        if monitor == "val_loss":
            raise CaptioningError("train.objective=finetune selects on decoded val captions: set train.select_on "
                                  "to CIDEr-D or BLEU-4")
        return monitor, mode, self.cfg.train.early_stopping_patience

    def callbacks(self, ctx, first_epoch: int) -> list:
        train = self.cfg.train
        steps = self.steps_per_epoch(ctx)
        return [_ImageSpeed(train.batch_size, steps, min(len(self.sets["train"]), steps * train.batch_size))]

    def describe(self, ctx, steps: int, first_epoch: int) -> str:
        train = self.cfg.train
        return (f"finetune {self.cfg.model.type} + {self.cfg.features.backbone}: {len(self.sets['train'])} images "
                f"({self.sets['train'].num_captions} captions), {steps} steps/epoch x {train.batch_size} images, "
                f"epochs {first_epoch + 1}..{train.epochs}, policy {ctx.policy}")

