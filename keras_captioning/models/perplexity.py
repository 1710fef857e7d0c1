"""Token-weighted perplexity metric."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_captioning")
class Perplexity(keras.metrics.Metric):
    """``exp(sum of cross-entropy / number of real tokens)`` over everything seen.

    It accumulates the summed cross-entropy and the token count, so the epoch value
    is the perplexity of the whole epoch's tokens, not a mean of per-batch
    perplexities (which would over-weight short batches and is biased upwards by
    Jensen's inequality).

    ``update_state(ce_sum, num_tokens)`` takes the pair returned by
    ``keras_captioning.losses.masked_ce_sum``.
    """

    def __init__(self, name="perplexity", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total_ce = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", aggregation="sum", name="total_ce"
        )
        self.total_tokens = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", aggregation="sum", name="total_tokens"
        )

    def update_state(self, ce_sum, num_tokens):
        self.total_ce.assign_add(ops.cast(ce_sum, "float32"))
        self.total_tokens.assign_add(ops.cast(num_tokens, "float32"))

    def result(self):
        return ops.exp(self.total_ce / ops.maximum(self.total_tokens, 1.0))

    def reset_state(self):
        self.total_ce.assign(0.0)
        self.total_tokens.assign(0.0)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
