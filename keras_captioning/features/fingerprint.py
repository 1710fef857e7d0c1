"""Whether a feature folder is current for a config: the one owner of "reuse, extract or refuse".

``feature_fingerprint(cfg)`` lists every setting that changes what the shards hold: the
dataset and its subset/split, the vocabulary size, the caption cap, the backbone, its
weights (name and size of a local weights file), input size, width multiplier, storage
dtype, shard size and the shard format version. It is stored in ``manifest.json`` under
``feature_fingerprint`` by ``build_features``; ``FeatureFolder.decide(cfg)`` (the folder's
owner, ``features/feature_folder.py``) compares it with the folder, with ``differences``:

    reuse     a finished manifest with the same fingerprint and every shard intact
    extract   no finished manifest, damaged shards, or a stale folder that is the config's
              own (``features/<name>``: ``features.out_dir`` not set or set to that); stale
              shards are replaced
    refuse    a stale folder given explicitly (any other ``features.out_dir``, e.g. one shared
              by several experiments): nothing is overwritten without ``--overwrite``

A manifest without a fingerprint (written before it existed) is stale.
"""

from __future__ import annotations

import json
import os

from keras_captioning.config import ExperimentConfig

FINGERPRINT_KEY = "feature_fingerprint"


def feature_fingerprint(cfg: ExperimentConfig) -> dict:
    """The settings that decide the shards' content, as a flat ``{"section.key": value}`` dict."""
    from keras_captioning.data.tfrecords import FORMAT_VERSION
    from keras_captioning.features.backbones import resolve_alpha, resolve_image_size, resolve_weights

    data, feats = cfg.data, cfg.features
    weights = resolve_weights(feats.backbone, feats.weights)
    if weights not in (None, "imagenet"):
        # the file's name and size, not its folder: moving a checkout must not make features stale
        weights = {"file": os.path.basename(weights), "bytes": os.path.getsize(weights)}
    settings = {
        "data.format": data.format,
        "data.root": os.path.normpath(data.root) if data.root else data.root,
        "data.captions": data.captions,
        "data.images": data.images,
        "data.num_images": data.num_images,
        "data.splits": data.splits,
        "data.seed": data.seed,
        "data.vocab_size": data.vocab_size,
        "data.max_length": data.max_length,
        "features.backbone": feats.backbone,
        "features.weights": weights or "none",
        "features.image_size": resolve_image_size(feats.backbone, feats.image_size),
        "features.alpha": resolve_alpha(feats.backbone, feats.alpha),
        "features.dtype": feats.dtype,
        "features.shard_size": feats.shard_size,
        "shard_format": FORMAT_VERSION,
    }
    if data.format == "table":  # which columns hold what
        for key in ("image_column", "caption_column", "split_column", "delimiter"):
            settings[f"data.{key}"] = getattr(data, key)
    if data.format == "synthetic":  # the generated dataset's own settings
        settings["data.synthetic_images"] = data.synthetic_images
        settings["data.synthetic_image_size"] = data.synthetic_image_size
    return json.loads(json.dumps(settings))  # JSON types, as read back from a manifest


def differences(old: dict | None, new: dict) -> list[str]:
    """``["name: old -> new", ...]`` for the settings that differ (all of them when ``old`` is None)."""
    if not old:
        return ["no fingerprint (written by an older version)"]
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def is_own_folder(cfg: ExperimentConfig) -> bool:
    """True when the features folder is the config's own: ``features/<name>``, by default or spelled out."""
    own = os.path.join("features", cfg.name)
    return not cfg.features.out_dir or os.path.normpath(cfg.features.out_dir) == os.path.normpath(own)
