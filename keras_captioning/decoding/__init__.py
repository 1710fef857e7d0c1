"""Decoders that work only through a model's decoding API (they never import models).

A model provides ``context, state = model.init_decode(features)``,
``logits, state, attention = model.decode_step(tokens, state, context)`` and the
attributes ``start_id``, ``end_id``, ``pad_id``. Every decoder is batched over
images, runs its time loop in one ``tf.function`` (a ``tf.while_loop`` that stops
when every caption has produced END or after ``max_length`` steps), and is
traced once per (model, decoder settings, feature shape): repeated calls and new
batch sizes reuse the graph. PAD and START get a logit of -inf, so they are never
emitted and scores are log-probs over the emittable tokens.
"""

from keras_captioning.decoding.beam import beam_search
from keras_captioning.decoding.graph import decode_best, decode_tensors
from keras_captioning.decoding.greedy import greedy_decode
from keras_captioning.decoding.result import DecodeResult, decode_captions
from keras_captioning.decoding.sampling import sample_decode

__all__ = ["DecodeResult", "beam_search", "decode_best", "decode_captions", "decode_tensors", "greedy_decode",
           "sample_decode"]
