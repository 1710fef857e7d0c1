"""Mixed-precision policy: chosen once, before any model is built.

``mixed_float16`` computes in float16 and keeps variables in float32; on a GPU it roughly
halves memory and speeds up matmuls. Our models keep logits, the attention softmax and the
loss in float32, and ``compile`` wraps the optimizer in a ``LossScaleOptimizer`` whose
``scale_loss`` the custom ``train_step`` calls, so small float16 gradients do not underflow.
"""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

from keras_captioning.errors import CaptioningError

log = logging.getLogger(__name__)


def resolve_policy(mode: str) -> str:
    """Maps the config's ``auto | on | off`` to a Keras policy name."""
    if mode == "auto":
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    if mode == "on":
        return "mixed_float16"
    if mode == "off":
        return "float32"
    raise CaptioningError(f"train.mixed_precision={mode!r}: choose auto, on or off")


def set_policy(mode: str) -> str:
    """Sets the global dtype policy and returns its name. Call before building a model."""
    name = resolve_policy(mode)
    keras.mixed_precision.set_global_policy(name)
    log.info("precision policy: %s", name)
    return name
