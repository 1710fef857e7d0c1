"""Convert a published EfficientNet-Lite PyTorch checkpoint into Keras weights (no torch needed).

    python -m keras_captioning convert-weights efficientnet_lite0 \\
        --from data/weights/efficientnet-lite0.pth --out data/weights/efficientnet_lite0.weights.h5

The checkpoint is read by ``torch_checkpoint.read_state_dict``; every Keras weight of
``efficientnet_lite`` gets the tensor of the same module name, transposed from PyTorch's layout:

    Conv2D           (out, in, kh, kw)  -> (kh, kw, in, out)
    DepthwiseConv2D  (ch, 1, kh, kw)    -> (kh, kw, ch, 1)
    Dense            (out, in)          -> (in, out)
    BatchNorm        weight, bias, running_mean, running_var -> gamma, beta, mean, variance

A missing tensor, a shape that differs, or a checkpoint tensor left unused (other than the
classifier, which the no-top weights leave out, and BatchNorm's step counters) is one
``CaptioningError`` naming it, so a Lite0 file cannot be converted as Lite2 by mistake.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from keras_captioning.errors import CaptioningError
from keras_captioning.features.efficientnet_lite import VARIANTS, efficientnet_lite, nominal_size
from keras_captioning.features.torch_checkpoint import read_state_dict
from keras_captioning.utils import atomic_output

log = logging.getLogger(__name__)

CONVERTIBLE = {f"efficientnet_{v}": v for v in VARIANTS}  # backbone name -> variant
_BN = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_variance"))
_BLOCK_PARTS = {"expand_conv": "_expand_conv", "expand_bn": "_bn0", "depthwise_conv": "_depthwise_conv",
                "depthwise_bn": "_bn1", "project_conv": "_project_conv", "project_bn": "_bn2"}
_TOP_PARTS = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1",
              "predictions": "_fc"}


def torch_module_name(layer_name: str) -> str:
    """Keras layer name -> the PyTorch module it comes from (``blocks_3_expand_bn`` -> ``_blocks.3._bn0``)."""
    if layer_name in _TOP_PARTS:
        return _TOP_PARTS[layer_name]
    if layer_name.startswith("blocks_"):
        _, index, part = layer_name.split("_", 2)
        if part in _BLOCK_PARTS:
            return f"_blocks.{index}.{_BLOCK_PARTS[part]}"
    raise KeyError(layer_name)


def _keras_arrays(layer, tensors: dict, module: str) -> list[np.ndarray]:
    """The layer's weights, in ``layer.get_weights()`` order, from the PyTorch tensors."""
    kind = type(layer).__name__
    if kind == "BatchNormalization":
        return [tensors[f"{module}.{torch_name}"] for torch_name, _ in _BN]
    if kind == "Conv2D":
        return [tensors[f"{module}.weight"].transpose(2, 3, 1, 0)]
    if kind == "DepthwiseConv2D":
        return [tensors[f"{module}.weight"].transpose(2, 3, 0, 1)]
    if kind == "Dense":
        return [tensors[f"{module}.weight"].T, tensors[f"{module}.bias"]]
    raise CaptioningError(f"convert-weights: no rule for layer {layer.name} ({kind})")


def load_checkpoint_into(model, checkpoint: str | os.PathLike, tensors: dict | None = None) -> None:
    """Sets every weight of an ``efficientnet_lite`` model from ``checkpoint``.

    Raises:
        CaptioningError: the file is not a checkpoint, a tensor is missing or has another shape,
            or the checkpoint holds tensors the model does not use (another variant).
    """
    checkpoint = os.fspath(checkpoint)
    tensors = read_state_dict(checkpoint) if tensors is None else tensors
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            module = torch_module_name(layer.name)
            arrays = _keras_arrays(layer, tensors, module)
        except KeyError as err:
            raise CaptioningError(f"{checkpoint}: has no tensor {err.args[0]} for layer {layer.name} of "
                                  f"{model.name}: not a checkpoint of this variant") from None
        expected = [tuple(w.shape) for w in layer.get_weights()]
        got = [a.shape for a in arrays]
        if expected != got:
            raise CaptioningError(f"{checkpoint}: {module} has shapes {got}, {model.name} expects {expected} "
                                  "(Keras layout): not a checkpoint of this variant")
        layer.set_weights([a.astype(np.float32) for a in arrays])
        used.update(k for k in tensors if k.startswith(f"{module}."))
    ignored = ("num_batches_tracked",) + (() if "predictions" in [x.name for x in model.layers] else ("_fc.",))
    left = [k for k in tensors if k not in used and not any(part in k for part in ignored)]
    if left:
        raise CaptioningError(f"{checkpoint}: {len(left)} tensors unused by {model.name} (first: {left[0]}): "
                              "not a checkpoint of this variant")


def convert_weights(backbone: str, source: str | os.PathLike, out: str | os.PathLike) -> str:
    """Writes ``out`` (``.weights.h5``) for ``build_backbone(backbone, weights=out)``; returns its path."""
    if backbone not in CONVERTIBLE:
        raise CaptioningError(f"convert-weights: no converter for {backbone!r}; choose one of {sorted(CONVERTIBLE)}")
    out = os.fspath(out)
    if not out.endswith(".weights.h5"):
        raise CaptioningError(f"{out}: the output must end in .weights.h5 (Keras 3 weights file)")
    if os.path.isdir(out):
        raise CaptioningError(f"{out}: is a folder; name the .weights.h5 file to write")
    variant = CONVERTIBLE[backbone]
    size = nominal_size(variant)
    model = efficientnet_lite(variant, (size, size, 3), include_top=False)
    load_checkpoint_into(model, source)
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise CaptioningError(f"{parent}: folder does not exist (for {out})")
    with atomic_output(out, suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    log.info("%s: %d weights of %s from %s", out, len(model.weights), backbone, os.fspath(source))
    return out
