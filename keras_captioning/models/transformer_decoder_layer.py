"""One Transformer decoder layer: causal self-attention, cross-attention over regions, feed-forward."""

import keras
from keras import ops

from keras_captioning.models.transformer_attention import TransformerAttention
from keras_captioning.models.transformer_encoder_layer import TransformerEncoderLayer, feed_forward, residual


@keras.saving.register_keras_serializable(package="keras_captioning")
class TransformerDecoderLayer(TransformerEncoderLayer):
    """Causal self-attention over the words so far, cross-attention over the regions, a ReLU
    feed-forward block; residuals around each, LayerNorm before (``"pre"``) or after (``"post"``).

    The regions' cross-attention keys and values are projected by the caller once per image
    (``cross_attention.project_key_value(regions)``) and passed in, so decoding does not
    project them again at every step.

    Two ways to run it, the same arithmetic:

    - whole captions (teacher forcing): ``layer(x (B, T, D), cross_key, cross_value)``, the
      self-attention masked causally;
    - one step with a key/value cache (decoding): ``layer(x (B, 1, D), cross_key, cross_value,
      cache_key, cache_value, step)``, caches (B, L, H, K) of the earlier positions' keys and
      values, ``step`` int (B,) the position of ``x``. The new key and value are written at
      ``step`` (a one-hot select: fixed shapes, no scatter, so beam search can reorder the
      caches along the batch axis and the loop converts to LiteRT builtins), and ``x``
      attends to positions ``<= step``.

    Args:
        model_dim, num_heads, ff_dim, dropout, norm: as ``TransformerEncoderLayer``.

    Returns ``(x (B, T, D), cross weights (B, H, T, R) float32, keys, values)``: the keys and
    values are the updated caches (cached call) or this call's (B, T, H, K) self-attention
    keys and values.
    """

    NUM_NORMS = 3

    def __init__(self, model_dim, num_heads, ff_dim, dropout=0.0, norm="pre", **kwargs):
        # The encoder layer's self-attention, feed-forward block, norms and config, plus:
        super().__init__(model_dim, num_heads, ff_dim, dropout=dropout, norm=norm, **kwargs)
        self.cross_attention = TransformerAttention(num_heads, model_dim // num_heads, dropout=dropout,
                                                    dtype=self.dtype_policy, name="cross_attention")

    def build(self, input_shape=None):
        shape = (None, None, self.model_dim)
        self.cross_attention.build(shape, shape)
        super().build(input_shape)

    def call(self, x, cross_key, cross_value, cache_key=None, cache_value=None, step=None, training=False):
        first = self.norm == "pre"
        attention = self.self_attention
        kept = {}

        def self_attend(h):
            query = attention.project_query(h)
            key, value = attention.project_key_value(h)  # (B, T, H, K)
            if cache_key is None:
                length = ops.shape(h)[1]
                positions = ops.arange(length)
                mask = ops.expand_dims(positions[:, None] >= positions[None, :], 0)  # (1, T, T): causal
            else:
                slots = ops.arange(ops.shape(cache_key)[1])[None, :]  # (1, L)
                step_ = ops.cast(step, "int32")[:, None]  # (B, 1)
                write = ops.expand_dims(ops.expand_dims(ops.equal(slots, step_), -1), -1)  # (B, L, 1, 1)
                key = ops.where(write, ops.cast(key, cache_key.dtype), cache_key)  # (B, L, H, K)
                value = ops.where(write, ops.cast(value, cache_value.dtype), cache_value)
                mask = ops.expand_dims(ops.expand_dims(slots <= step_, 1), 1)  # (B, 1, 1, L)
            kept["key"], kept["value"] = key, value
            return attention.attend(query, key, value, attention_mask=mask, training=training)

        def cross_attend(h):
            query = self.cross_attention.project_query(h)
            return self.cross_attention.attend(query, cross_key, cross_value, training=training)

        x, _ = residual(x, self_attend, self.norms[0], self.dropout_layer, first, training)
        x, weights = residual(x, cross_attend, self.norms[1], self.dropout_layer, first, training)
        x, _ = residual(x, lambda h: feed_forward(self, h, training), self.norms[2], self.dropout_layer, first,
                        training)
        return x, weights, kept["key"], kept["value"]
