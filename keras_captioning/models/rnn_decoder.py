"""Word decoder of the attention captioner: one recurrent step plus the output layers."""

import keras
from keras import ops

from keras_captioning.errors import CaptioningError

_CELLS = {"gru": keras.layers.GRUCell, "lstm": keras.layers.LSTMCell}


def gru_update(x, inner, h_prev):
    """The Keras GRU cell's update (``reset_after=True``) from its two projections.

    ``x`` = input projection + input bias, ``inner`` = ``h_prev`` projection + recurrent
    bias, both (B, 3U) in gate order z, r, h. Returns ``(h, (z, r, hh, i_h))``: the new
    state and what the fused loop's backward pass needs.
    """
    x_z, x_r, x_h = ops.split(x, 3, axis=-1)
    i_z, i_r, i_h = ops.split(inner, 3, axis=-1)
    z = ops.sigmoid(x_z + i_z)
    r = ops.sigmoid(x_r + i_r)
    hh = ops.tanh(x_h + r * i_h)
    return z * h_prev + (1 - z) * hh, (z, r, hh, i_h)


@keras.saving.register_keras_serializable(package="keras_captioning")
class RNNDecoder(keras.layers.Layer):
    """Embedding + recurrent cell + output layers, used one time step at a time.

    Per step (study): ``x_t = [c_t; E w_{t-1}]`` -> cell -> ``h_t``; then
    ``Dense(units)`` -> ``Dense(vocab)`` logits. With ``attention_vector=True`` the
    output layers read the paper's attention vector ``a_t = tanh(W_c [c_t; h_t])``
    instead of ``h_t``.

    The recurrence is split from the output layers so that the captioner can run
    only the recurrence inside its time loop and apply the output layers to all
    steps at once afterwards (they do not feed back into the recurrence).

    Cell initialisation: kernel and recurrent kernel both ``glorot_uniform``,
    as in the study (its GRU used ``recurrent_initializer='glorot_uniform'``;
    Keras' default recurrent initialiser would be orthogonal).

    Args:
        vocab_size: vocabulary size V.
        embedding_dim: word embedding size E (study: 256).
        units: cell size and size of the Dense before the logits (study: 512).
        rnn: ``"gru"`` (study) or ``"lstm"``.
        attention_vector: use ``a_t = tanh(W_c [c_t; h_t])`` before the output layers.
        dropout: dropout rate on word embeddings, on the state entering the output layers
            and before the logits layer.
    """

    def __init__(
        self,
        vocab_size,
        embedding_dim=256,
        units=512,
        rnn="gru",
        attention_vector=False,
        dropout=0.0,
        **kwargs,
    ):
        if rnn not in _CELLS:
            raise CaptioningError(f"rnn: unknown cell type {rnn!r}; use one of {sorted(_CELLS)}")
        super().__init__(**kwargs)
        policy = self.dtype_policy
        # === Layers ===
        self.embedding = keras.layers.Embedding(
            vocab_size, embedding_dim, embeddings_initializer="glorot_uniform", dtype=policy, name="embedding"
        )
        self.cell = _CELLS[rnn](
            units,
            kernel_initializer="glorot_uniform",
            recurrent_initializer="glorot_uniform",
            dtype=policy,
            name=f"{rnn}_cell",
        )
        self.attention_dense = (
            keras.layers.Dense(units, activation="tanh", use_bias=False, dtype=policy, name="W_c")
            if attention_vector
            else None
        )
        # The study's two output layers are both linear (no activation between them).
        self.hidden_dense = keras.layers.Dense(units, dtype=policy, name="hidden_dense")
        self.dropout_layer = keras.layers.Dropout(dropout, dtype=policy, name="dropout")
        # Logits in float32 under mixed precision.
        self.logits_dense = keras.layers.Dense(vocab_size, dtype="float32", name="logits")
        # === Config ===
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.units = units
        self.rnn = rnn
        self.attention_vector = attention_vector
        self.dropout = dropout

    def build(self, context_shape=None, tokens_shape=None, state_shape=None):
        """Create all weights for a context vector of shape (..., C).

        Keras passes the shapes of ``call``'s arguments by name; only the context's matters.
        """
        context_dim = context_shape[-1]
        self.embedding.build((None,))
        self.cell.build((None, context_dim + self.embedding_dim))
        if self.attention_dense is not None:
            self.attention_dense.build((None, context_dim + self.units))
        self.hidden_dense.build((None, self.units))
        self.logits_dense.build((None, self.units))

    def embed(self, tokens, training=False):
        """int (B,) or (B, T) -> (B, [T,] E), with dropout when training."""
        return self.dropout_layer(self.embedding(ops.cast(tokens, "int32")), training=training)

    def get_initial_state(self, batch_size):
        """Zero state: ``[h]`` for GRU, ``[h, c]`` for LSTM, each (B, units)."""
        return list(self.cell.get_initial_state(batch_size=batch_size))

    def cell_weights(self):
        """The cell's kernel split into its context / embedding rows, recurrent kernel and biases.

        The cell input is ``[c_t; E w]`` (study order), so ``x W = c_t W_c + (E w) W_e``
        with ``W_c`` the first C rows of the kernel. Weights are cast to the compute
        dtype (these methods use the cell's variables outside its ``__call__``).
        """
        dtype = self.compute_dtype
        kernel = ops.cast(self.cell.kernel, dtype)
        context_dim = kernel.shape[0] - self.embedding_dim
        recurrent = ops.cast(self.cell.recurrent_kernel, dtype)
        bias = ops.cast(self.cell.bias, dtype)
        if self.rnn == "gru":  # reset_after=True: bias (2, 3U) = input bias, recurrent bias
            input_bias, recurrent_bias = bias[0], bias[1]
        else:
            input_bias, recurrent_bias = bias, None
        return kernel[:context_dim], kernel[context_dim:], recurrent, input_bias, recurrent_bias

    def project_embedded(self, embedded):
        """The state-independent part of the cell's input projection.

        ``(B, [T,] E)`` embedded words -> ``(E w) W_e + b`` of shape (B, [T,] G*units)
        (G = 3 gates for GRU, 4 for LSTM). The captioner computes it for all time
        steps at once before its time loop; ``step`` adds the context part.
        """
        _, kernel_embedded, _, input_bias, _ = self.cell_weights()
        return ops.add(ops.matmul(embedded, kernel_embedded), input_bias)

    def step(self, projected_embedded, context, state, cell_weights=None, projected_state=None):
        """One recurrence step (the Keras GRU/LSTM cell equations, input split in two).

        Args:
            projected_embedded: (B, G*units) from ``project_embedded`` for this step.
            context: (B, C) attention context for this step.
            state: list of (B, units) tensors.
            cell_weights: ``cell_weights()``, to fetch and cast the weights once
                outside a time loop; default: fetched here.
            projected_state: ``h_{t-1} W_h`` (B, G*units) if already computed
                (the captioner fuses it with the attention query); default: computed here.

        Returns:
            ``(h, new_state)``: h (B, units), new_state a list like ``state``.
        """
        kernel_context, _, recurrent, _, recurrent_bias = cell_weights or self.cell_weights()
        x = ops.add(ops.matmul(context, kernel_context), projected_embedded)
        h_prev = state[0]
        inner = ops.matmul(h_prev, recurrent) if projected_state is None else projected_state
        units = self.units
        if self.rnn == "gru":
            h, _ = gru_update(x, ops.add(inner, recurrent_bias), h_prev)
            return h, [h]
        gates = x + inner
        i = ops.sigmoid(gates[:, :units])
        f = ops.sigmoid(gates[:, units : 2 * units])
        c = f * state[1] + i * ops.tanh(gates[:, 2 * units : 3 * units])
        o = ops.sigmoid(gates[:, 3 * units :])
        h = o * ops.tanh(c)
        return h, [h, c]

    def output_logits(self, hidden, context, training=False):
        """(B, [T,] units) states and (B, [T,] C) contexts -> logits (B, [T,] V) float32.

        Dropout (when training) on what enters the output layers (``h_t``, and ``c_t`` for the
        attention vector) and again before the logits layer, as Show, Attend and Tell does
        before its deep output layer.
        """
        hidden = self.dropout_layer(hidden, training=training)
        if self.attention_dense is not None:
            context = self.dropout_layer(context, training=training)
            hidden = self.attention_dense(ops.concatenate([context, hidden], axis=-1))  # a_t
        hidden = self.hidden_dense(hidden)
        return self.logits_dense(self.dropout_layer(hidden, training=training))

    def call(self, tokens, context, state, training=False):
        """One full decoding step: previous tokens (B,) -> (logits (B, V), new_state)."""
        projected = self.project_embedded(self.embed(tokens, training=training))
        hidden, new_state = self.step(projected, context, state)
        return self.output_logits(hidden, context, training=training), new_state

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "embedding_dim": self.embedding_dim,
                "units": self.units,
                "rnn": self.rnn,
                "attention_vector": self.attention_vector,
                "dropout": self.dropout,
            }
        )
        return config
