"""Several trained captioners decoding as one (self-critical.pytorch's ``eval_ensemble``).

At every step each member scores the next word from its own state and its own image
features; the ensemble's next-word distribution is the mean of the members' probabilities
(``log mean_m p_m``). Greedy, beam search and evaluation use it through the same decode API
as a single model (``init_decode`` / ``decode_step``), so nothing else changes.

The members may read different features (another CNN, another grid size, pooled vectors):
the decoders take one feature tensor per image, so the ensemble's input is the members'
feature arrays flattened and concatenated, ``(B, sum_m prod(shape_m))``
(:meth:`CaptionEnsemble.pack`), and ``init_decode`` cuts it back into each member's shape.
The members must share the vocabulary (checked by the caller, which has the files).
"""

import math

import numpy as np
import tensorflow as tf

from keras_captioning.errors import CaptioningError


class CaptionEnsemble:
    """The decode API over ``members``, each reading features of ``feature_shapes[m]`` (no batch axis).

    Not a Keras model: it has no weights of its own and is never trained or saved.
    """

    def __init__(self, members, feature_shapes, names=None):
        members = list(members)
        if len(members) < 2:
            raise CaptioningError(f"ensemble: needs at least 2 models, got {len(members)}")
        if len(feature_shapes) != len(members):
            raise CaptioningError(f"ensemble: {len(members)} models but {len(feature_shapes)} feature shapes")
        self.names = list(names) if names is not None else [f"model {i}" for i in range(len(members))]
        for name in ("init_decode", "decode_step", "start_id", "end_id", "pad_id"):
            for member, label in zip(members, self.names):
                if not hasattr(member, name):
                    raise CaptioningError(f"ensemble: {label} ({type(member).__name__}) has no '{name}'")
        first = members[0]
        for member, label in zip(members[1:], self.names[1:]):
            ids = (member.start_id, member.end_id, member.pad_id)
            if ids != (first.start_id, first.end_id, first.pad_id):
                raise CaptioningError(f"ensemble: {label} uses START/END/PAD ids {ids}, {self.names[0]} "
                                      f"{(first.start_id, first.end_id, first.pad_id)}: not the same vocabulary")
        self.members = members
        self.feature_shapes = [tuple(int(d) for d in shape) for shape in feature_shapes]
        self.sizes = [int(math.prod(shape)) for shape in self.feature_shapes]
        self.start_id, self.end_id, self.pad_id = first.start_id, first.end_id, first.pad_id

    def pack(self, member_features) -> np.ndarray:
        """The members' feature batches (one array per member, same images in the same order) ->
        the ensemble's ``(B, sum of sizes)`` float32 input."""
        if len(member_features) != len(self.members):
            raise CaptioningError(f"ensemble: {len(self.members)} models but {len(member_features)} feature batches")
        flat = []
        for array, shape, label in zip(member_features, self.feature_shapes, self.names):
            array = np.asarray(array, np.float32)
            if tuple(array.shape[1:]) != shape:
                raise CaptioningError(f"ensemble: {label} reads features of shape {shape}, "
                                      f"got {tuple(array.shape[1:])}")
            flat.append(array.reshape(array.shape[0], -1))
        if len({a.shape[0] for a in flat}) != 1:
            raise CaptioningError(f"ensemble: feature batches of different sizes {[a.shape[0] for a in flat]}")
        return np.concatenate(flat, axis=1)

    def init_decode(self, features):
        """``(contexts, states)``: each member's own, in member order."""
        features = tf.convert_to_tensor(features, tf.float32)
        batch = tf.shape(features)[0]
        contexts, states = [], []
        for member, part, shape in zip(self.members, tf.split(features, self.sizes, axis=1), self.feature_shapes):
            context, state = member.init_decode(tf.reshape(part, tf.concat([[batch], shape], axis=0)))
            contexts.append(context)
            states.append(state)
        return tuple(contexts), tuple(states)

    def decode_step(self, tokens, state, context):
        """``(log mean_m p_m (B, V) float32, states, attention)``; the attention map is the first
        member's that has one (None if no member has)."""
        log_probs, states, attention, banned = [], [], None, None
        for member, member_state, member_context in zip(self.members, state, context):
            logits, member_state, member_attention = member.decode_step(tokens, member_state, member_context)
            logits = tf.cast(logits, tf.float32)
            if banned is None:  # PAD and START are never emitted (as in the decoders): each member's
                # distribution is over the emittable tokens before the mean.
                vocab = tf.range(tf.shape(logits)[-1])
                banned = ((vocab == self.pad_id) | (vocab == self.start_id))[None, :]
            log_probs.append(tf.nn.log_softmax(tf.where(banned, -np.inf, logits), axis=-1))
            states.append(member_state)
            if attention is None and member_attention is not None:
                attention = member_attention
        mixed = tf.reduce_logsumexp(tf.stack(log_probs, axis=0), axis=0) - math.log(len(self.members))
        return mixed, tuple(states), attention
