"""One Transformer encoder layer over the region grid: self-attention and a feed-forward block."""

import keras

from keras_captioning.errors import CaptioningError
from keras_captioning.models.transformer_attention import TransformerAttention

NORMS = ("pre", "post")


def residual(x, sublayer, norm, dropout, norm_first, training):
    """``x + dropout(sublayer(norm(x)))`` (pre-norm) or ``norm(x + dropout(sublayer(x)))`` (post-norm).

    ``sublayer`` returns ``(outputs, extra)``; returns ``(new x, extra)``.
    """
    outputs, extra = sublayer(norm(x) if norm_first else x)
    x = x + dropout(outputs, training=training)
    return (x if norm_first else norm(x)), extra


def feed_forward(layer, x, training):
    """The position-wise block of ``layer`` (its ``ff_inner``, ``ff_outer``, ``dropout_layer``):
    (B, T, D) -> ((B, T, D), None)."""
    return layer.ff_outer(layer.dropout_layer(layer.ff_inner(x), training=training)), None


def check_sizes(model_dim, num_heads, ff_dim, dropout, norm):
    """One CaptioningError line for sizes a Transformer layer cannot take."""
    if min(model_dim, num_heads, ff_dim) < 1 or model_dim % num_heads:
        raise CaptioningError(f"transformer: model width {model_dim} must be a positive multiple of the "
                              f"number of heads {num_heads}, and the feed-forward width {ff_dim} >= 1")
    if not 0 <= dropout < 1:
        raise CaptioningError(f"transformer: dropout must be in [0, 1), got {dropout}")
    if norm not in NORMS:
        raise CaptioningError(f"transformer: norm must be one of {NORMS}, got {norm!r}")


@keras.saving.register_keras_serializable(package="keras_captioning")
class TransformerEncoderLayer(keras.layers.Layer):
    """Self-attention over the regions, then a ReLU feed-forward block; residuals around both.

    Args:
        model_dim: width D of the regions in and out.
        num_heads: attention heads (D must be a multiple).
        ff_dim: inner width of the feed-forward block.
        dropout: on the attention weights and on each block's output before the residual sum.
        norm: ``"pre"`` (LayerNorm before each block, stable without warm-up) or ``"post"``
            (after each residual sum, as in Vaswani et al.).

    Call: ``layer(regions (B, R, D), training)`` -> (B, R, D).
    """

    NUM_NORMS = 2  # one LayerNorm per residual block

    def __init__(self, model_dim, num_heads, ff_dim, dropout=0.0, norm="pre", **kwargs):
        check_sizes(model_dim, num_heads, ff_dim, dropout, norm)
        super().__init__(**kwargs)
        policy = self.dtype_policy
        # === Layers ===
        self.self_attention = TransformerAttention(num_heads, model_dim // num_heads, dropout=dropout, dtype=policy,
                                                   name="self_attention")
        self.ff_inner = keras.layers.Dense(ff_dim, activation="relu", dtype=policy, name="ff_inner")
        self.ff_outer = keras.layers.Dense(model_dim, dtype=policy, name="ff_outer")
        self.norms = [keras.layers.LayerNormalization(epsilon=1e-5, dtype=policy, name=f"norm_{i}")
                      for i in range(self.NUM_NORMS)]
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=policy, name="dropout")
        # === Config ===
        self.model_dim = model_dim
        self.num_heads = num_heads
        self.ff_dim = ff_dim
        self.dropout = dropout
        self.norm = norm

    def build(self, input_shape=None):
        shape = (None, None, self.model_dim)
        self.self_attention.build(shape, shape)
        self.ff_inner.build(shape)
        self.ff_outer.build((None, None, self.ff_dim))
        for norm in self.norms:
            norm.build(shape)
        self.built = True

    def call(self, regions, training=False):
        first = self.norm == "pre"

        def attend(x):
            key, value = self.self_attention.project_key_value(x)
            return self.self_attention.attend(self.self_attention.project_query(x), key, value, training=training)

        x, _ = residual(regions, attend, self.norms[0], self.dropout_layer, first, training)
        x, _ = residual(x, lambda h: feed_forward(self, h, training), self.norms[1], self.dropout_layer, first, training)
        return x

    def get_config(self):
        config = super().get_config()
        config.update({"model_dim": self.model_dim, "num_heads": self.num_heads, "ff_dim": self.ff_dim,
                       "dropout": self.dropout, "norm": self.norm})
        return config
