"""Additive (Bahdanau) attention over image regions."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_captioning")
class BahdanauAttention(keras.layers.Layer):
    """``score = V tanh(W1 h_s + W2 h_t)``, softmax over regions, weighted sum.

    ``W1 h_s`` (the keys) does not depend on the decoder state, so it is computed
    once per image with ``project_keys`` and reused at every time step; only
    ``W2 h_t`` is computed per step.

    Args:
        units: attention size A (study: 512).

    Usage::

        keys = attention.project_keys(features)                 # (B, R, A), once
        context, weights = attention(keys, features, hidden)    # per step

    with ``features`` (B, R, E), ``hidden`` (B, H): ``context`` (B, E) in the
    compute dtype and ``weights`` (B, R) float32 summing to 1 over regions. The
    softmax runs in float32 also under ``mixed_float16``.
    """

    def __init__(self, units=512, **kwargs):
        super().__init__(**kwargs)
        # === Layers ===
        self.W1 = keras.layers.Dense(units, dtype=self.dtype_policy, name="W1")
        self.W2 = keras.layers.Dense(units, dtype=self.dtype_policy, name="W2")
        self.V = keras.layers.Dense(1, dtype=self.dtype_policy, name="V")
        # === Config ===
        self.units = units

    def build(self, features_shape, hidden_shape):
        """Create weights for region features (..., E) and decoder states (..., H)."""
        self.W1.build((None, None, features_shape[-1]))
        self.W2.build((None, hidden_shape[-1]))
        self.V.build((None, None, self.units))

    def project_keys(self, features):
        """``W1 h_s`` for every region: (B, R, E) -> (B, R, A)."""
        return self.W1(features)

    def call(self, projected_keys, features, hidden):
        return self.attend(projected_keys, features, self.W2(hidden))

    def attend(self, projected_keys, features, query):
        """Attention for an already projected query ``W2 h_t`` (B, A): ``(context, weights)``."""
        query = ops.expand_dims(query, axis=1)  # (B, 1, A)
        scores = self.V(ops.tanh(projected_keys + query))  # (B, R, 1)
        weights = ops.softmax(ops.cast(ops.squeeze(scores, axis=-1), "float32"), axis=-1)  # (B, R)
        context = ops.sum(ops.expand_dims(ops.cast(weights, features.dtype), -1) * features, axis=1)  # (B, E)
        return context, weights

    def compute_output_shape(self, features_shape, hidden_shape):
        """``((B, E), (B, R))``: the context and the weights."""
        return (features_shape[0], features_shape[-1]), (features_shape[0], features_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config
