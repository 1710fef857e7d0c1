"""The Transformer captioner: a Transformer decoder over the projected region grid."""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_captioning.errors import CaptioningError
from keras_captioning.models.caption_model import CaptionModel
from keras_captioning.models.transformer_decoder_layer import TransformerDecoderLayer
from keras_captioning.models.transformer_encoder_layer import TransformerEncoderLayer, check_sizes

POSITIONS = ("learned", "sinusoidal")


def sinusoidal_positions(length, width):
    """The fixed position table of Vaswani et al.: (length, width) float32, sin on even, cos on odd channels."""
    positions = np.arange(length, dtype=np.float64)[:, None]
    rates = np.exp(-math.log(10000.0) * (np.arange(0, width, 2) / width))[None, :]
    table = np.zeros((length, width))
    table[:, 0::2] = np.sin(positions * rates)
    table[:, 1::2] = np.cos(positions * rates)[:, : width // 2]
    return table.astype(np.float32)


@keras.saving.register_keras_serializable(package="keras_captioning")
class TransformerCaptioner(CaptionModel, keras.Model):
    """Region grid -> (LayerNorm, Dense + ReLU to the model width, optional encoder layers) ->
    N decoder layers (causal self-attention, cross-attention over the regions, feed-forward) ->
    float32 logits over the vocabulary.

    All caption positions are trained at once (teacher forcing with a causal mask), where the
    recurrent models walk the caption one step at a time. Decoding keeps a key/value cache of
    the earlier positions (``init_decode`` / ``decode_step``), so one step costs one position;
    the cache is a fixed (B, ``max_positions``, H, K) tensor per layer, so beam search reorders
    it along the batch axis like any other state.

    Args:
        vocab_size: V.
        feature_dim: channels D of the region grid; num_regions: R (or None).
        model_dim: width of the decoder (and of the projected regions).
        num_heads: attention heads (``model_dim`` a multiple of it).
        ff_dim: inner width of the feed-forward blocks.
        num_layers: decoder layers.
        encoder_layers: self-attention layers over the regions before the decoder (0: none).
        norm: ``"pre"`` or ``"post"`` LayerNorm (see ``TransformerEncoderLayer``).
        positions: ``"learned"`` (an embedding per position) or ``"sinusoidal"`` (fixed).
        max_positions: positions the model can take: the longest teacher-forced input and the
            number of decoding steps. Decoding past it reuses the last position (the cache
            size is fixed), so keep it above ``eval.max_length`` (the config checks it).
        dropout: on embeddings, attention weights, every block's output and the feed-forward.
        attention_layer: the decoder layer whose cross-attention (heads averaged) is the
            attention map (-1: the last).
        pad_id, start_id, end_id: special token ids.

    Call:
        ``model({"features": (B, R, D), "tokens": (B, T) int}, training=False,
        return_attention=False)`` -> logits (B, T, V) float32, and attention (B, T, R)
        float32 when ``return_attention=True``.
    """

    def __init__(self, vocab_size, feature_dim=2048, num_regions=None, model_dim=512, num_heads=8, ff_dim=2048,
                 num_layers=2, encoder_layers=0, norm="pre", positions="learned", max_positions=64, dropout=0.1,
                 attention_layer=-1, pad_id=0, start_id=2, end_id=3, **kwargs):
        check_sizes(model_dim, num_heads, ff_dim, dropout, norm)
        if positions not in POSITIONS:
            raise CaptioningError(f"transformer: positions must be one of {POSITIONS}, got {positions!r}")
        if num_layers < 1 or encoder_layers < 0 or max_positions < 1:
            raise CaptioningError(f"transformer: need num_layers >= 1, encoder_layers >= 0, max_positions >= 1; got "
                                  f"{num_layers}, {encoder_layers}, {max_positions}")
        if not -num_layers <= attention_layer < num_layers:
            raise CaptioningError(f"transformer: attention_layer {attention_layer} is not one of the {num_layers} "
                                  "decoder layers (0 ... num_layers - 1, or -1 for the last)")
        super().__init__(**kwargs)
        policy = self.dtype_policy

        # === Layers ===
        self.feature_norm = keras.layers.LayerNormalization(epsilon=1e-5, dtype=policy, name="feature_norm")
        self.feature_projection = keras.layers.Dense(model_dim, activation="relu", dtype=policy,
                                                     name="feature_projection")
        self.encoder_stack = [TransformerEncoderLayer(model_dim, num_heads, ff_dim, dropout, norm, dtype=policy,
                                                      name=f"encoder_{i}") for i in range(encoder_layers)]
        self.token_embedding = keras.layers.Embedding(vocab_size, model_dim, dtype=policy, name="token_embedding")
        self.position_embedding = (keras.layers.Embedding(max_positions, model_dim, dtype=policy,
                                                          name="position_embedding")
                                   if positions == "learned" else None)
        self.decoder_stack = [TransformerDecoderLayer(model_dim, num_heads, ff_dim, dropout, norm, dtype=policy,
                                                      name=f"decoder_{i}") for i in range(num_layers)]
        # Pre-norm leaves the residual stream unnormalised: one LayerNorm before the logits.
        self.final_norm = (keras.layers.LayerNormalization(epsilon=1e-5, dtype=policy, name="final_norm")
                           if norm == "pre" else None)
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=policy, name="dropout")
        self.logits_dense = keras.layers.Dense(vocab_size, dtype="float32", name="logits")  # float32 logits

        # === Model ===
        # Every weight is created here from the configured sizes (as AttentionCaptioner does),
        # so the model is built before its first call and loads from a .keras file directly.
        self.feature_norm.build((None, num_regions, feature_dim))
        self.feature_projection.build((None, num_regions, feature_dim))
        shape = (None, None, model_dim)
        for layer in self.encoder_stack + self.decoder_stack:
            layer.build(shape)
        self.token_embedding.build((None, None))
        if self.position_embedding is not None:
            self.position_embedding.build((None,))
        if self.final_norm is not None:
            self.final_norm.build(shape)
        self.logits_dense.build(shape)
        self.built = True

        # === Config ===
        self.vocab_size = vocab_size
        self.feature_dim = feature_dim
        self.num_regions = num_regions
        self.model_dim = model_dim
        self.num_heads = num_heads
        self.ff_dim = ff_dim
        self.num_layers = num_layers
        self.encoder_layers = encoder_layers
        self.norm = norm
        self.positions = positions
        self.max_positions = max_positions
        self.dropout = dropout
        self.attention_layer = attention_layer
        self.pad_id = pad_id
        self.start_id = start_id
        self.end_id = end_id
        self._position_table = sinusoidal_positions(max_positions, model_dim) if positions == "sinusoidal" else None

    def build(self, input_shape=None):
        # Weights were created in __init__; nothing depends on the input shape.
        self.built = True

    def get_config(self):
        config = super().get_config()  # name, trainable, dtype
        config.update({
            "vocab_size": self.vocab_size, "feature_dim": self.feature_dim, "num_regions": self.num_regions, "model_dim": self.model_dim,
            "num_heads": self.num_heads, "ff_dim": self.ff_dim, "num_layers": self.num_layers,
            "encoder_layers": self.encoder_layers, "norm": self.norm, "positions": self.positions,
            "max_positions": self.max_positions, "dropout": self.dropout, "attention_layer": self.attention_layer,
            "pad_id": self.pad_id, "start_id": self.start_id, "end_id": self.end_id,
        })
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # ------------------------------------------------------------------ shared parts

    def encode(self, features, training=False):
        """Regions (B, R, D) -> (B, R, model_dim): normalised, projected, through the encoder layers."""
        x = self.feature_projection(self.feature_norm(ops.cast(features, "float32")))
        x = self.dropout_layer(x, training=training)
        for layer in self.encoder_stack:
            x = layer(x, training=training)
        return x

    def cross_keys_values(self, encoded):
        """Each decoder layer's cross-attention keys and values of the regions: [k0, v0, k1, v1, ...],
        each (B, R, H, K). Projected once per image, for all words and steps."""
        out = []
        for layer in self.decoder_stack:
            out += list(layer.cross_attention.project_key_value(encoded))
        return out

    def _embed(self, tokens, positions, training):
        """Tokens int (B, T) at positions int (B, T) -> (B, T, model_dim)."""
        x = self.token_embedding(ops.cast(tokens, "int32")) * math.sqrt(self.model_dim)
        positions = ops.minimum(ops.cast(positions, "int32"), self.max_positions - 1)
        if self.position_embedding is not None:
            x = x + self.position_embedding(positions)
        else:
            x = x + ops.cast(ops.take(ops.convert_to_tensor(self._position_table), positions, axis=0), x.dtype)
        return self.dropout_layer(x, training=training)

    def _attention_map(self, weights):
        """The chosen layer's cross-attention weights (B, H, T, R) -> heads averaged (B, T, R) float32."""
        return ops.mean(ops.cast(weights[self.attention_layer], "float32"), axis=1)

    def _output(self, x, training):
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self.logits_dense(self.dropout_layer(x, training=training))

    # ------------------------------------------------------------------ teacher forcing

    def _decode_all(self, cross, tokens, training):
        """All positions at once: hidden states (B, T, model_dim) and cross-attention weights per layer."""
        if tokens.shape[1] is not None and tokens.shape[1] > self.max_positions:
            raise CaptioningError(f"transformer: captions of {tokens.shape[1]} input tokens exceed "
                                  f"max_positions={self.max_positions} (model.transformer_max_positions); raise "
                                  "it or lower data.max_length")
        steps = ops.shape(tokens)[1]
        positions = ops.broadcast_to(ops.arange(steps)[None, :], ops.shape(tokens))
        x = self._embed(tokens, positions, training)
        weights = []
        for i, layer in enumerate(self.decoder_stack):
            x, w, _, _ = layer(x, cross[2 * i], cross[2 * i + 1], training=training)
            weights.append(w)
        return x, weights

    def call(self, inputs, training=None, return_attention=False):
        cross = self.cross_keys_values(self.encode(inputs["features"], training=training))
        hidden, weights = self._decode_all(cross, inputs["tokens"], training)
        logits = self._output(hidden, training)  # (B, T, V) float32
        if return_attention:
            return logits, self._attention_map(weights)
        return logits

    def compute_loss_logits_and_penalty(self, features, tokens, targets, training=False, image_index=None):
        """Logits only at real target positions: ``(targets (N,), logits (N, V), zero penalty)``.

        With ``image_index``, each of the G images is encoded and its cross-attention keys
        and values projected once, then repeated to its caption rows. The vocabulary
        softmax dominates the cost and padded targets do not count, so the logits layer runs
        on the real positions only (the same loss, gradients and metrics).
        """
        cross = self.cross_keys_values(self.encode(features, training=training))
        if image_index is not None:
            cross = [ops.take(c, image_index, axis=0) for c in cross]
        hidden, _ = self._decode_all(cross, tokens, training)
        targets = ops.cast(targets, "int32")
        real = ops.not_equal(targets, self.pad_id)  # (B, T)
        logits = self._output(tf.boolean_mask(hidden, real), training)  # (N, V) float32
        return tf.boolean_mask(targets, real), logits, ops.zeros((), "float32")

    # ------------------------------------------------------------------ decoding

    def init_decode(self, features):
        """Encode the regions and project every layer's cross-attention keys/values once.

        Returns ``(context, state)``: context = ``(k0, v0, k1, v1, ...)`` each (B, R, H, K);
        state = ``[step (B,) int32, cache_k0, cache_v0, ...]``, caches (B, max_positions, H, K)
        of zeros in the compute dtype.
        """
        cross = self.cross_keys_values(self.encode(ops.convert_to_tensor(features, "float32")))
        batch = ops.shape(cross[0])[0]
        cache = ops.zeros((batch, self.max_positions, self.num_heads, self.model_dim // self.num_heads),
                          dtype=self.compute_dtype)
        return tuple(cross), [ops.zeros((batch,), "int32")] + [cache] * (2 * self.num_layers)

    def decode_step(self, tokens, state, context):
        """One step: previous tokens (B,) -> (logits (B, V) float32, new state, attention (B, R) float32)."""
        step, caches = state[0], state[1:]
        x = self._embed(ops.expand_dims(tokens, 1), ops.expand_dims(step, 1), training=False)  # (B, 1, D)
        # Past the last position the cache is full: the step overwrites the last slot.
        slot = ops.minimum(step, self.max_positions - 1)
        new_caches, weights = [], []
        for i, layer in enumerate(self.decoder_stack):
            x, w, key, value = layer(x, context[2 * i], context[2 * i + 1], caches[2 * i], caches[2 * i + 1], slot)
            new_caches += [key, value]
            weights.append(w)
        logits = self._output(x[:, 0], training=False)
        return logits, [step + 1] + new_caches, self._attention_map(weights)[:, 0]
