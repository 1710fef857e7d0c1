"""Greedy decoding: the most likely next word at every step."""

import tensorflow as tf

from keras_captioning.decoding import _common


def greedy_decode(model, features, max_length):
    """Decode a batch of images greedily.

    Args:
        model: any object with the decode API (``init_decode``, ``decode_step``,
            ``start_id``, ``end_id``, ``pad_id``), e.g. a keras_captioning captioner.
        features: float (B, ...) image features as the model takes them.
        max_length: maximum number of decoding steps, END included: a caption
            has at most ``max_length`` words (exactly that many only when END
            never came).

    Returns:
        DecodeResult with tokens (B, max_length), scores (B,), lengths (B,),
        attention (B, max_length, R) or None.
    """
    features = _common.check_args(model, features, max_length)
    max_length = int(max_length)

    def build(model_ref):
        def run(batch_features):
            return _common.sequential_decode(
                model_ref(),
                batch_features,
                max_length,
                lambda logp, step: tf.argmax(logp, axis=-1, output_type=tf.int32),
            )

        return tf.function(run, input_signature=[_common.feature_spec(features)])

    fn = _common.cached_function(model, ("greedy", features.shape[1:], max_length), build)
    return _common.to_result(fn(features))
