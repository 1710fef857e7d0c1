"""The attention captioner's teacher-forced GRU loop with a hand-written backward pass.

TF's automatic differentiation of a time loop (``tf.scan`` or unrolled) differentiates
every step on its own: each step computes full-size gradients for the loop-invariant
weights (the 512 x 2 048 recurrent matrix, the context kernel) and adds them up, and
computes ``dh_{t-1} = g W^T`` with a transposed operand, which CPU matmul kernels run
about 2.5x slower than the same product on a transposed copy. Here the backward loop
carries only the state gradient (``g`` times ``W^T`` transposed once before the loop) and
the attention keys' gradient; the weight gradients (and the regions') are one large matmul
each after the loop, over all steps at once (as cuDNN's RNN backward does).

In training, the rows are sorted longest first and step t runs only on the captions that
still have a real target at t (PyTorch's packed sequences): with Flickr8k's lengths in
image-major batches a third of the recurrent steps were padding. Slicing a prefix of rows
does not copy in TF. On 2 cores at the study's sizes (64 x 2048 grid, 512 units, vocabulary
5 000) `make bench`'s real-lengths training step went from 1 670 to 2 465 real tokens/s.

Per step t, with ``h = h_{t-1}`` (the Keras GRU cell, ``reset_after=True``)::

    [i | q'] = h [W_h | W_2]            i: recurrent gates (B, 3U), q' (B, A)
    q        = q' + b_2                  the attention query W_2 h + b_2
    th       = tanh(keys + q)            (B, R, A)
    alpha    = softmax(th v + b_v)       over the R regions, in float32
    c        = sum_r alpha_r enc_r       (B, E)
    x        = c W_c + p_t               p_t = (E w_{t-1}) W_e + b_in, computed before the loop
    z, r     = sigmoid(x_z + i_z + b_z), sigmoid(x_r + i_r + b_r)
    hh       = tanh(x_h + r (i_h + b_h))
    h_t      = z h + (1 - z) hh

``gru_attention_loop`` returns the hidden states, contexts and attention weights of all
steps; ``tests/test_gru_attention_loop.py`` checks its values and gradients against
automatic differentiation of the same loop.
"""

import tensorflow as tf

from keras_captioning.models.rnn_decoder import gru_update


def gru_attention_loop(projected, encoded, keys, initial_state, kernel_context, fused, query_bias,
                       recurrent_bias, score_kernel, score_bias, lengths=None):
    """Run the teacher-forced loop; differentiable with the hand-written backward pass.

    Args:
        projected: (B, T, 3U) ``(E w_{t-1}) W_e + b_in`` for every step.
        encoded: (B, R, E) encoded regions.
        keys: (B, R, A) ``W_1 enc + b_1``.
        initial_state: (B, U) ``h_0``.
        kernel_context: (E, 3U) the cell kernel's rows for the context.
        fused: (U, 3U + A) ``[W_h | W_2]``.
        query_bias: (A,) ``b_2``.
        recurrent_bias: (3U,) the cell's recurrent bias.
        score_kernel: (A, 1) ``v``; score_bias: (1,) ``b_v``.
        lengths: optional int (B,): the steps each row needs (its real target tokens).
            The rows are then run longest first and each step computes only the rows
            still going (PyTorch's packed sequences); the outputs of a row's steps past
            its length are zeros instead of the recurrence's values, so use this only
            where those steps are masked out (the loss and the attention penalty).

    All in one floating dtype (the compute dtype). Returns ``(hiddens (B, T, U),
    contexts (B, T, E), weights (B, T, R) float32)``.
    """
    steps = tf.shape(projected)[1]
    if lengths is None:
        active = tf.fill([steps], tf.shape(projected)[0])
        return _loop(projected, encoded, keys, initial_state, kernel_context, fused, query_bias, recurrent_bias,
                     score_kernel, score_bias, active)
    lengths = tf.cast(lengths, tf.int32)
    order = tf.argsort(lengths, direction="DESCENDING", stable=True)
    active = tf.reduce_sum(
        tf.cast(tf.gather(lengths, order)[None, :] > tf.range(steps)[:, None], tf.int32), axis=1)  # (T,)
    sort = lambda x: tf.gather(x, order)  # noqa: E731
    outputs = _loop(sort(projected), sort(encoded), sort(keys), sort(initial_state), kernel_context, fused,
                    query_bias, recurrent_bias, score_kernel, score_bias, active)
    inverse = tf.math.invert_permutation(order)
    return tuple(tf.gather(x, inverse) for x in outputs)


def _scores(th, v, score_bias):
    """``th v + b_v``: (N, R, A) x (A,) -> (N, R), as one (N*R, A) x (A, 1) matmul."""
    shape = tf.shape(th)
    flat = tf.matmul(tf.reshape(th, (-1, shape[2])), tf.reshape(v, (-1, 1)))
    return tf.reshape(flat, shape[:2]) + score_bias


def _time_loop(step, steps, carry, specs, reverse=False):
    """``tf.while_loop`` of ``carry, outputs = step(t, carry)`` for t = 0..T-1 (or backwards).

    ``specs``: one ``(dtype, shape)`` per output, the shape's first dimension None: the rows
    may change from step to step, as may the carry's. Returns the last carry and one
    TensorArray per output. (Unrolling the loop at trace time measured slower on CPU.)
    """

    def body(t, carry, arrays):
        carry, values = step(t, carry)
        return t + (-1 if reverse else 1), carry, [a.write(t, v) for a, v in zip(arrays, values)]

    arrays = [tf.TensorArray(dtype, size=steps, infer_shape=False, element_shape=shape) for dtype, shape in specs]
    rows_vary = tf.nest.map_structure(lambda x: tf.TensorShape([None]).concatenate(x.shape[1:]), carry)
    _, carry, arrays = tf.while_loop(
        (lambda t, *_: t >= 0) if reverse else (lambda t, *_: t < steps), body,
        (steps - 1 if reverse else 0, carry, arrays),
        shape_invariants=(tf.TensorShape([]), rows_vary, [tf.TensorShape(None)] * len(arrays)),
    )
    return carry, arrays


def _pad_rows(x, rows):
    """Zero rows appended to ``x`` (N, ...) up to ``rows``."""
    return tf.pad(x, [[0, rows - tf.shape(x)[0]]] + [[0, 0]] * (x.shape.rank - 1))


@tf.custom_gradient
def _loop(projected, encoded, keys, initial_state, kernel_context, fused, query_bias, recurrent_bias,
          score_kernel, score_bias, active):
    """The loop over rows sorted longest first; ``active[t]`` rows run at step t (non-increasing)."""
    dtype = projected.dtype
    gates = kernel_context.shape[-1]
    batch = tf.shape(projected)[0]
    steps = tf.shape(projected)[1]
    projected_tm = tf.transpose(projected, (1, 0, 2))  # (T, B, 3U)
    v = tf.reshape(score_kernel, (-1,))

    def forward(t, h):
        n = active[t]
        h = h[:n]  # the rows still going: a prefix, as the rows are sorted longest first
        both = tf.matmul(h, fused)  # (n, 3U + A)
        inner = both[:, :gates] + recurrent_bias
        th = tf.tanh(keys[:n] + tf.expand_dims(both[:, gates:] + query_bias, 1))  # (n, R, A)
        alpha = tf.nn.softmax(tf.cast(_scores(th, v, score_bias), tf.float32), axis=-1)  # (n, R)
        context = tf.squeeze(tf.matmul(tf.expand_dims(tf.cast(alpha, dtype), 1), encoded[:n]), 1)  # (n, E)
        h_new, gate_values = gru_update(tf.matmul(context, kernel_context) + projected_tm[t][:n], inner, h)
        return h_new, (_pad_rows(h_new, batch), _pad_rows(context, batch), _pad_rows(alpha, batch), th,
                       tf.concat(gate_values, axis=-1))

    rows = lambda *dims: tf.TensorShape([None, *dims])  # noqa: E731
    units, regions, attention_units = initial_state.shape[1], keys.shape[1], keys.shape[2]
    _, (hiddens, contexts, weights, tanhs, gate_values) = _time_loop(
        forward, steps, initial_state,
        ((dtype, rows(units)), (dtype, rows(encoded.shape[2])), (tf.float32, rows(regions)),
         (dtype, rows(regions, attention_units)), (dtype, rows(4 * units))))
    hiddens_tm, contexts_tm, weights_tm = hiddens.stack(), contexts.stack(), weights.stack()  # (T, B, ·)
    outputs = (tf.transpose(hiddens_tm, (1, 0, 2)), tf.transpose(contexts_tm, (1, 0, 2)),
               tf.transpose(weights_tm, (1, 0, 2)))

    def backward(d_hiddens, d_contexts, d_weights):
        # An output that nothing downstream used arrives as None.
        d_hiddens = tf.zeros_like(outputs[0]) if d_hiddens is None else d_hiddens
        d_contexts = tf.zeros_like(outputs[1]) if d_contexts is None else d_contexts
        d_weights = tf.zeros_like(outputs[2]) if d_weights is None else d_weights
        d_hiddens_tm = tf.transpose(d_hiddens, (1, 0, 2))
        d_contexts_tm = tf.transpose(d_contexts, (1, 0, 2))
        d_weights_tm = tf.transpose(tf.cast(d_weights, tf.float32), (1, 0, 2))
        previous_tm = tf.concat([tf.expand_dims(initial_state, 0), hiddens_tm[:-1]], axis=0)  # h_{t-1}
        fused_t = tf.transpose(fused)  # transposed once: the per-step products below run untransposed
        kernel_context_t = tf.transpose(kernel_context)
        v_row = tf.reshape(v, (1, 1, -1))

        def step(t, carry):
            # The carried gradients hold the rows of step t + 1; step t runs n >= as many.
            d_h_next, d_keys, d_v = carry
            n = active[t]
            z, r, hh, i_h = tf.split(gate_values.read(t), 4, axis=-1)
            d_h = d_hiddens_tm[t][:n] + _pad_rows(d_h_next, n)
            d_a_h = d_h * (1 - z) * (1 - hh * hh)  # through hh = tanh(a_h)
            d_z = d_h * (previous_tm[t][:n] - hh) * z * (1 - z)
            d_r = d_a_h * i_h * r * (1 - r)
            d_x = tf.concat([d_z, d_r, d_a_h], axis=-1)  # (n, 3U): also d projected_t
            d_inner = tf.concat([d_z, d_r, d_a_h * r], axis=-1)
            d_c = d_contexts_tm[t][:n] + tf.matmul(d_x, kernel_context_t)  # (n, E)
            alpha = weights_tm[t][:n]  # (n, R) float32
            d_alpha = tf.cast(tf.squeeze(tf.matmul(encoded[:n], tf.expand_dims(d_c, -1)), -1), tf.float32)
            d_alpha += d_weights_tm[t][:n]
            d_s = alpha * (d_alpha - tf.reduce_sum(alpha * d_alpha, axis=-1, keepdims=True))  # softmax
            d_s = tf.cast(d_s, dtype)
            th = tanhs.read(t)
            d_pre = tf.raw_ops.TanhGrad(y=th, dy=tf.expand_dims(d_s, -1) * v_row)  # (n, R, A)
            d_v += tf.reshape(tf.matmul(tf.reshape(d_s, (1, -1)), tf.reshape(th, (-1, tf.shape(th)[2]))), (-1,))
            carried = tf.shape(d_keys)[0]
            d_keys = tf.concat([d_keys + d_pre[:carried], d_pre[carried:]], axis=0)
            d_both = tf.concat([d_inner, tf.reduce_sum(d_pre, axis=1)], axis=-1)  # (n, 3U + A)
            d_h_prev = d_h * z + tf.matmul(d_both, fused_t)
            return (d_h_prev, d_keys, d_v), (_pad_rows(d_both, batch), _pad_rows(d_x, batch),
                                             _pad_rows(d_c, batch))

        zeros = lambda x: tf.zeros(tf.concat([[0], tf.shape(x)[1:]], 0), x.dtype)  # noqa: E731
        (d_h0, d_keys, d_v), (d_both_all, d_x_all, d_c_all) = _time_loop(
            step, steps, (zeros(initial_state), zeros(keys), tf.zeros_like(v)),
            ((dtype, rows(gates + attention_units)), (dtype, rows(gates)), (dtype, rows(encoded.shape[2]))),
            reverse=True)
        d_both_all, d_x_all, d_c_all = d_both_all.stack(), d_x_all.stack(), d_c_all.stack()  # (T, B, ·)
        # Loop-invariant weights: one product over all steps each.
        flat = lambda x: tf.reshape(x, (-1, x.shape[-1]))  # noqa: E731
        d_fused = tf.matmul(flat(previous_tm), flat(d_both_all), transpose_a=True)
        d_kernel_context = tf.matmul(flat(contexts_tm), flat(d_x_all), transpose_a=True)
        d_both_sum = tf.reduce_sum(flat(d_both_all), axis=0)
        # c_t = sum_r alpha_tr enc_r for every t: d enc = sum_t alpha_t^T d c_t, batched over rows.
        d_encoded = tf.matmul(tf.cast(tf.transpose(weights_tm, (1, 2, 0)), dtype),
                              tf.transpose(d_c_all, (1, 0, 2)))  # (B, R, T) x (B, T, E)
        return (tf.transpose(d_x_all, (1, 0, 2)), d_encoded, _pad_rows(d_keys, batch), _pad_rows(d_h0, batch),
                d_kernel_context, d_fused, d_both_sum[gates:], d_both_sum[:gates], tf.reshape(d_v, (-1, 1)),
                tf.zeros_like(score_bias), None)

    return outputs, backward
