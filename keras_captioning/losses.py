"""Masked sequence losses and token accuracy for captioning (a leaf module).

Every function takes ``targets`` int (B, T) and ``logits`` (B, T, V) and ignores
positions where ``targets == pad_id``. The mean is taken over *real* tokens:
``sum(CE over real tokens) / number of real tokens``. The study's notebooks divided
by the padded length ``B * T`` instead, which lets the amount of padding change the
loss and its gradient scale; we do not copy that.

Everything is computed in float32, also when the model runs under a
``mixed_float16`` policy (the logits are cast before the softmax).
"""

from keras import ops


def _mask(targets, pad_id):
    """float32 (B, T): 1.0 where the target is a real token, 0.0 at padding."""
    return ops.cast(ops.not_equal(targets, pad_id), "float32")


def masked_ce_sum(targets, logits, pad_id=0):
    """Summed cross-entropy over real tokens and the number of real tokens.

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


def masked_sparse_ce(targets, logits, pad_id=0):
    """Mean sparse categorical cross-entropy over real tokens, float32 scalar.

    ``sum(CE at positions where targets != pad_id) / number of such positions``;
    0.0 for a batch without any real token.
    """
    ce_sum, num_tokens = masked_ce_sum(targets, logits, pad_id)
    return ce_sum / ops.maximum(num_tokens, 1.0)


def masked_accuracy_counts(targets, logits, pad_id=0):
    """``(num_correct, num_tokens)`` float32 scalars: argmax hits at real tokens."""
    mask = _mask(targets, pad_id)
    predicted = ops.argmax(logits, axis=-1)
    hits = ops.cast(ops.equal(predicted, ops.cast(targets, predicted.dtype)), "float32")
    return ops.sum(hits * mask), ops.sum(mask)


def masked_accuracy(targets, logits, pad_id=0):
    """Fraction of real tokens whose argmax prediction is right, float32 scalar."""
    correct, num_tokens = masked_accuracy_counts(targets, logits, pad_id)
    return correct / ops.maximum(num_tokens, 1.0)
