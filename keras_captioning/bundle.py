"""A portable captioner folder (a local "preset"): the only code that knows its file names.

``save_bundle(captioner, out_dir)`` writes, and ``load_bundle(dir)`` reads::

    <dir>/captioner.json       metadata (below)
    <dir>/model.keras          the trained captioner (Keras format, no optimizer state)
    <dir>/vocab.json           the vocabulary its token ids use
    <dir>/backbone.weights.h5  the image encoder's weights; absent for a weight-free
                               backbone (``patches``), which is rebuilt from its name

``captioner.json`` (format "keras_captioning.bundle", format_version 1)::

    package_version, created     keras_captioning.__version__ that wrote it, ISO-8601 UTC
    model_type, feature          "attention" | "merge" | "transformer"; "grid" | "pooled" (what it reads)
    backbone                     {name, image_size, alpha, weights: file name or null}
    preprocessing                how pixels are made (features/images.py), for a reader
    decoding                     defaults: {beam, max_length, length_penalty}
    source                       where it came from: {run, checkpoint} or the bundle it was copied from
    scores                       the run's evaluation scores, {"<report folder>": {meta, scores}}

Nothing in the folder refers to the machine that wrote it: copy it anywhere and
``Captioner.load(dir)`` (or ``caption --bundle dir``) works offline.
"""

from __future__ import annotations

import json
import os
import shutil

from keras_captioning import __version__
from keras_captioning.errors import CaptioningError
from keras_captioning.utils import atomic_output, first_line, utc_now, write_json_atomic

BUNDLE_FORMAT = "keras_captioning.bundle"
BUNDLE_FORMAT_VERSION = 1
META_FILE = "captioner.json"
MODEL_FILE = "model.keras"
VOCAB_FILE = "vocab.json"
BACKBONE_FILE = "backbone.weights.h5"
PREPROCESSING = {
    "decode": "tf.io.decode_image(channels=3, expand_animations=False)",
    "resize": "tf.image.resize to image_size x image_size, bilinear, aspect ratio not kept",
    "range": "float32 RGB in [0, 255]; the backbone applies its own preprocess_input",
}


def save_bundle(captioner, out_dir: str) -> str:
    """Writes ``captioner`` into ``out_dir`` (created; an existing bundle there is replaced).

    Everything is written into a temporary folder renamed to ``out_dir`` at the end; an
    ``OSError`` (no space, a parent that is a file, read-only) is one CaptioningError naming
    ``out_dir``, and leaves no partial folder.
    """
    from keras_captioning.models.registry import model_type_of

    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise CaptioningError(f"{out_dir}: is a file; a bundle is a folder, choose a new name")
    with atomic_output(out_dir) as tmp:
        os.makedirs(tmp)
        captioner.model.save(os.path.join(tmp, MODEL_FILE), include_optimizer=False)
        captioner.vocab.save(os.path.join(tmp, VOCAB_FILE))
        weights_file = None
        if captioner.backbone.weights:
            weights_file = BACKBONE_FILE
            captioner.backbone.save_weights(os.path.join(tmp, BACKBONE_FILE))
        info = captioner.info or {}
        meta = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_FORMAT_VERSION,
            "package_version": __version__,
            "created": utc_now(),
            "model_type": model_type_of(captioner.model).name,
            "feature": captioner.feature,
            "backbone": {"name": captioner.backbone_name, "image_size": captioner.image_size,
                         "alpha": captioner.alpha, "weights": weights_file},
            "preprocessing": PREPROCESSING,
            "decoding": {"beam": captioner.beam, "max_length": captioner.max_length,
                         "length_penalty": captioner.length_penalty},
            "source": info.get("source"),
            "scores": info.get("scores", {}),
        }
        write_json_atomic(os.path.join(tmp, META_FILE), meta, indent=1)
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
    return out_dir


def read_bundle_meta(bundle_dir: str) -> dict:
    """``captioner.json`` of ``bundle_dir``, checked; CaptioningError if it is not a bundle."""
    path = os.path.join(bundle_dir, META_FILE)
    if not os.path.isfile(path):
        raise CaptioningError(f"{bundle_dir}: not a captioner bundle (no {META_FILE}); write one with "
                              "Captioner.save(dir) or `python -m keras_captioning export --format bundle`")
    try:
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError) as err:
        raise CaptioningError(f"{path}: unreadable ({err})") from None
    if meta.get("format") != BUNDLE_FORMAT or meta.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise CaptioningError(f"{path}: bundle format {meta.get('format')!r} version {meta.get('format_version')!r} "
                              f"is not {BUNDLE_FORMAT!r} version {BUNDLE_FORMAT_VERSION} (package {__version__})")
    return meta


def load_bundle(bundle_dir: str) -> dict:
    """Reads a bundle: the keyword arguments of ``Captioner(...)``."""
    from keras_captioning.data.vocab import Vocabulary
    from keras_captioning.features.backbones import build_backbone
    from keras_captioning.training.callbacks import read_checkpoint

    meta = read_bundle_meta(bundle_dir)
    spec = meta["backbone"]
    backbone = build_backbone(spec["name"], weights=None, image_size=spec["image_size"], alpha=spec.get("alpha"))
    if spec.get("weights"):
        path = os.path.join(bundle_dir, spec["weights"])
        try:
            backbone.load_weights(path)
        except Exception as err:  # missing, truncated or another backbone's file
            raise CaptioningError(f"{path}: cannot be loaded as the {spec['name']} backbone's weights "
                                  f"({type(err).__name__}: {first_line(err, 200)}); save the bundle again") from None
    elif backbone.weights:
        raise CaptioningError(f"{bundle_dir}: backbone {spec['name']} has weights but the bundle holds none")
    decoding = meta["decoding"]
    return {
        "model": read_checkpoint(os.path.join(bundle_dir, MODEL_FILE), compile=False),  # damaged -> one line
        "backbone": backbone,
        "vocab": Vocabulary.load(os.path.join(bundle_dir, VOCAB_FILE)),
        "image_size": spec["image_size"],
        "feature": meta["feature"],
        "max_length": decoding["max_length"],
        "beam": decoding["beam"],
        "length_penalty": decoding["length_penalty"],
        "backbone_name": spec["name"],
        "alpha": spec.get("alpha"),
        "info": {"source": meta.get("source"), "scores": meta.get("scores", {}),
                 "package_version": meta.get("package_version")},
    }
