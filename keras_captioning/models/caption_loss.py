"""The epoch value of the training objective: token-weighted CE + image-weighted penalty."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_captioning")
class CaptionLoss(keras.metrics.Metric):
    """``sum(CE) / sum(real tokens) + sum(penalty * images) / sum(images)``.

    The cross-entropy part is a mean over real target tokens (as the loss is);
    the regularisation part (e.g. the attention penalty, itself a mean over
    images) is averaged over images. Accumulating the four sums makes the value
    independent of how the data was cut into batches or split over replicas.

    ``update_state(ce_sum, num_tokens, penalty, num_images)``.
    """

    def __init__(self, name="loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.sums = [
            self.add_variable(
                shape=(), initializer="zeros", dtype="float32", aggregation="sum", name=var_name
            )
            for var_name in ("ce_sum", "num_tokens", "penalty_sum", "num_images")
        ]

    def update_state(self, ce_sum, num_tokens, penalty, num_images):
        penalty_sum = ops.cast(penalty, "float32") * ops.cast(num_images, "float32")
        for variable, value in zip(self.sums, (ce_sum, num_tokens, penalty_sum, num_images)):
            variable.assign_add(ops.cast(value, "float32"))

    def result(self):
        ce_sum, num_tokens, penalty_sum, num_images = self.sums
        return ce_sum / ops.maximum(num_tokens, 1.0) + penalty_sum / ops.maximum(num_images, 1.0)

    def reset_state(self):
        for variable in self.sums:
            variable.assign(0.0)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
