"""Sampling decoder (what the study's notebooks used), made reproducible."""

import numpy as np
import tensorflow as tf

from keras_captioning.decoding import _common
from keras_captioning.decoding.greedy import greedy_decode
from keras_captioning.errors import CaptioningError


def sample_decode(model, features, max_length, temperature=1.0, seed=None):
    """Sample each next word from ``softmax(log_probs / temperature)``.

    Randomness is stateless: step t of a call with seed s uses the seed pair
    (s, t), so the same batch with the same seed gives the same captions on
    every call. ``seed=None`` draws a fresh seed from numpy's global generator.

    ``temperature`` -> 0 approaches greedy decoding; exactly 0 *is* greedy
    decoding (dispatched to ``greedy_decode``). Scores are log-probabilities under
    the model itself (temperature 1), so they compare with greedy/beam scores.

    Args and returns as ``greedy_decode``, plus ``temperature`` (>= 0) and
    ``seed`` (int or None).
    """
    if temperature is None or temperature < 0:
        raise CaptioningError(f"temperature: must be >= 0, got {temperature}")
    if temperature == 0:
        return greedy_decode(model, features, max_length)
    features = _common.check_args(model, features, max_length)
    max_length = int(max_length)
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))

    def build(model_ref):
        def run(batch_features, temperature, seed):
            def choose(logp, step):
                return tf.random.stateless_categorical(
                    logp / temperature, 1, seed=tf.stack([seed, tf.cast(step, tf.int64)]), dtype=tf.int32
                )[:, 0]

            return _common.sequential_decode(model_ref(), batch_features, max_length, choose)

        signature = [
            _common.feature_spec(features),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.int64),
        ]
        return tf.function(run, input_signature=signature)

    fn = _common.cached_function(model, ("sample", features.shape[1:], max_length), build)
    return _common.to_result(fn(features, tf.constant(temperature, tf.float32), tf.constant(seed, tf.int64)))
