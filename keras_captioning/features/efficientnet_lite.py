"""EfficientNet-Lite0/1/2 in plain Keras 3 layers (Tan & Le 2019, the "Lite" mobile variants).

The Lite variants are EfficientNet-B0's MBConv network with three changes for CPUs and
quantisation: no squeeze-and-excitation, ReLU6 instead of swish, and a stem (32 channels) and
head (1280 channels) that are not scaled with the width, with the first and last stages' repeats
not scaled with the depth either. TF-style "same" padding (Keras's ``padding="same"``), BatchNorm
epsilon 1e-3, inputs scaled as ``(x - 127) / 128`` from RGB in [0, 255] (the statistics of the
published checkpoints; see ``preprocess``).

    variant  width  depth  nominal size  blocks  last block  head
    lite0    1.0    1.0    224           16      320         1280
    lite1    1.0    1.1    240           18      320         1280
    lite2    1.1    1.2    260           21      352         1280

Layer names follow the published PyTorch checkpoints' module names (``blocks_3_expand_conv`` for
``_blocks.3._expand_conv``), so ``convert_efficientnet_lite`` maps them one to one.

Why not keras-hub's ``EfficientNetBackbone``: it would add keras-hub and its dependencies to a
package that needs three dozen lines of layers, and its options scale the stem and head with the
width, which the Lite1/Lite2 checkpoints do not (their stem stays 32 and head 1280 at width 1.1).
"""

from __future__ import annotations

import math

import keras

from keras_captioning.errors import CaptioningError

# EfficientNet-B0's stages: (repeats, kernel, stride, expand ratio, input filters, output filters).
BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
DIVISOR = 8
NUM_CLASSES = 1000

# variant -> (width multiplier, depth multiplier, nominal input side)
VARIANTS = {
    "lite0": (1.0, 1.0, 224),
    "lite1": (1.0, 1.1, 240),
    "lite2": (1.1, 1.2, 260),
}


def round_filters(filters: int, width: float) -> int:
    """Channels scaled by ``width``, rounded to a multiple of 8 and never 10 % below the product."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(DIVISOR, int(scaled + DIVISOR / 2) // DIVISOR * DIVISOR)
    if rounded < 0.9 * scaled:
        rounded += DIVISOR
    return int(rounded)


def block_args(variant: str) -> list[dict]:
    """One dict per MBConv block: kernel, stride, expand ratio, input and output filters."""
    width, depth, _ = _variant(variant)
    blocks = []
    last = len(BASE_STAGES) - 1
    for index, (repeats, kernel, stride, expand, inputs, outputs) in enumerate(BASE_STAGES):
        inputs = STEM_FILTERS if index == 0 else round_filters(inputs, width)
        outputs = round_filters(outputs, width)
        if index not in (0, last):  # the Lite variants keep the first and last stages' repeats
            repeats = int(math.ceil(depth * repeats))
        for repeat in range(repeats):
            blocks.append({"kernel": kernel, "stride": stride if repeat == 0 else 1, "expand": expand,
                           "inputs": inputs if repeat == 0 else outputs, "outputs": outputs})
    return blocks


def nominal_size(variant: str) -> int:
    return _variant(variant)[2]


def preprocess(x):
    """RGB in [0, 255] -> the checkpoints' input range ``(x - 127) / 128``."""
    return (x - 127.0) / 128.0


def _variant(variant: str):
    try:
        return VARIANTS[variant]
    except KeyError:
        raise CaptioningError(f"efficientnet: unknown variant {variant!r}; choose one of {sorted(VARIANTS)}") from None


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, bn_name: str, activation: bool):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=name)(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=bn_name)(x)
    return keras.layers.ReLU(6.0, name=f"{bn_name}_relu6")(x) if activation else x


def _mbconv(x, args: dict, prefix: str):
    shortcut = x
    expanded = args["inputs"] * args["expand"]
    if args["expand"] != 1:
        x = _conv_bn(x, expanded, 1, 1, f"{prefix}_expand_conv", f"{prefix}_expand_bn", True)
    x = keras.layers.DepthwiseConv2D(args["kernel"], strides=args["stride"], padding="same", use_bias=False,
                                     name=f"{prefix}_depthwise_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_depthwise_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{prefix}_depthwise_bn_relu6")(x)
    x = _conv_bn(x, args["outputs"], 1, 1, f"{prefix}_project_conv", f"{prefix}_project_bn", False)
    if args["stride"] == 1 and args["inputs"] == args["outputs"]:
        x = keras.layers.Add(name=f"{prefix}_add")([shortcut, x])
    return x


def efficientnet_lite(variant: str = "lite0", input_shape=(224, 224, 3), include_top: bool = False,
                      include_head: bool = True) -> keras.Model:
    """The network from scaled inputs (see ``preprocess``) to its last feature map.

    Args:
        variant: "lite0" | "lite1" | "lite2".
        input_shape: (S, S, 3); any side of at least 32 works (the grid is ceil(S / 32) squared).
        include_top: add the ImageNet classifier (global average pool + 1000-way dense logits);
            used to check a conversion against the reference implementation.
        include_head: end at the 1 x 1 head (1280 channels); False ends at the last block
            (320 channels for lite0/lite1, 352 for lite2).

    Returns:
        ``keras.Model``: (B, S, S, 3) -> (B, H, W, C), or (B, 1000) logits with ``include_top``.
    """
    if include_top and not include_head:
        raise CaptioningError("efficientnet: the classifier needs the head (include_head=True)")
    inputs = keras.Input(input_shape, name="scaled_image")
    x = _conv_bn(inputs, STEM_FILTERS, 3, 2, "stem_conv", "stem_bn", True)
    for index, args in enumerate(block_args(variant)):
        x = _mbconv(x, args, f"blocks_{index}")
    if include_head:
        x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head_conv", "head_bn", True)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(NUM_CLASSES, name="predictions")(x)
    return keras.Model(inputs, x, name=f"efficientnet_{variant}")
