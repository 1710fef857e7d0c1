"""A captioner together with its CNN, for fine-tuning the CNN end to end (``train.objective=finetune``).

``EncoderCaptioner(encoder, captioner)`` takes pixels where the captioner takes cached
features: ``encoder`` is a ``build_backbone`` model (float32 (B, S, S, 3) RGB in [0, 255] ->
``{"grid", "pooled"}``) and ``captioner`` any ``CaptionModel``. It keeps the captioner's
contracts, with pixels in the ``features`` slot:

* training batches ``{"features": pixels (G, S, S, 3), "captions": (B, L), "image_index": (B,)}``:
  image-major, each of the G images encoded once per step, caption row i belonging to image
  ``image_index[i]``; the same masked loss and metrics as the captioner's own ``train_step``;
* decoding: ``init_decode(pixels)`` encodes, then hands over to the captioner's
  ``init_decode``; ``decode_step`` is the captioner's. Greedy, beam search and the per-epoch
  val decoding therefore run through it unchanged.

The encoder always runs with ``training=False``: its BatchNormalization layers stay in
inference mode (ImageNet statistics) whatever the batch; which of its layers learn is set by
their ``trainable`` flags (``set_trainable_from``). The encoder's variables have their own
Adam (``encoder_learning_rate``, usually well below the captioner's): Adam's step does not
depend on the gradient's scale, so a lower rate cannot be had by scaling gradients. Its
moments are saved with the model (``.keras``), so ``--resume`` continues both optimizers.

Under ``mixed_float16`` the loss is scaled by the captioner's ``LossScaleOptimizer``; the
encoder's gradients are unscaled by the same factor and its step is skipped when they are not
finite, as the captioner's is.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from keras_captioning.errors import CaptioningError
from keras_captioning.models.wraps_captioner import WrapsCaptioner

FEATURES = ("grid", "pooled")


@keras.saving.register_keras_serializable(package="keras_captioning")
class EncoderCaptioner(WrapsCaptioner, keras.Model):
    """A ``CaptionModel`` with the CNN in front of it (see the module docstring).

    Args:
        encoder: the backbone model, pixels -> ``{"grid", "pooled"}``.
        captioner: the captioner reading ``encoder``'s ``feature`` output.
        feature: "grid" (attention, transformer) or "pooled" (merge).
        encoder_learning_rate: Adam's rate for the encoder's trainable variables.
        encoder_clipnorm: per-variable gradient clipping of the encoder's Adam (None: off).
    """

    def __init__(self, encoder, captioner, feature: str = "grid", encoder_learning_rate: float = 1e-5,
                 encoder_clipnorm: float | None = None, **kwargs):
        super().__init__(**kwargs)
        if feature not in FEATURES:
            raise CaptioningError(f"feature: must be one of {FEATURES}, got {feature!r}")
        self.encoder = encoder
        self.captioner = captioner
        self.feature = feature
        self.encoder_learning_rate = float(encoder_learning_rate)
        self.encoder_clipnorm = encoder_clipnorm
        self.encoder_optimizer = keras.optimizers.Adam(self.encoder_learning_rate, clipnorm=encoder_clipnorm)

    @property
    def metrics(self):
        return self.captioner.metrics

    def encoder_variables(self) -> list:
        return list(self.encoder.trainable_variables)

    def captioner_variables(self) -> list:
        return list(self.captioner.trainable_variables)

    # ------------------------------------------------------------------ forward
    def encode(self, pixels):
        """Pixels (B, S, S, 3) in [0, 255] -> the captioner's features, float32."""
        return ops.cast(self.encoder(ops.cast(pixels, "float32"), training=False)[self.feature], "float32")

    def call(self, inputs, training=False):
        return self.captioner({"features": self.encode(inputs["features"]), "tokens": inputs["tokens"]},
                              training=training)

    def build(self, input_shape=None):
        # Both parts are built when they are handed over (a loaded model rebuilds them from
        # their configs); the encoder's Adam needs the variables it will update.
        if not self.encoder_optimizer.built:
            self.encoder_optimizer.build(self.encoder_variables())
        self.built = True

    # ------------------------------------------------------------------ training
    def train_step(self, data):
        cap = self.captioner
        pixels, tokens, targets, image_index = cap._split_batch(data)
        enc_vars, cap_vars = self.encoder_variables(), self.captioner_variables()
        with tf.GradientTape() as tape:
            features = self.encode(pixels)
            loss_targets, logits, ce_sum, num_tokens, penalty = cap._objective(
                features, tokens, targets, training=True, image_index=image_index)
            loss = cap._replica_loss(ce_sum, num_tokens, penalty, ops.shape(targets)[0])
            scale = None
            if hasattr(self.optimizer, "scale_loss"):
                scale = getattr(self.optimizer, "dynamic_scale", None)
                loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(loss, cap_vars + enc_vars)
        cap_grads, enc_grads = grads[:len(cap_vars)], grads[len(cap_vars):]
        if enc_vars:
            self._apply_encoder(enc_grads, enc_vars, scale)
        self.optimizer.apply(cap_grads, cap_vars)
        return cap._update_metrics(loss_targets, logits, ce_sum, num_tokens, penalty, ops.shape(targets)[0])

    def _apply_encoder(self, grads, variables, scale) -> None:
        if scale is None:
            self.encoder_optimizer.apply(grads, variables)
            return
        grads = [g / ops.cast(scale, g.dtype) if g is not None else g for g in grads]
        finite = ops.all(ops.stack([ops.all(ops.isfinite(g)) for g in grads if g is not None]))

        def step():
            self.encoder_optimizer.apply(grads, variables)
            return tf.constant(True)

        tf.cond(finite, step, lambda: tf.constant(False))  # as LossScaleOptimizer skips a non-finite step

    def test_step(self, data):
        cap = self.captioner
        pixels, tokens, targets, image_index = cap._split_batch(data)
        loss_targets, logits, ce_sum, num_tokens, penalty = cap._objective(
            self.encode(pixels), tokens, targets, training=False, image_index=image_index)
        return cap._update_metrics(loss_targets, logits, ce_sum, num_tokens, penalty, ops.shape(targets)[0])

    # ------------------------------------------------------------------ decoding
    def init_decode(self, features):
        return self.captioner.init_decode(self.encode(features))

    # ------------------------------------------------------------------ saving
    def compile_from_config(self, config):
        # Keras builds a loaded model's optimizer over every trainable variable; this one's
        # updates the captioner only (the encoder has encoder_optimizer), so its saved
        # moments load only when it is built over the same variables.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.optimizer is not None:
            self.optimizer.build(self.captioner_variables())

    def get_config(self):
        config = super().get_config()
        config.update({
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "captioner": keras.saving.serialize_keras_object(self.captioner),
            "feature": self.feature,
            "encoder_learning_rate": self.encoder_learning_rate,
            "encoder_clipnorm": self.encoder_clipnorm,
            "encoder_trainable": [layer.name for layer in _layers(self.encoder) if layer.trainable and layer.weights],
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        trainable = set(config.pop("encoder_trainable", []))
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        captioner = keras.saving.deserialize_keras_object(config.pop("captioner"))
        for layer in _layers(encoder):  # the same variables learn after a reload (--resume)
            if layer.weights and not isinstance(layer, keras.Model):
                layer.trainable = layer.name in trainable
        model = cls(encoder, captioner, **config)
        model.build()
        return model


def _layers(model) -> list:
    """Every layer of ``model``, nested models' layers included (depth first)."""
    found = []
    for layer in model.layers:
        found.append(layer)
        if isinstance(layer, keras.Model):
            found.extend(_layers(layer))
    return found


def set_trainable_from(encoder, first_layer: str | None) -> list[str]:
    """Freezes ``encoder`` below ``first_layer`` (a layer name); that layer and every later one learn.

    BatchNormalization layers stay frozen everywhere (their statistics and scale: the encoder
    runs in inference mode). ``None`` or "none" freezes the whole encoder (the control run of a
    fine-tuning experiment: the same stage with a fixed CNN). Returns the trainable layers'
    names; an unknown name is a CaptioningError listing the candidates.
    """
    if first_layer == "none":
        first_layer = None
    layers = [layer for layer in _layers(encoder) if not isinstance(layer, keras.Model)]
    names = [layer.name for layer in layers]
    encoder.trainable = True
    for model in [encoder, *(layer for layer in _layers(encoder) if isinstance(layer, keras.Model))]:
        model.trainable = True
    if first_layer is not None and first_layer not in names:
        weighted = [layer.name for layer in layers if layer.weights]
        raise CaptioningError(f"train.finetune_from={first_layer!r}: no such layer in {encoder.name} (its layers "
                              f"with weights: {weighted[0]} ... {weighted[-1]}, {len(weighted)} in all; e.g. "
                              f"{', '.join(weighted[-12::4])})")
    start = len(names) if first_layer is None else names.index(first_layer)
    learned = []
    for i, layer in enumerate(layers):
        on = i >= start and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = on
        if on and layer.weights:
            learned.append(layer.name)
    return learned
