"""The study's 'vanilla' captioner: the merge design (image and caption meet after the LSTM)."""

import keras
from keras import ops

from keras_captioning.errors import CaptioningError
from keras_captioning.models.caption_model import CaptionModel


@keras.saving.register_keras_serializable(package="keras_captioning")
class MergeCaptioner(CaptionModel, keras.Model):
    """Merge captioner (paper's vanilla model) as a functional Keras model.

    Graph::

        features (B, D) -> Dropout -> Dense(units, relu) --------------------+
        tokens (B, T) -> Embedding(mask_zero) -> Dropout -> LSTM(seq) -> add(broadcast over T)
                                                 -> Dense(units, relu) -> Dense(vocab) logits (B, T, V) float32

    Built with Keras's public functional constructor (``super().__init__(inputs=,
    outputs=)``), which re-bases this class on Keras's functional model; ``CaptionModel``
    is a plain mixin, so it is left alone and its train/test steps come first in the MRO.

    Args:
        vocab_size: vocabulary size V including the special tokens.
        feature_dim: size D of the pooled image vector.
        embedding_dim: word embedding size.
        units: LSTM size, and size of the image projection and the merge layer.
        dropout: dropout rate on the image vector and on the word embeddings.
        max_length: default maximum caption length (stored config only; the token
            input accepts any length).
        pad_id, start_id, end_id: special token ids. ``pad_id`` must be 0 because
            the embedding masks id 0.
    """

    def __init__(
        self,
        vocab_size,
        feature_dim=2048,
        embedding_dim=256,
        units=256,
        dropout=0.5,
        max_length=None,
        pad_id=0,
        start_id=2,
        end_id=3,
        **kwargs,
    ):
        if pad_id != 0:
            raise CaptioningError(
                f"pad_id: the merge captioner masks token id 0 (Embedding mask_zero), got pad_id={pad_id}; "
                "build the vocabulary with <pad> = 0"
            )
        # Every sublayer takes the model's dtype policy (None: the global one), so a
        # captioner rebuilt from its config computes in the precision it was saved with.
        dtype = kwargs.get("dtype")
        # === Layers ===
        self.image_dropout = keras.layers.Dropout(dropout, dtype=dtype, name="image_dropout")
        self.image_projection = keras.layers.Dense(
            units, activation="relu", kernel_initializer="glorot_uniform", dtype=dtype, name="image_projection"
        )
        self.embedding = keras.layers.Embedding(
            vocab_size,
            embedding_dim,
            mask_zero=True,
            embeddings_initializer="glorot_uniform",
            dtype=dtype,
            name="embedding",
        )
        self.embedding_dropout = keras.layers.Dropout(dropout, dtype=dtype, name="embedding_dropout")
        # Keras' default LSTM initialisers are glorot_uniform (kernel) and
        # orthogonal (recurrent); we keep them.
        self.lstm = keras.layers.LSTM(units, return_sequences=True, dtype=dtype, name="lstm")
        self.merge = keras.layers.Add(dtype=dtype, name="merge")
        self.merge_dense = keras.layers.Dense(
            units, activation="relu", kernel_initializer="glorot_uniform", dtype=dtype, name="merge_dense"
        )
        # Logits stay float32 under a mixed_float16 policy (stable softmax / loss).
        self.logits_dense = keras.layers.Dense(
            vocab_size, kernel_initializer="glorot_uniform", dtype="float32", name="logits"
        )

        # === Functional Model ===
        features = keras.Input(shape=(feature_dim,), dtype="float32", name="features")
        tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
        image = self.image_projection(self.image_dropout(features))  # (B, units)
        words = self.embedding_dropout(self.embedding(tokens))  # (B, T, embedding_dim)
        # Teacher forcing over all positions at once. The original merge recipe
        # expands each caption into (prefix, next word) pairs and runs the LSTM
        # over every prefix separately, keeping its last output. The LSTM is
        # causal, so its output at position t depends only on tokens[:t + 1] and
        # equals the last output on that prefix; masked (padding) steps carry the
        # state through unchanged. One pass with return_sequences therefore gives
        # every prefix's prediction, i.e. the same per-pair losses, at the cost of
        # one LSTM run per caption instead of one per word.
        sequence = self.lstm(words)  # (B, T, units)
        image_per_step = keras.layers.Reshape((1, units), dtype=dtype, name="image_per_step")(image)  # (B, 1, units)
        merged = self.merge([sequence, image_per_step])  # broadcast add -> (B, T, units)
        logits = self.logits_dense(self.merge_dense(merged))  # (B, T, V) float32
        super().__init__(inputs={"features": features, "tokens": tokens}, outputs=logits, **kwargs)
        if dtype is not None:  # Keras's functional constructor ignores ``dtype``
            self.dtype_policy = dtype

        # === Config ===
        self.vocab_size = vocab_size
        self.feature_dim = feature_dim
        self.embedding_dim = embedding_dim
        self.units = units
        self.dropout = dropout
        self.max_length = max_length
        self.pad_id = pad_id
        self.start_id = start_id
        self.end_id = end_id

    def get_config(self):
        # Keras's functional get_config gives a layer graph only for a constructor taking
        # (inputs, outputs); ours does not, so super() gives name, trainable and dtype.
        # The constructor rebuilds the same graph from the sizes.
        config = super().get_config()
        config.update({
            "vocab_size": self.vocab_size,
            "feature_dim": self.feature_dim,
            "embedding_dim": self.embedding_dim,
            "units": self.units,
            "dropout": self.dropout,
            "max_length": self.max_length,
            "pad_id": self.pad_id,
            "start_id": self.start_id,
            "end_id": self.end_id,
        })
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # ------------------------------------------------------------------ decoding

    def init_decode(self, features):
        """Project the image once.

        Args:
            features: float (B, feature_dim) pooled image vectors.

        Returns:
            ``(context, state)``: context = image projection (B, units) in the
            compute dtype; state = ``[h, c]`` zeros, each (B, units).
        """
        features = ops.convert_to_tensor(features, "float32")
        context = self.image_projection(features)
        state = self.lstm.cell.get_initial_state(batch_size=ops.shape(features)[0])
        return context, list(state)

    def decode_step(self, tokens, state, context):
        """Feed one token per image through the LSTM cell.

        Args:
            tokens: int (B,) previous tokens.
            state: ``[h, c]`` from ``init_decode`` or the previous step.
            context: the image projection (B, units).

        Returns:
            ``(logits (B, V) float32, [h, c], None)`` (no attention).
        """
        # Same lookup as self.embedding, minus the padding mask Keras would attach
        # (the LSTM cell takes no mask, and one token per step needs none).
        words = ops.cast(
            ops.take(self.embedding.embeddings, ops.cast(tokens, "int32"), axis=0),
            self.embedding.compute_dtype,
        )  # (B, embedding_dim)
        output, state = self.lstm.cell(words, state, training=False)  # (B, units)
        merged = self.merge([output, context])
        logits = self.logits_dense(self.merge_dense(merged))
        return logits, list(state), None


def build_merge_captioner(vocab_size, **kwargs):
    """Build the merge ('vanilla') captioner; keyword arguments as in ``MergeCaptioner``."""
    kwargs.setdefault("name", "merge_captioner")
    return MergeCaptioner(vocab_size=vocab_size, **kwargs)
