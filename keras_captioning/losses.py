"""The loss and the token metrics of training, in one place (a leaf module).

``masked_ce_sum`` and ``masked_accuracy_counts`` give the sums of one batch;
``CaptionLoss`` and ``Perplexity`` accumulate them over an epoch (``CaptionModel``'s
trackers): token-weighted, so the epoch value does not depend on how the data was cut
into batches or split over replicas.

Every function takes ``targets`` int (B, T) and ``logits`` (B, T, V) and ignores
positions where ``targets == pad_id``. The mean is taken over *real* tokens:
``sum(CE over real tokens) / number of real tokens``. The study's notebooks divided
by the padded length ``B * T`` instead, which lets the amount of padding change the
loss and its gradient scale; we do not copy that.

Everything is computed in float32, also when the model runs under a
``mixed_float16`` policy (the logits are cast before the softmax).
"""

import keras
from keras import ops


def _mask(targets, pad_id):
    """float32 (B, T): 1.0 where the target is a real token, 0.0 at padding."""
    return ops.cast(ops.not_equal(targets, pad_id), "float32")


def masked_ce_sum(targets, logits, pad_id=0):
    """Summed cross-entropy over real tokens and the number of real tokens.

    The training loss is ``ce_sum / max(num_tokens, 1)`` (0.0 for a batch without any real
    token).

    The pair is what a metric or a multi-replica loss needs: the token-weighted
    mean over several batches is ``sum(ce_sum) / sum(num_tokens)``.

    Args:
        targets: int (B, T) next-token ids.
        logits: float (B, T, V) unnormalised scores.
        pad_id: id of the padding token, excluded from the sum and the count.

    Returns:
        ``(ce_sum, num_tokens)``, two float32 scalars.
    """
    logits = ops.cast(logits, "float32")
    mask = _mask(targets, pad_id)
    ce = ops.sparse_categorical_crossentropy(targets, logits, from_logits=True)  # (B, T)
    return ops.sum(ce * mask), ops.sum(mask)


def masked_accuracy_counts(targets, logits, pad_id=0):
    """``(num_correct, num_tokens)`` float32 scalars: argmax hits at real tokens."""
    mask = _mask(targets, pad_id)
    predicted = ops.argmax(logits, axis=-1)
    hits = ops.cast(ops.equal(predicted, ops.cast(targets, predicted.dtype)), "float32")
    return ops.sum(hits * mask), ops.sum(mask)


class _SumsMetric(keras.metrics.Metric):
    """A metric that accumulates named float32 sums (summed over replicas too)."""

    SUMS: tuple = ()

    def __init__(self, name, **kwargs):
        super().__init__(name=name, **kwargs)
        self.sums = [self.add_variable(shape=(), initializer="zeros", dtype="float32", aggregation="sum",
                                       name=var_name) for var_name in self.SUMS]

    def _add(self, *values):
        for variable, value in zip(self.sums, values):
            variable.assign_add(ops.cast(value, "float32"))

    def reset_state(self):
        for variable in self.sums:
            variable.assign(0.0)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="keras_captioning")
class CaptionLoss(_SumsMetric):
    """The epoch value of the objective: ``sum(CE) / sum(real tokens) + sum(penalty * images) / sum(images)``.

    The cross-entropy part is a mean over real target tokens (as the loss is); the
    regularisation part (e.g. the attention penalty, itself a mean over images) is averaged
    over images. ``update_state(ce_sum, num_tokens, penalty, num_images)``.
    """

    SUMS = ("ce_sum", "num_tokens", "penalty_sum", "num_images")

    def __init__(self, name="loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, ce_sum, num_tokens, penalty, num_images):
        penalty_sum = ops.cast(penalty, "float32") * ops.cast(num_images, "float32")
        self._add(ce_sum, num_tokens, penalty_sum, num_images)

    def result(self):
        ce_sum, num_tokens, penalty_sum, num_images = self.sums
        return ce_sum / ops.maximum(num_tokens, 1.0) + penalty_sum / ops.maximum(num_images, 1.0)


@keras.saving.register_keras_serializable(package="keras_captioning")
class Perplexity(_SumsMetric):
    """``exp(sum of cross-entropy / number of real tokens)`` over everything seen.

    The perplexity of the whole epoch's tokens, not a mean of per-batch perplexities
    (which would over-weight short batches and is biased upwards by Jensen's inequality).
    ``update_state(ce_sum, num_tokens)`` takes the pair ``masked_ce_sum`` returns.
    """

    SUMS = ("total_ce", "total_tokens")

    def __init__(self, name="perplexity", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, ce_sum, num_tokens):
        self._add(ce_sum, num_tokens)

    def result(self):
        total_ce, total_tokens = self.sums
        return ops.exp(total_ce / ops.maximum(total_tokens, 1.0))
