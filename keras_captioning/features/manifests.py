"""Feature manifests: worker files, the merged ``manifest.json`` and its schema.

``manifest.json`` schema (format_version 2)::

    format, format_version, kind  "keras_captioning.features", 3, "final" (worker files: "worker")
    package_version, created      keras_captioning.__version__, ISO-8601 UTC time
    backbone, alpha               registry name; MobileNet width multiplier or null
    weights, weights_sha256       "imagenet" | "none" | absolute path; sha256 of that file or null
    image_size                    square input side S
    grid_shape, grid_hw           [R, C] regions x channels; [H, W] with H*W = R
    num_regions, feature_dim, pooled_dim
    dtype                         grid storage dtype ("float16" | "float32"); the pooled vector
                                  (pooled_dim = D) is the grid's mean, derived when read
    max_length, longest_caption   caption cap in tokens (incl. <start>/<end>) or null; longest stored
    vocab, vocab_fingerprint, vocab_size   "vocab.json", Vocabulary.fingerprint(), len(vocab)
    shard_size, num_workers
    counts                        {split: {images, captions, trainable_images, trainable_captions,
                                   truncated_captions, skipped, shards}}  (images/captions written;
                                   "trainable" = with at least one word token)
    shards                        {split: [file names]}
    skipped, num_skipped          [{image_id, path, split, reason}], their number: the dataset's skips
                                  (duplicate ids, missing files, orphan annotations; split null) first
    dataset_skipped               the dataset's skips alone
    seconds                       extraction time summed over shards
    config, config_fingerprint    the fingerprinted settings above
    shard_stats                   {file name: per-shard statistics, with its bytes and sha256};
                                  used to resume: a finished shard is reused only when both match
    ...                           plus the keys of ``extra_manifest``
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re

from keras_captioning import __version__
from keras_captioning.data.tfrecords import FORMAT_VERSION, MANIFEST_FORMAT, MANIFEST_NAME
from keras_captioning.errors import CaptioningError
from keras_captioning.features.feature_folder import FeatureFolder
from keras_captioning.features.fingerprint import differences
from keras_captioning.utils import utc_now, write_json_atomic

logger = logging.getLogger("keras_captioning.features.extract")

VOCAB_NAME = FeatureFolder.VOCAB
RANDOM_BACKBONE_SEED = 1234  # seeds a backbone built with weights=None
RANDOM_BACKBONE_FILE = FeatureFolder.RANDOM_BACKBONE  # its weights, beside the shards (and in each run)
WORKER_MANIFEST = "manifest.worker-{index}-of-{count}.json"
RESERVED_MANIFEST_KEYS = frozenset({
    "kind", "format", "format_version", "package_version", "created", "backbone", "alpha", "weights",
    "weights_sha256", "image_size", "grid_shape", "grid_hw", "num_regions", "feature_dim", "pooled_dim",
    "dtype", "max_length", "longest_caption", "vocab", "vocab_fingerprint", "vocab_size",
    "shard_size", "num_workers", "counts", "shards", "skipped", "num_skipped", "seconds", "config",
    "config_fingerprint", "plan", "shard_stats", "extra", "worker", "updated", "weights_path",
    "dataset_skipped",
})
_WORKER_FILE = re.compile(r"^manifest\.worker-(\d+)-of-(\d+)\.json$")


def finalize_manifest(out_dir, config_fingerprint: str | None = None) -> dict:
    """Merge the worker manifests of ``out_dir`` into ``manifest.json`` and return it.

    Args:
        out_dir: the features folder.
        config_fingerprint: which run to merge; None = the most recently updated worker
            manifest's run.

    Raises:
        CaptioningError: nothing to merge, or some planned shard is not finished (the
            message names them and says to run the remaining workers).
    """
    found = _read_manifests(out_dir)
    workers = [m for m in found.values() if m.get("kind") == "worker"]
    if config_fingerprint is None:
        if not workers:
            if MANIFEST_NAME in found:
                return found[MANIFEST_NAME]
            raise CaptioningError(f"{out_dir}: no worker manifests to merge; run the features step first")
        config_fingerprint = max(workers, key=lambda m: m.get("updated", ""))["config_fingerprint"]
    group = [m for m in found.values() if m.get("config_fingerprint") == config_fingerprint]
    base_candidates = [m for m in group if m.get("kind") == "worker"] or group
    if not base_candidates:
        raise CaptioningError(f"{out_dir}: no manifest for settings {config_fingerprint[:12]}; run the features step")
    base = max(base_candidates, key=lambda m: m.get("updated", m.get("created", "")))
    plan = base.get("plan") or base["shards"]
    stats = _merge_stats(group)
    missing = _unfinished_shards(out_dir, config_fingerprint, plan, stats)
    if missing:
        total = sum(len(names) for names in plan.values())
        raise CaptioningError(
            f"{out_dir}: {len(missing)} of {total} shards are not finished (e.g. {', '.join(missing[:3])}); "
            "run the remaining workers (--num-workers K --worker-index I) and finalize again"
        )

    config = base["config"]
    grid_shape = base.get("grid_shape") or next(s["grid_shape"] for s in stats.values() if s.get("grid_shape"))
    grid_hw = base.get("grid_hw") or next((s.get("grid_hw") for s in stats.values() if s.get("grid_hw")), None)
    counts, skipped = {}, list(base.get("dataset_skipped") or [])
    for split, names in plan.items():
        split_stats = [stats[name] for name in names]
        counts[split] = {
            key: sum(s[key] for s in split_stats)
            for key in ("images", "captions", "trainable_images", "trainable_captions", "truncated_captions")
        }
        counts[split]["skipped"] = sum(len(s["skipped"]) for s in split_stats)
        counts[split]["shards"] = len(names)
        skipped.extend(dict(item, split=split) for s in split_stats for item in s["skipped"])
    weights = config["weights"]
    from_file = weights.startswith("sha256:")
    manifest = {
        "kind": "final",
        "format": MANIFEST_FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "created": utc_now(),
        "backbone": config["backbone"],
        "alpha": config["alpha"],
        "weights": (base.get("weights_path") or weights) if from_file else weights,
        "weights_sha256": weights.split(":", 1)[1] if from_file else None,
        "image_size": config["image_size"],
        "grid_shape": list(grid_shape),
        "grid_hw": grid_hw,
        "num_regions": grid_shape[0],
        "feature_dim": grid_shape[1],
        "pooled_dim": grid_shape[1],
        "dtype": config["dtype"],
        "max_length": config["max_length"],
        "longest_caption": max((s["longest_caption"] for s in stats.values()), default=0),
        "vocab": VOCAB_NAME,
        "vocab_fingerprint": config["vocab_fingerprint"],
        "vocab_size": base.get("vocab_size"),
        "shard_size": config["shard_size"],
        "num_workers": base.get("worker", {}).get("count", 1),
        "counts": counts,
        "shards": plan,
        "skipped": skipped,
        "num_skipped": len(skipped),
        "dataset_skipped": list(base.get("dataset_skipped") or []),  # kept for re-finalizing
        "seconds": round(sum(s["seconds"] for s in stats.values()), 3),
        "config": config,
        "config_fingerprint": config_fingerprint,
        "shard_stats": {name: stats[name] for names in plan.values() for name in names},
    }
    if base.get("kind") == "worker":
        extra = base.get("extra") or {}
    else:  # re-finalizing from an earlier manifest.json: its extra keys are the unreserved ones
        extra = {k: v for k, v in base.items() if k not in RESERVED_MANIFEST_KEYS and not k.startswith("_")}
    for key, value in extra.items():
        manifest.setdefault(key, value)  # reserved keys were refused by extract_features
    write_json_atomic(os.path.join(out_dir, MANIFEST_NAME), manifest, indent=1)
    return manifest


def _fingerprint(config: dict) -> str:
    """The id of one extraction's settings: groups the worker manifests that belong together.

    Not a currency check: whether a folder is current for a config is ``FeatureFolder.decide``.
    """
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()


def _read_manifests(out_dir) -> dict[str, dict]:
    """Every readable manifest file of ``out_dir`` (final and workers), by file name."""
    found = {}
    for name in sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []:
        if name != MANIFEST_NAME and not _WORKER_FILE.match(name):
            continue
        try:
            with open(os.path.join(out_dir, name), encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as err:
            logger.warning("%s: unreadable manifest ignored (%s)", os.path.join(out_dir, name), err)
            continue
        if isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT and "config_fingerprint" in data:
            data["_file"] = name
            found[name] = data
    return found


def _merge_stats(manifests) -> dict:
    """Shard statistics from several manifests; the most recently written wins."""
    merged = {}
    for manifest in manifests:
        for name, stats in (manifest.get("shard_stats") or {}).items():
            if name not in merged or stats.get("written", "") > merged[name].get("written", ""):
                merged[name] = stats
    return merged


def _unfinished_shards(out_dir, fingerprint: str, plan: dict, stats: dict | None = None) -> list[str]:
    if stats is None:
        group = [m for m in _read_manifests(out_dir).values() if m.get("config_fingerprint") == fingerprint]
        stats = _merge_stats(group)
    return [name for names in plan.values() for name in names
            if name not in stats or not os.path.isfile(os.path.join(out_dir, name))]


def _check_folder(out_dir, config: dict, fingerprint: str, plan: dict, overwrite: bool) -> dict:
    """Refuse (or, with overwrite, clean) files of other settings; return reusable shard stats."""
    found = _read_manifests(out_dir)
    others = [m for m in found.values() if m["config_fingerprint"] != fingerprint]
    planned = {name for names in plan.values() for name in names}
    strays = sorted(n for n in os.listdir(out_dir) if FeatureFolder.is_shard_name(n) and n not in planned)
    if (others or strays) and not overwrite:
        folder = FeatureFolder(out_dir)
        if others:
            raise CaptioningError(folder.stale_message(differences(others[0].get("config"), config)))
        raise CaptioningError(folder.stale_message(
            [f"{len(strays)} shard file(s) not in this run's plan (e.g. {strays[0]})"]))
    for manifest in others:
        os.remove(os.path.join(out_dir, manifest["_file"]))
    for name in strays:
        os.remove(os.path.join(out_dir, name))
    return _merge_stats(m for m in found.values() if m["config_fingerprint"] == fingerprint)
