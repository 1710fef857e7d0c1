"""Cross-entropy (teacher forcing) on cached features: ``train.objective=xe``.

Data order: epoch ``e`` shuffles with seed ``train.seed + e`` and gives the same order each time
it is iterated (Keras iterates it once more to build the model under a tf.distribute
strategy), so a resumed run, a multi-worker run and a one-device run see the same data order. Without
``train.length_buckets`` every batch is padded to the longest stored caption (one shape,
one traced graph); with buckets, to the smallest bucket width holding it.
"""

from __future__ import annotations

import logging
import math

from keras_captioning.training.stage import Stage

log = logging.getLogger(__name__)


def feature_cache(cfg, manifest: dict, feature: str):
    """The train split's ``FeatureCache`` when ``train.cache_features`` asks for one, else None."""
    from keras_captioning.data.feature_cache import CACHE_LIMIT_BYTES, FeatureCache, cached_bytes
    from keras_captioning.features.feature_folder import FeatureFolder

    setting = cfg.train.cache_features
    if setting == "off" or cfg.train.caption_mode != "all" or cfg.train.strategy != "default":
        return None  # "on" with another mode or strategy is refused when the config loads
    size = cached_bytes(manifest, "train", feature)
    if setting == "auto" and size > CACHE_LIMIT_BYTES:
        log.info("train features take %.1f GiB > %.0f GiB: read from the shards each epoch "
                 "(train.cache_features=on holds them in memory anyway)", size / 2**30, CACHE_LIMIT_BYTES / 2**30)
        return None
    return FeatureCache.from_shards(FeatureFolder(cfg.features_dir).shard_pattern("train"), feature)


class CrossEntropyStage(Stage):
    """A new captioner trained with masked cross-entropy on the feature shards."""

    objective = None  # run.json of a cross-entropy run has no "objective" key

    def prepare(self, ctx) -> None:
        self._cache = None
        self._cache_made = False

    def max_length(self, ctx) -> int | None:
        return int(ctx.manifest.get("longest_caption") or self.cfg.data.max_length or 0) or None

    def num_examples(self, ctx) -> int:
        from keras_captioning.data.pipeline import count_examples

        return count_examples(ctx.manifest, "train", self.cfg.train.caption_mode)

    def build_model(self, ctx):
        import keras

        from keras_captioning.models.registry import build_model

        cfg, vocab = self.cfg, ctx.vocab
        model = build_model(cfg, len(vocab), ctx.manifest["grid_shape"], {
            "pad_id": vocab.pad_id, "start_id": vocab.start_id, "end_id": vocab.end_id})
        model.compile(optimizer=keras.optimizers.Adam(cfg.train.learning_rate, clipnorm=cfg.train.clipnorm),
                      jit_compile=cfg.train.jit_compile)
        return model

    def fit_model(self, ctx, model):
        if not model.optimizer.built:  # in the strategy's scope, before fit
            model.optimizer.build(model.trainable_variables)
        return model

    def epoch_dataset(self, ctx, epoch: int, steps: int):
        from keras_captioning.data.pipeline import make_train_dataset

        if not self._cache_made:  # one cache for all epochs
            self._cache = feature_cache(self.cfg, ctx.manifest, ctx.feature)
            self._cache_made = True
        train = self.cfg.train
        return make_train_dataset(
            ctx.features.shard_pattern("train"), train.batch_size, feature=ctx.feature,
            caption_mode=train.caption_mode, shuffle=True, seed=train.seed + epoch, reshuffle=False,
            shuffle_buffer=train.shuffle_buffer, max_length=self.max_length(ctx),
            length_buckets=train.length_buckets, batch_layout=train.batch_layout, cache=self._cache,
        ).take(steps)

    def _has_val(self, ctx) -> bool:
        from keras_captioning.data.pipeline import count_examples

        return "val" in ctx.manifest.get("counts", {}) and count_examples(ctx.manifest, "val", "all") > 0

    def validation_data(self, ctx):
        from keras_captioning.data.pipeline import count_examples, make_train_dataset

        if not self._has_val(ctx):
            log.warning("%s: no val split; best.keras is not selected (last.keras is every epoch's)",
                        ctx.features.path)
            return None, None
        # Repeated with an explicit step count: Keras keeps one validation iterator for the
        # whole fit, and each epoch then validates on exactly one pass.
        steps = math.ceil(count_examples(ctx.manifest, "val", "all") / self.cfg.train.batch_size)
        ds = make_train_dataset(ctx.features.shard_pattern("val"), self.cfg.train.batch_size, feature=ctx.feature,
                                caption_mode="all", shuffle=False, max_length=self.max_length(ctx)).repeat()
        return ds, steps

    def decoded_validation(self, ctx):
        from keras_captioning.data.pipeline import make_eval_dataset
        from keras_captioning.training.selection import DecodedValidation, monitor_for

        if monitor_for(self.cfg.train.select_on)[0] == "val_loss" or not self._has_val(ctx):
            return None
        return DecodedValidation(
            make_eval_dataset(ctx.features.shard_pattern("val"), self.cfg.eval.batch_size, feature=ctx.feature),
            ctx.vocab, max_length=self.cfg.eval.max_length, max_images=self.cfg.train.val_decode_images)

    def selection(self, ctx):
        from keras_captioning.training.selection import monitor_for

        monitor, mode = monitor_for(self.cfg.train.select_on)
        return monitor, mode, self.cfg.train.early_stopping_patience if self._has_val(ctx) else None

    def describe(self, ctx, steps: int, first_epoch: int) -> str:
        return f"{super().describe(ctx, steps, first_epoch)}, strategy {self.cfg.train.strategy}"
