"""The study's attention captioner (Show, Attend and Tell style, Bahdanau attention)."""

import keras
import tensorflow as tf
from keras import ops

from keras_captioning.errors import CaptioningError
from keras_captioning.models.bahdanau_attention import BahdanauAttention
from keras_captioning.models.caption_model import CaptionModel
from keras_captioning.models.cnn_encoder import CNNEncoder
from keras_captioning.models.gru_attention_loop import gru_attention_loop
from keras_captioning.models.rnn_decoder import RNNDecoder
from keras_captioning.ranges import CHOICES

#: Values of ``init_state``: the study's zero state, or a state computed from the image.
INIT_STATES = CHOICES[("model", "init_state")]

# With ``unroll=None`` the time loop is unrolled when the number of steps is static
# and at most this; else tf.scan.
MAX_AUTO_UNROLL = 32


@keras.saving.register_keras_serializable(package="keras_captioning")
class AttentionCaptioner(CaptionModel, keras.Model):
    """CNN-region encoder + Bahdanau attention + GRU/LSTM decoder.

    Per time step t (teacher forcing: ``w_{t-1}`` is the true previous word)::

        c_t, alpha_t = attention(W1 h_s (precomputed), h_s, h_{t-1})
        h_t = cell([c_t; Embedding(w_{t-1})], h_{t-1})
        logits_t = Dense(vocab)(Dense(units)(h_t or a_t = tanh(W_c [c_t; h_t])))

    The time loop runs inside the graph. For a GRU it is ``gru_attention_loop``: a
    ``tf.while_loop`` with a hand-written backward pass, which in training runs each step
    only on the captions still going (``fused_backward``). Otherwise it is unrolled at
    trace time (static, short T) or one ``tf.scan``, differentiated by TF; see ``unroll``. The keys
    ``W1 h_s``, the word embeddings and their part of the cell's input projection
    are computed for all steps before the loop, the loop carries only the
    recurrent state, and the output layers run on all steps at once after it. The initial
    state is zeros (as in the study) or, with ``init_state="features"``, computed from the
    mean of the encoded regions as in Show, Attend and Tell: ``h_0 (, c_0) = tanh(W mean_r(a_r) + b)``.

    Args:
        vocab_size: vocabulary size V.
        feature_dim: size D of each region feature.
        num_regions: number of regions R if fixed (informational; any R works).
        embedding_dim: encoder output and word embedding size (study: 256).
        units: decoder cell size (study: 512).
        rnn: ``"gru"`` (study) or ``"lstm"``.
        attention_units: attention size A (study: 512).
        attention_vector: use ``a_t = tanh(W_c [c_t; h_t])`` before the output layers.
        dropout: dropout rate on word embeddings, on the state entering the output layers
            and before the logits layer.
        init_state: ``"zeros"`` (study) or ``"features"`` (the decoder's initial state is a
            tanh layer on the mean encoded region, Show, Attend and Tell's ``f_init``).
        attention_reg: weight lambda of the doubly stochastic attention penalty
            ``lambda * sum_regions (1 - sum_t alpha_t)^2`` (mean over the batch,
            real time steps only); 0 disables it.
        pad_id, start_id, end_id: special token ids.
        unroll: how the teacher-forced time loop runs in the graph. ``False``
            (default): one ``tf.scan`` (``tf.while_loop``). ``True``: unrolled at
            trace time when the number of steps T is static (captions padded to a
            fixed length), else ``tf.scan``. ``None``: unrolled when T is static and
            ``<= MAX_AUTO_UNROLL``. Either way no Python runs per step at run time;
            on a 2-core CPU the two were about equally fast (scan slightly ahead).
            Applies to LSTM decoders and to ``fused_backward=False``.
        fused_backward: GRU decoders (the study's) run the teacher-forced loop as
            ``gru_attention_loop``: a ``tf.while_loop`` with a hand-written backward pass
            that computes each weight's gradient once over all steps (same values as
            automatic differentiation, to float rounding) and, in training, runs each
            step only on the captions still going. ``False``, and under ``jit_compile``:
            TF's automatic differentiation of the loop (``unroll``).

    Call:
        ``model({"features": (B, R, D), "tokens": (B, T) int}, training=False,
        return_attention=False)`` -> logits (B, T, V) float32, and attention
        (B, T, R) float32 when ``return_attention=True``.
    """

    def __init__(
        self,
        vocab_size,
        feature_dim=2048,
        num_regions=None,
        embedding_dim=256,
        units=512,
        rnn="gru",
        attention_units=512,
        attention_vector=False,
        dropout=0.0,
        attention_reg=0.0,
        init_state="zeros",
        pad_id=0,
        start_id=2,
        end_id=3,
        unroll=False,
        fused_backward=True,
        **kwargs,
    ):
        if attention_reg < 0:
            raise CaptioningError(f"attention_reg: must be >= 0, got {attention_reg}")
        if init_state not in INIT_STATES:
            raise CaptioningError(f"init_state: expected one of {INIT_STATES}, got {init_state!r}")
        super().__init__(**kwargs)

        # === Layers ===
        # Sublayers take the model's dtype policy, so a captioner rebuilt from its config
        # computes in the precision it was saved with, whatever the global policy.
        self.encoder = CNNEncoder(embedding_dim, dtype=self.dtype_policy, name="encoder")
        self.attention = BahdanauAttention(attention_units, dtype=self.dtype_policy, name="attention")
        self.decoder = RNNDecoder(
            vocab_size,
            embedding_dim=embedding_dim,
            units=units,
            rnn=rnn,
            attention_vector=attention_vector,
            dropout=dropout,
            dtype=self.dtype_policy,
            name="decoder",
        )
        # h_0 (and c_0 for an LSTM) from the mean encoded region, one Dense for all of them.
        num_states = 2 if rnn == "lstm" else 1
        self.init_dense = (
            keras.layers.Dense(num_states * units, activation="tanh", kernel_initializer="glorot_uniform",
                               dtype=self.dtype_policy, name="init_state")
            if init_state == "features"
            else None
        )

        # === Model ===
        # A subclassed model: the wiring is in call(). All weights are created
        # here from the configured sizes, so the model is built before its first
        # call (needed because the sublayers are called inside a while loop,
        # where variables cannot be created).
        self.encoder.build((None, num_regions, feature_dim))
        self.attention.build(features_shape=(None, num_regions, embedding_dim), hidden_shape=(None, units))
        self.decoder.build(context_shape=(None, embedding_dim))
        if self.init_dense is not None:
            self.init_dense.build((None, embedding_dim))
        self.built = True

        # === Config ===
        self.vocab_size = vocab_size
        self.feature_dim = feature_dim
        self.num_regions = num_regions
        self.embedding_dim = embedding_dim
        self.units = units
        self.rnn = rnn
        self.attention_units = attention_units
        self.attention_vector = attention_vector
        self.dropout = dropout
        self.attention_reg = attention_reg
        self.init_state = init_state
        self.pad_id = pad_id
        self.start_id = start_id
        self.end_id = end_id
        self.unroll = unroll
        self.fused_backward = fused_backward

    def build(self, input_shape=None):
        # Weights were created in __init__; nothing depends on the input shape.
        self.built = True

    def get_config(self):
        config = super().get_config()  # name, trainable, dtype
        config.update({
            "vocab_size": self.vocab_size,
            "feature_dim": self.feature_dim,
            "num_regions": self.num_regions,
            "embedding_dim": self.embedding_dim,
            "units": self.units,
            "rnn": self.rnn,
            "attention_units": self.attention_units,
            "attention_vector": self.attention_vector,
            "dropout": self.dropout,
            "attention_reg": self.attention_reg,
            "init_state": self.init_state,
            "pad_id": self.pad_id,
            "start_id": self.start_id,
            "end_id": self.end_id,
            "unroll": self.unroll,
            "fused_backward": self.fused_backward,
        })
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # ------------------------------------------------------------------ teacher forcing

    def _step_weights(self):
        """Weights of one step, fetched (and cast) once per call, outside the time loop.

        ``h_{t-1}`` feeds both the attention query ``W2 h_{t-1}`` and the cell's
        recurrent projection ``h_{t-1} W_h``: one matmul with ``[W_h | W2]``.
        """
        cell_weights = self.decoder.cell_weights()
        dtype = self.decoder.compute_dtype
        fused = ops.concatenate([cell_weights[2], ops.cast(self.attention.W2.kernel, dtype)], axis=-1)
        return cell_weights, fused, ops.cast(self.attention.W2.bias, dtype)

    def _attend_and_step(self, projected_embedded, state, encoded, keys, step_weights):
        """Shared by the training loop and decode_step: attention on h_{t-1}, then the cell.

        ``projected_embedded`` is ``decoder.project_embedded(E w_{t-1})``: the part of
        the cell's input projection that does not depend on the state.
        """
        cell_weights, fused, query_bias = step_weights
        both = ops.matmul(state[0], fused)  # (B, G*units + A)
        gates = cell_weights[2].shape[-1]
        query = ops.add(both[:, gates:], query_bias)  # W2 h_{t-1}
        context, weights = self.attention.attend(keys, encoded, query)  # (B, E), (B, R)
        hidden, state = self.decoder.step(
            projected_embedded, context, state, cell_weights=cell_weights, projected_state=both[:, :gates]
        )  # (B, units)
        return hidden, state, context, weights

    def _initial_state(self, encoded):
        """The decoder's state before the first word: zeros, or from the mean region (B, R, E)."""
        if self.init_dense is None:
            return self.decoder.get_initial_state(ops.shape(encoded)[0])
        states = self.init_dense(ops.mean(encoded, axis=1))  # (B, S*units)
        return list(ops.split(states, 2 if self.rnn == "lstm" else 1, axis=-1))  # [h] or [h, c]

    def _use_unrolled_loop(self, steps):
        """Unroll the time loop at trace time iff the number of steps is static and small enough."""
        if steps is None:
            return False
        if self.unroll is None:
            return steps <= MAX_AUTO_UNROLL
        return bool(self.unroll)

    def call(self, inputs, training=None, return_attention=False):
        hiddens, contexts, weights = self._run_decoder(inputs["features"], inputs["tokens"], training)
        logits = self.decoder.output_logits(hiddens, contexts, training=training)  # (B, T, V) float32
        if return_attention:
            return logits, weights  # (B, T, R) float32
        return logits

    def _run_decoder(self, features, tokens, training, image_index=None, lengths=None):
        """Teacher-forced recurrence: hidden states (B, T, units), contexts (B, T, E), attention (B, T, R).

        With ``image_index`` (B,), ``features`` holds G distinct images: they are encoded and
        projected into attention keys once, then repeated to the B caption rows. With
        ``lengths`` (B,), the real target tokens per row, the fused GRU loop skips the
        rows that have ended (their later outputs are zeros; callers mask them out).
        """
        encoded = self.encoder(features)  # (B, R, E), or (G, R, E)
        keys = self.attention.project_keys(encoded)  # (B, R, A): once per image, not per step
        if image_index is not None:
            encoded, keys = ops.take(encoded, image_index, axis=0), ops.take(keys, image_index, axis=0)
        embedded = self.decoder.embed(tokens, training=training)  # (B, T, E)
        # (E w) W_e + b for all steps at once: only the context part of the cell's
        # input projection depends on the state and stays inside the loop.
        projected = self.decoder.project_embedded(embedded)  # (B, T, G*units)

        batch = ops.shape(embedded)[0]
        state = self._initial_state(encoded)
        steps = tokens.shape[1]
        step_weights = self._step_weights()
        # XLA (jit_compile) needs static shapes: the fused loop's active rows are not.
        if self.rnn == "gru" and self.fused_backward and not getattr(self, "jit_compile", False):
            (kernel_context, _, _, _, recurrent_bias), fused, query_bias = step_weights
            score = self.attention.V
            dtype = projected.dtype
            return gru_attention_loop(
                projected, encoded, keys, state[0], kernel_context, fused, query_bias, recurrent_bias,
                ops.cast(score.kernel, dtype), ops.cast(score.bias, dtype), lengths=lengths,
            )
        if self._use_unrolled_loop(steps):
            # Static, short time axis: the loop is unrolled into the graph at trace
            # time (no Python per step at run time, no while_loop / TensorArray
            # overhead in the forward and backward passes).
            hiddens, contexts, weights = [], [], []
            for t in range(steps):
                hidden, state, context, weight = self._attend_and_step(
                    projected[:, t], state, encoded, keys, step_weights
                )
                hiddens.append(hidden)
                contexts.append(context)
                weights.append(weight)
            hiddens = ops.stack(hiddens, axis=1)  # (B, T, units)
            contexts = ops.stack(contexts, axis=1)  # (B, T, E)
            weights = ops.stack(weights, axis=1)  # (B, T, R)
        else:
            zero_hidden = ops.zeros((batch, self.units), dtype=state[0].dtype)
            zero_context = ops.zeros((batch, self.embedding_dim), dtype=encoded.dtype)
            zero_weights = ops.zeros((batch, ops.shape(encoded)[1]), dtype="float32")

            def step(carry, projected_t):
                hidden, state, context, weights = self._attend_and_step(
                    projected_t, carry[0], encoded, keys, step_weights
                )
                return (state, hidden, context, weights)

            # tf.scan = tf.while_loop over the time axis, inside the graph; it stacks
            # every step's carry (state, hidden, context, weights) on a new axis 0.
            _, hiddens, contexts, weights = tf.scan(
                step,
                tf.transpose(projected, (1, 0, 2)),  # time-major (T, B, G*units)
                initializer=(state, zero_hidden, zero_context, zero_weights),
            )
            hiddens = tf.transpose(hiddens, (1, 0, 2))  # (B, T, units)
            contexts = tf.transpose(contexts, (1, 0, 2))  # (B, T, E)
            weights = tf.transpose(weights, (1, 0, 2))  # (B, T, R)
        return hiddens, contexts, weights

    def compute_loss_logits_and_penalty(self, features, tokens, targets, training=False, image_index=None):
        """Logits only at real target positions: ``(targets (N,), logits (N, V), penalty)``.

        The output layers (the 5000-word softmax dominates) do not feed back into
        the recurrence, so they run only where the target is a real token; padded
        positions do not count in the loss or the metrics, so loss, gradients and
        metrics are those of the full (B, T, V) logits.
        """
        targets = ops.cast(targets, "int32")
        real = ops.not_equal(targets, self.pad_id)  # (B, T)
        # Steps each row needs: up to its last real target (padding is at the end of a row).
        positions = ops.arange(1, ops.shape(targets)[1] + 1, dtype="int32")
        lengths = ops.max(ops.where(real, positions, 0), axis=1)
        hiddens, contexts, attention = self._run_decoder(features, tokens, training, image_index, lengths)
        logits = self.decoder.output_logits(
            tf.boolean_mask(hiddens, real), tf.boolean_mask(contexts, real), training=training
        )  # (N, V) float32
        return tf.boolean_mask(targets, real), logits, self._attention_penalty(attention, targets)

    def _attention_penalty(self, attention, targets):
        if not self.attention_reg:
            return ops.zeros((), "float32")
        real = ops.cast(ops.not_equal(targets, self.pad_id), "float32")  # (B, T)
        coverage = ops.sum(attention * ops.expand_dims(real, -1), axis=1)  # (B, R)
        penalty = ops.mean(ops.sum(ops.square(1.0 - coverage), axis=-1))
        return self.attention_reg * penalty

    def compute_logits_and_penalty(self, features, tokens, targets, training=False):
        """Logits and the doubly stochastic attention penalty (0 if attention_reg == 0).

        ``penalty = attention_reg * mean_batch sum_regions (1 - sum_t alpha_{t,r})^2``
        where the time sum runs over steps whose target is a real token.
        """
        inputs = {"features": features, "tokens": tokens}
        if not self.attention_reg:
            return self(inputs, training=training), ops.zeros((), "float32")
        logits, attention = self(inputs, training=training, return_attention=True)
        return logits, self._attention_penalty(attention, targets)

    # ------------------------------------------------------------------ decoding

    def init_decode(self, features):
        """Encode the regions and project the attention keys once.

        Args:
            features: float (B, R, D).

        Returns:
            ``(context, state)``: context = ``(encoded (B, R, E), keys (B, R, A))``;
            state = the initial state (``init_state``), ``[h]`` (GRU) or ``[h, c]`` (LSTM),
            each (B, units).
        """
        encoded = self.encoder(ops.convert_to_tensor(features, "float32"))
        keys = self.attention.project_keys(encoded)
        return (encoded, keys), self._initial_state(encoded)

    def decode_step(self, tokens, state, context):
        """One step: previous tokens (B,) -> (logits (B, V) float32, new state, attention (B, R) float32)."""
        encoded, keys = context
        projected = self.decoder.project_embedded(self.decoder.embed(tokens))
        hidden, state, step_context, weights = self._attend_and_step(
            projected, state, encoded, keys, self._step_weights()
        )
        return self.decoder.output_logits(hidden, step_context), state, weights
