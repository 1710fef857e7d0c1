"""Encoder of the attention captioner: a per-region projection of CNN features."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_captioning")
class CNNEncoder(keras.layers.Layer):
    """Dense(embedding_dim) + ReLU applied to every region of a feature grid.

    The CNN itself ran offline (features are cached); this layer is the trainable
    part of the study's encoder.

    Args:
        embedding_dim: output size E per region.

    Call:
        features: float (B, R, D) regions, or (B, H, W, D) grid (flattened to
        R = H * W regions). Returns (B, R, E) in the compute dtype.
    """

    def __init__(self, embedding_dim=256, **kwargs):
        super().__init__(**kwargs)
        # === Layers ===
        self.projection = keras.layers.Dense(
            embedding_dim,
            activation="relu",
            kernel_initializer="glorot_uniform",
            dtype=self.dtype_policy,
            name="projection",
        )
        # === Config ===
        self.embedding_dim = embedding_dim

    def build(self, input_shape):
        self.projection.build((None, None, input_shape[-1]))

    def call(self, features):
        if len(features.shape) == 4:
            shape = ops.shape(features)
            features = ops.reshape(features, (shape[0], shape[1] * shape[2], shape[3]))
        return self.projection(features)

    def compute_output_shape(self, input_shape):
        if len(input_shape) == 4:
            regions = None if None in input_shape[1:3] else input_shape[1] * input_shape[2]
            return (input_shape[0], regions, self.embedding_dim)
        return (*input_shape[:-1], self.embedding_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"embedding_dim": self.embedding_dim})
        return config
