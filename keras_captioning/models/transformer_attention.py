"""Multi-head attention whose keys and values can be projected once and kept in a cache."""

import math

import keras
from keras import ops

# Masked scores: a large negative number rather than -inf, so a row that masks everything
# still gives finite (uniform) weights instead of NaN.
_MASKED = -1e9


@keras.saving.register_keras_serializable(package="keras_captioning")
class TransformerAttention(keras.layers.MultiHeadAttention):
    """``keras.layers.MultiHeadAttention`` split into its projections and the attention itself.

    The Transformer captioner calls the three parts separately: the cross-attention keys and
    values of the region grid are projected once per image (``project_key_value`` in
    ``init_decode``), and the self-attention keys and values of earlier words are kept in a
    fixed-size cache that decoding writes one position per step. The full teacher-forced
    pass and the cached step run the same ``attend``, so they agree to float rounding.

    The weights are Keras' own (``query_dense``, ``key_dense``, ``value_dense``,
    ``output_dense``); ``attend`` computes the scores and the softmax in float32 (mixed
    precision keeps attention in full precision) and applies ``dropout`` to the weights.

    Shapes: ``query`` (B, T, H, K), ``key``/``value`` (B, S, H, K) (H heads, K = key_dim),
    outputs (B, T, D) and weights (B, H, T, S) float32.
    """

    def __init__(self, num_heads, key_dim, **kwargs):
        super().__init__(num_heads, key_dim, **kwargs)
        self.weights_dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name="weights_dropout")

    def project_query(self, inputs):
        """(B, T, D) -> (B, T, H, K)."""
        return self.query_dense(inputs)

    def project_key_value(self, inputs):
        """(B, S, D) -> keys and values, each (B, S, H, K)."""
        return self.key_dense(inputs), self.value_dense(inputs)

    def attend(self, query, key, value, attention_mask=None, training=False):
        """Scaled dot-product attention of projected tensors, then the output projection.

        Args:
            query: (B, T, H, K); key, value: (B, S, H, K).
            attention_mask: bool, broadcastable to (B, H, T, S); False = masked. None: all.

        Returns:
            ``(outputs (B, T, D), weights (B, H, T, S) float32)``.
        """
        scores = ops.einsum("bthk,bshk->bhts", query, key)
        scores = ops.cast(scores, "float32") * (1.0 / math.sqrt(self.key_dim))
        if attention_mask is not None:
            scores = ops.where(attention_mask, scores, _MASKED)
        weights = ops.softmax(scores, axis=-1)  # float32
        dropped = self.weights_dropout(weights, training=training)
        mixed = ops.einsum("bhts,bshk->bthk", ops.cast(dropped, value.dtype), value)  # (B, T, H, K)
        return self.output_dense(mixed), weights

    def call(self, query, value, key=None, attention_mask=None, training=None, **kwargs):
        """The whole layer on (B, T, D) queries and (B, S, D) values (``key`` defaults to ``value``)."""
        key = value if key is None else key
        projected_key = self.key_dense(key)
        outputs, _ = self.attend(self.query_dense(query), projected_key, self.value_dense(value),
                                 attention_mask=attention_mask, training=training)
        return outputs
