"""Batched beam search over a model's decode_step."""

import numpy as np
import tensorflow as tf

from keras_captioning.decoding import _common
from keras_captioning.decoding.result import DecodeResult
from keras_captioning.errors import CaptioningError


def _length_penalty(steps, alpha):
    """GNMT length penalty ``((5 + n) / 6) ** alpha`` (Wu et al. 2016); 1 when alpha = 0."""
    return tf.pow((5.0 + tf.cast(steps, tf.float32)) / 6.0, alpha)


def _beam_loop(model, features, max_length, beam_width, alpha, num_return):
    """The search itself, called inside a tf.function; returns a dict of (B, N, ...) tensors."""
    k, steps_total = beam_width, max_length
    pad, end = model.pad_id, model.end_id
    batch = tf.shape(features)[0]
    context, state = model.init_decode(features)
    # Beams of one image sit next to each other: rows b*k ... b*k + k - 1. They
    # share the image's context, so only the state is re-ordered between steps.
    context = tf.nest.map_structure(lambda x: tf.repeat(x, k, axis=0), context)
    state = tf.nest.map_structure(lambda x: tf.repeat(x, k, axis=0), state)
    neg_inf = tf.constant(-np.inf, tf.float32)

    def advance(step, logits, attention, state, scores, finished, lengths, steps, seqs, maps):
        vocab = tf.shape(logits)[-1]
        logp = tf.reshape(_common.log_probs(logits, model), [batch, k, vocab])  # (B, k, V)
        # A finished beam has one continuation, PAD, at no cost: it keeps its
        # place and score and competes with the live beams until the end.
        only_pad = tf.where(tf.equal(tf.range(vocab), pad), 0.0, neg_inf)
        logp = tf.where(finished[..., None], only_pad, logp)
        candidates = scores[..., None] + logp  # (B, k, V) total log-probs
        new_steps = steps + tf.cast(~finished, tf.int32)  # generated tokens, END included
        ranking = candidates / _length_penalty(new_steps, alpha)[..., None]
        _, best = tf.math.top_k(tf.reshape(ranking, [batch, k * vocab]), k)  # (B, k)
        parent, token = best // vocab, tf.cast(best % vocab, tf.int32)

        scores = tf.gather(tf.reshape(candidates, [batch, k * vocab]), best, batch_dims=1)
        was_finished = tf.gather(finished, parent, batch_dims=1)
        ended = tf.equal(token, end) & ~was_finished
        silent = was_finished | ended  # END and anything after it are not words
        word = tf.where(silent, pad, token)
        lengths = tf.gather(lengths, parent, batch_dims=1) + tf.cast(~silent, tf.int32)
        steps = tf.gather(new_steps, parent, batch_dims=1)
        finished = was_finished | ended

        at_step = tf.equal(tf.range(steps_total), step)  # (L,)
        seqs = tf.gather(seqs, parent, batch_dims=1)
        seqs = tf.where(at_step[None, None, :], word[..., None], seqs)  # (B, k, L)
        rows = tf.reshape(parent + tf.range(batch)[:, None] * k, [-1])  # parent row of each new beam
        state = tf.nest.map_structure(lambda s: tf.gather(s, rows), state)
        if attention is not None:
            attention = tf.reshape(tf.cast(attention, tf.float32), [batch, k, -1])
            attention = tf.gather(attention, parent, batch_dims=1)  # (B, k, R)
            attention = tf.where(silent[..., None], 0.0, attention)
            maps = tf.gather(maps, parent, batch_dims=1)
            maps = tf.where(at_step[None, None, :, None], attention[:, :, None, :], maps)  # (B, k, L, R)
        # Finished beams feed PAD to the model; their outputs are ignored.
        return tf.reshape(token, [-1]), state, scores, finished, lengths, steps, seqs, maps

    # Step 0 outside the loop: it reveals whether the model has attention (and R).
    start = tf.fill([batch * k], tf.constant(model.start_id, tf.int32))
    logits, state, attention = model.decode_step(start, state, context)
    # Only beam 0 starts alive with score 0, so step 0 expands one hypothesis
    # into k distinct ones instead of k copies.
    scores = tf.tile(tf.constant([[0.0] + [-np.inf] * (k - 1)], tf.float32), [batch, 1])
    zeros_int = tf.zeros([batch, k], tf.int32)
    seqs = tf.zeros([batch, k, steps_total], tf.int32)
    maps = tf.zeros([])  # placeholder loop variable for models without attention
    if attention is not None:
        maps = tf.zeros([batch, k, steps_total, tf.shape(attention)[-1]], tf.float32)
    carry = advance(
        0, logits, attention, state, scores, tf.zeros([batch, k], tf.bool), zeros_int, zeros_int, seqs, maps
    )
    has_attention = attention is not None

    def cond(step, tokens, state, scores, finished, lengths, steps, seqs, maps):
        return (step < steps_total) & ~tf.reduce_all(finished)

    def body(step, tokens, state, scores, finished, lengths, steps, seqs, maps):
        logits, state, attention = model.decode_step(tokens, state, context)
        out = advance(step, logits, attention, state, scores, finished, lengths, steps, seqs, maps)
        return (step + 1, *out)

    _, _, _, scores, _, lengths, steps, seqs, maps = tf.while_loop(cond, body, (tf.constant(1), *carry))

    # Final ranking by the length-normalised score; reported scores stay raw.
    _, order = tf.math.top_k(scores / _length_penalty(steps, alpha), num_return)  # (B, N)
    return {
        "tokens": tf.gather(seqs, order, batch_dims=1),
        "scores": tf.gather(scores, order, batch_dims=1),
        "lengths": tf.gather(lengths, order, batch_dims=1),
        "attention": tf.gather(maps, order, batch_dims=1) if has_attention else None,
    }


def beam_search(model, features, max_length, beam_width=3, length_penalty=0.0, num_return=1):
    """Beam search, batched over images (B images x ``beam_width`` beams per step).

    Hypotheses are ranked by ``total_log_prob / ((5 + n) / 6) ** length_penalty``
    (GNMT length penalty, n = generated tokens including END; ``length_penalty``
    = 0 ranks by raw total log-prob). Finished hypotheses stay in the beam with a
    frozen score; the search stops when all beams of all images have ended or
    after ``max_length`` steps (unfinished hypotheses are then returned as they
    are). PAD and START are never emitted.

    Args:
        model: object with the decode API (see ``greedy_decode``).
        features: float (B, ...) image features.
        max_length: maximum number of decoding steps, END included.
        beam_width: k >= 1; k = 1 is greedy decoding.
        length_penalty: alpha >= 0.
        num_return: number N of best hypotheses per image, 1 <= N <= k.

    Returns:
        DecodeResult. With ``num_return == 1``: tokens (B, L), scores (B,),
        lengths (B,), attention (B, L, R) or None (the same shapes as greedy).
        With ``num_return > 1``: tokens (B, N, L), scores (B, N), lengths (B, N),
        attention (B, N, L, R) or None, best first. Scores are total log-probs
        (not length-normalised).
    """
    features = _common.check_args(model, features, max_length)
    max_length, beam_width, num_return = int(max_length), int(beam_width), int(num_return)
    if beam_width < 1:
        raise CaptioningError(f"beam_width: must be >= 1, got {beam_width}")
    if not 1 <= num_return <= beam_width:
        raise CaptioningError(f"num_return: must be between 1 and beam_width={beam_width}, got {num_return}")
    if length_penalty < 0:
        raise CaptioningError(f"length_penalty: must be >= 0, got {length_penalty}")
    alpha = float(length_penalty)

    def build(model_ref):
        def run(batch_features):
            return _beam_loop(model_ref(), batch_features, max_length, beam_width, alpha, num_return)

        return tf.function(run, input_signature=[_common.feature_spec(features)])

    key = ("beam", features.shape[1:], max_length, beam_width, alpha, num_return)
    fn = _common.cached_function(model, key, build)
    result = _common.to_result(fn(features))
    if num_return == 1:
        return DecodeResult(
            tokens=result.tokens[:, 0],
            scores=result.scores[:, 0],
            lengths=result.lengths[:, 0],
            attention=None if result.attention is None else result.attention[:, 0],
        )
    return result
