"""Greedy or beam decoding of the best caption per image: the one place that chooses.

``decode_tensors`` is the loop alone, to be called inside a caller's ``tf.function`` (a
SavedModel signature); ``decode_best`` wraps the same function in a cached ``tf.function``
and returns numpy (evaluation, the captioner). So the exported graph decodes exactly as
Python does. ``greedy_decode`` and ``beam_search`` run these same loops.
"""

import tensorflow as tf

from keras_captioning.decoding import _common
from keras_captioning.decoding.beam import _beam_loop
from keras_captioning.errors import CaptioningError


def decode_tensors(model, features, max_length: int, beam_width: int = 1, length_penalty: float = 0.0) -> dict:
    """Decode ``features`` inside a tf.function: the best caption per image.

    ``beam_width`` 1 is greedy decoding (``greedy_decode``), above 1 beam search
    (``beam_search(..., num_return=1)``).

    Args:
        model: object with the decode API (see ``keras_captioning.decoding``).
        features: float32 tensor (B, ...) of image features.
        max_length: maximum number of decoding steps, END included.
        beam_width: k >= 1.
        length_penalty: GNMT alpha >= 0 (beam search only).

    Returns:
        dict of tensors: tokens int32 (B, L), scores float32 (B,), lengths int32 (B,),
        attention float32 (B, L, R) or None.
    """
    if int(max_length) < 1 or int(beam_width) < 1 or length_penalty < 0:
        raise CaptioningError(f"decoding: need max_length >= 1, beam_width >= 1, length_penalty >= 0; got "
                              f"{max_length}, {beam_width}, {length_penalty}")
    if int(beam_width) == 1:
        return _common.sequential_decode(
            model, features, int(max_length), lambda logp, step: tf.argmax(logp, axis=-1, output_type=tf.int32)
        )
    out = _beam_loop(model, features, int(max_length), int(beam_width), float(length_penalty), 1)
    return {key: None if value is None else value[:, 0] for key, value in out.items()}


def decode_best(model, features, max_length: int, beam_width: int = 1, length_penalty: float = 0.0):
    """``decode_tensors`` run eagerly on a batch: a ``DecodeResult`` of (B, L) numpy arrays.

    Traced once per (model, feature shape, settings), like the other decoders.
    """
    features = _common.check_args(model, features, max_length)
    settings = (int(max_length), int(beam_width), float(length_penalty))

    def build(model_ref):
        def run(batch_features):
            return decode_tensors(model_ref(), batch_features, *settings)

        return tf.function(run, input_signature=[_common.feature_spec(features)])

    fn = _common.cached_function(model, ("best", features.shape[1:]) + settings, build)
    return _common.to_result(fn(features))
