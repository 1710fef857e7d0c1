"""Shared base of the captioners: custom train/test steps and the decoding contract."""

import keras
import tensorflow as tf
from keras import ops

from keras_captioning.errors import CaptioningError
from keras_captioning.losses import CaptionLoss, Perplexity, masked_accuracy_counts, masked_ce_sum


class CaptionModel:
    """Training and decoding contract shared by the captioners (a mixin before ``keras.Model``).

    A captioner is declared ``class X(CaptionModel, keras.Model)``. The mixin does not
    derive from ``keras.Model`` itself so that a functional captioner (``MergeCaptioner``,
    ``super().__init__(inputs=..., outputs=...)``) can use Keras's public functional
    constructor: Keras then re-bases that class on its functional model class, and only
    that class (a ``keras.Model`` base here would be re-based for every captioner).

    Subclasses provide ``call({"features", "tokens"}, training)`` returning logits
    float32 (B, T, V), the decoding API and the config attributes ``vocab_size``,
    ``pad_id``, ``start_id``, ``end_id``.

    Batches given to ``fit``/``evaluate`` are dicts ``{"features": (B, ...) float,
    "captions": (B, L) int32}`` (extra keys such as ``image_id`` are ignored), with
    captions ``[START, w1, ..., END, PAD...]``. Input tokens are ``captions[:, :-1]``,
    targets ``captions[:, 1:]``; padded targets do not count. Features may come in their
    stored dtype (float16 shards): they are cast inside the step. Image-major batches
    (``batch_layout="image"``) add ``"image_index": (B,) int32`` and hold each image's
    features once, ``(G, ...)``: caption row i belongs to ``features[image_index[i]]``, and
    a model encodes the G images once (``compute_loss_logits_and_penalty``'s
    ``image_index``).

    Logged metrics, accumulated over the epoch (so independent of batching and
    replicas): ``loss``, the optimised objective = cross-entropy summed over real
    target tokens / their number, plus the regularisation (a mean over images);
    ``accuracy``, argmax accuracy over real tokens; ``perplexity``, ``exp`` of the
    cross-entropy part. Without regularisation ``loss == log(perplexity)``.

    Gradient clipping is the optimizer's job: compile with e.g.
    ``keras.optimizers.Adam(4e-4, clipnorm=5.0)``; Keras clips each gradient
    tensor's norm inside ``optimizer.apply`` (``global_clipnorm`` clips the global
    norm instead). Under a ``mixed_float16`` policy ``compile`` wraps the optimizer
    in a ``LossScaleOptimizer``; ``train_step`` scales the loss through
    ``optimizer.scale_loss`` and ``apply`` unscales the gradients.

    Decoding contract (used by ``keras_captioning.decoding``)::

        context, state = model.init_decode(features)
        logits, state, attention = model.decode_step(tokens, state, context)

    ``context`` is a tensor or tuple of tensors and ``state`` a list of tensors,
    all with the batch on axis 0; ``tokens`` int32 (B,); ``logits`` float32 (B, V);
    ``attention`` float32 (B, R) or ``None``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_tracker = CaptionLoss(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.perplexity_tracker = Perplexity(name="perplexity")

    # ------------------------------------------------------------------ training

    @property
    def metrics(self):
        # Listed here so Keras resets them at each epoch and logs them.
        return [self.loss_tracker, self.accuracy_tracker, self.perplexity_tracker]

    def _split_batch(self, data):
        """Batch dict -> (features float32, tokens (B, L-1), targets (B, L-1), image_index (B,) or None)."""
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        if not isinstance(x, dict) or "features" not in x or "captions" not in x:
            raise CaptioningError(
                "training batch: expected a dict with keys 'features' and 'captions'; "
                f"got {type(x).__name__}{sorted(x) if isinstance(x, dict) else ''}; "
                "use keras_captioning.data.pipeline.make_train_dataset"
            )
        captions = ops.cast(x["captions"], "int32")
        image_index = ops.cast(x["image_index"], "int32") if "image_index" in x else None
        return ops.cast(x["features"], "float32"), captions[:, :-1], captions[:, 1:], image_index

    def compute_logits_and_penalty(self, features, tokens, targets, training=False):
        """Teacher-forced logits (B, T, V) and a float32 scalar regularisation term.

        The default has no penalty; the attention model adds the doubly stochastic
        attention term here.
        """
        logits = self({"features": features, "tokens": tokens}, training=training)
        return logits, ops.zeros((), "float32")

    def compute_loss_logits_and_penalty(self, features, tokens, targets, training=False, image_index=None):
        """What the loss and the metrics need: ``(targets', logits', penalty)``.

        ``targets'`` and ``logits'`` are any matching pair for the masked loss and
        accuracy (padded targets do not count). The default is the full
        ``(targets, logits (B, T, V), penalty)``; a model may instead return only
        the real target positions, e.g. ``(N,)`` targets and ``(N, V)`` logits,
        which gives the same loss, gradients and metrics.

        ``image_index`` (B,): ``features`` holds G distinct images and row i of ``tokens``
        belongs to ``features[image_index[i]]``. This default repeats the feature rows; a
        model that can do better (encode each image once) overrides it.
        """
        if image_index is not None:
            features = ops.take(features, image_index, axis=0)
        logits, penalty = self.compute_logits_and_penalty(features, tokens, targets, training=training)
        return targets, logits, penalty

    def _objective(self, features, tokens, targets, training, image_index=None):
        targets, logits, penalty = self.compute_loss_logits_and_penalty(
            features, tokens, targets, training=training, image_index=image_index
        )
        ce_sum, num_tokens = masked_ce_sum(targets, logits, self.pad_id)
        penalty = ops.cast(penalty, "float32")
        if self.losses:  # weight regularisers added by layers, if any
            penalty = penalty + ops.cast(ops.sum(self.losses), "float32")
        return targets, logits, ce_sum, num_tokens, penalty

    def _update_metrics(self, targets, logits, ce_sum, num_tokens, penalty, num_images):
        correct, _ = masked_accuracy_counts(targets, logits, self.pad_id)
        self.loss_tracker.update_state(ce_sum, num_tokens, penalty, num_images)
        self.accuracy_tracker.update_state(correct / ops.maximum(num_tokens, 1.0), sample_weight=num_tokens)
        self.perplexity_tracker.update_state(ce_sum, num_tokens)
        logs = {m.name: m.result() for m in self.metrics}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3 reduces a step's logs across workers with a mean over axis 0, which a
            # scalar does not have. The epoch's logs are read from the metrics themselves.
            logs = {name: ops.reshape(value, (1,)) for name, value in logs.items()}
        return logs

    def train_step(self, data):
        features, tokens, targets, image_index = self._split_batch(data)
        with tf.GradientTape() as tape:
            loss_targets, logits, ce_sum, num_tokens, penalty = self._objective(
                features, tokens, targets, training=True, image_index=image_index
            )
            loss = self._replica_loss(ce_sum, num_tokens, penalty, ops.shape(targets)[0])
            if hasattr(self.optimizer, "scale_loss"):
                loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self._update_metrics(loss_targets, logits, ce_sum, num_tokens, penalty, ops.shape(targets)[0])

    def test_step(self, data):
        features, tokens, targets, image_index = self._split_batch(data)
        loss_targets, logits, ce_sum, num_tokens, penalty = self._objective(
            features, tokens, targets, training=False, image_index=image_index
        )
        return self._update_metrics(loss_targets, logits, ce_sum, num_tokens, penalty, ops.shape(targets)[0])

    @staticmethod
    def _replica_loss(ce_sum, num_tokens, penalty, num_images):
        """The loss whose gradient this replica contributes.

        Under a tf.distribute strategy the optimizer *sums* the replicas'
        gradients, so each replica divides its summed cross-entropy by the
        *global* number of real tokens and weights its batch-mean penalty by its
        share of the global batch (both all-reduced): the sum over replicas is
        then exactly the single-device loss of the whole batch.
        """
        if tf.distribute.get_strategy().num_replicas_in_sync == 1:
            return ce_sum / ops.maximum(num_tokens, 1.0) + penalty
        num_images = ops.cast(num_images, "float32")
        context = tf.distribute.get_replica_context()
        global_tokens, global_images = context.all_reduce(
            tf.distribute.ReduceOp.SUM, [num_tokens, num_images]
        )
        share = num_images / ops.maximum(global_images, 1.0)
        return ce_sum / ops.maximum(global_tokens, 1.0) + penalty * share

    # ------------------------------------------------------------------ decoding

    def init_decode(self, features):
        """Run the encoder once: returns ``(context, state)``; see the class docstring."""
        raise NotImplementedError

    def decode_step(self, tokens, state, context):
        """One decoding step: returns ``(logits (B, V) float32, state, attention or None)``."""
        raise NotImplementedError
