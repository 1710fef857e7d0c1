"""Helpers shared by the decoders: traced-function cache, masking, the step loop."""

import weakref

import numpy as np
import tensorflow as tf

from keras_captioning.decoding.result import DecodeResult
from keras_captioning.errors import CaptioningError

# model -> {key: tf.function}. Weak keys, and the functions hold the model only
# through a weak reference, so a cached decoder never keeps a model alive.
_CACHE = weakref.WeakKeyDictionary()


def cached_function(model, key, build):
    """The tf.function ``build(model_ref)`` for (model, key), traced once and reused.

    ``key`` holds everything that is baked into the graph (decoder kind,
    max_length, beam width, feature shape without the batch axis...). The batch
    axis is left unknown in the input signature so a new batch size does not
    retrace.
    """
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = build(weakref.ref(model))
    return per_model[key]


def check_args(model, features, max_length):
    """Validate the common arguments; returns features as a float32 numpy array."""
    for name in ("init_decode", "decode_step", "start_id", "end_id", "pad_id"):
        if not hasattr(model, name):
            raise CaptioningError(
                f"model: {type(model).__name__} has no '{name}'; decoders need the decode API"
            )
    if int(max_length) < 1:
        raise CaptioningError(f"max_length: must be >= 1, got {max_length}")
    features = np.asarray(features, dtype=np.float32)
    if features.ndim < 2:
        raise CaptioningError(
            f"features: expected a batch (B, ...) of image features, got shape {features.shape}"
        )
    return features


def feature_spec(features):
    return tf.TensorSpec((None,) + tuple(features.shape[1:]), tf.float32)


def log_probs(logits, model):
    """float32 log-softmax over the vocabulary with PAD and START excluded.

    A caption never contains PAD or START, so their logits are set to -inf
    before the softmax: they are never emitted and the scores are log-probs
    under the distribution over emittable tokens.
    """
    logits = tf.cast(logits, tf.float32)
    vocab = tf.shape(logits)[-1]
    banned = tf.reduce_any(
        tf.equal(tf.range(vocab)[:, None], tf.constant([[model.pad_id, model.start_id]], tf.int32)), axis=-1
    )  # (V,)
    return tf.nn.log_softmax(tf.where(banned, tf.constant(-np.inf, tf.float32), logits), axis=-1)


def sequential_decode(model, features, max_length, choose):
    """Greedy/sampling loop, to be called inside a tf.function.

    Args:
        model: object with the decode API.
        features: float32 (B, ...) image features.
        max_length: maximum number of decoding steps (words + END).
        choose: ``choose(log_probs (B, V), step) -> int32 (B,)`` next tokens.

    Returns:
        dict of tensors: tokens (B, L), scores (B,), lengths (B,), attention (B, L, R) or None.
    """
    context, state = model.init_decode(features)
    batch = tf.shape(features)[0]
    start = tf.fill([batch], tf.constant(model.start_id, tf.int32))

    def advance(step, logits, attention, finished, scores, lengths):
        """Pick the next tokens and the values to record for this step."""
        logp = log_probs(logits, model)
        chosen = tf.cast(choose(logp, step), tf.int32)  # (B,)
        step_logp = tf.gather(logp, chosen, batch_dims=1)
        ended = tf.equal(chosen, model.end_id)
        silent = finished | ended  # nothing is recorded once a caption ended; END itself is not a word
        word = tf.where(silent, tf.constant(model.pad_id, tf.int32), chosen)
        scores = scores + tf.where(finished, 0.0, step_logp)
        lengths = lengths + tf.cast(~silent, tf.int32)
        if attention is not None:
            attention = tf.where(silent[:, None], 0.0, tf.cast(attention, tf.float32))
        return chosen, word, attention, finished | ended, scores, lengths

    # The first step runs outside the loop: it tells whether the model returns
    # attention (None is not a loop variable) and the number of regions.
    logits, state, attention = model.decode_step(start, state, context)
    tokens, word, attention, finished, scores, lengths = advance(
        0,
        logits,
        attention,
        tf.zeros([batch], tf.bool),
        tf.zeros([batch], tf.float32),
        tf.zeros([batch], tf.int32),
    )
    has_attention = attention is not None
    # Fixed-size (B, L[, R]) buffers written with a one-hot step mask rather than growing
    # TensorArrays: the same values, and the loop then converts to LiteRT builtins (TFLite
    # lowers tensor lists only with static shapes, so a TensorArray blocks the conversion).
    at_step = lambda step: tf.equal(tf.range(max_length), step)[None, :]  # noqa: E731  (1, L)
    words = tf.where(at_step(0), word[:, None], tf.zeros([batch, max_length], tf.int32))
    maps = (
        tf.where(at_step(0)[..., None], attention[:, None, :],
                 tf.zeros([batch, max_length, tf.shape(attention)[-1]], tf.float32))
        if has_attention
        else tf.zeros([])  # placeholder loop variable
    )

    def cond(step, tokens, state, finished, scores, lengths, words, maps):
        return (step < max_length) & ~tf.reduce_all(finished)

    def body(step, tokens, state, finished, scores, lengths, words, maps):
        logits, state, attention = model.decode_step(tokens, state, context)
        tokens, word, attention, finished, scores, lengths = advance(
            step, logits, attention, finished, scores, lengths
        )
        words = tf.where(at_step(step), word[:, None], words)  # (B, L)
        if has_attention:
            maps = tf.where(at_step(step)[..., None], attention[:, None, :], maps)  # (B, L, R)
        return step + 1, tokens, state, finished, scores, lengths, words, maps

    loop_vars = (tf.constant(1), tokens, state, finished, scores, lengths, words, maps)
    # Steps the loop did not run (every caption ended early) keep their zeros: PAD, no attention.
    _, _, _, _, scores, lengths, words, maps = tf.while_loop(cond, body, loop_vars)
    return {
        "tokens": words,  # (B, L)
        "scores": scores,
        "lengths": lengths,
        "attention": maps if has_attention else None,  # (B, L, R)
    }


def to_result(outputs):
    """dict of tensors -> DecodeResult of numpy arrays."""
    attention = outputs.get("attention")
    return DecodeResult(
        tokens=outputs["tokens"].numpy().astype(np.int32),
        scores=outputs["scores"].numpy().astype(np.float32),
        lengths=outputs["lengths"].numpy().astype(np.int32),
        attention=None if attention is None else attention.numpy().astype(np.float32),
    )
