"""Images -> CNN features -> TFRecord shards, resumable and shareable between processes.

``extract_features(records, vocab, out_dir, ...)`` writes

    <out>/<split>-00000-of-000NN.tfrecord   one example per image (``data/tfrecords.py``)
    <out>/vocab.json                        the vocabulary the caption ids use
    <out>/manifest.json                     what is there and how it was made (below)

Shards. The records of each split, in input order (the caller makes it deterministic), are
cut into consecutive shards of ``shard_size`` images; splits are taken in sorted name order
and the shards numbered globally (ordinal g). Worker I of K writes the shards with
g % K == I, so K processes (``num_workers``/``worker_index``) share the work without talking
to each other, and which image lands in which shard never depends on K or I. A shard is
written to ``<name>.tmp-<pid>``, fsynced and renamed, so a shard file that exists is
complete. Rerunning skips finished shards (resume); ``overwrite=True`` redoes them.

Manifests. Each worker keeps ``manifest.worker-I-of-K.json`` (rewritten atomically after
every shard) with the run's settings, the whole shard plan and the statistics of its
finished shards; so workers never write the same file. ``finalize_manifest(out_dir)``
merges the statistics of every shard into ``manifest.json``; it runs by itself at the end
of ``extract_features`` once all planned shards exist (with one worker: always), and can be
called again later (CLI ``--finalize``) after the last worker ended; with one worker the
worker file is removed once merged. A shard whose file
exists but whose statistics were never recorded (killed between the rename and the
manifest write) is simply redone. Settings are fingerprinted (backbone, weights, size,
alpha, dtype, shard size, max_length, vocabulary, and the image ids of every shard):
rerunning into a folder made with other settings is an error unless ``overwrite=True``,
which removes the stale manifests and stray shards.

Modules: ``plan.py`` (which image goes to which shard), ``images.py`` (the one image
decoder and the file checks), ``runner.py`` (the CNN pipeline and shard writing),
``manifests.py`` (worker and final manifests, their schema). This module ties them together.
"""

from __future__ import annotations

import glob
import logging
import os
import time

import keras
import numpy as np

from keras_captioning import __version__
from keras_captioning.data.shards import shard_problem
from keras_captioning.data.tfrecords import FORMAT_VERSION, GRID_DTYPES, MANIFEST_FORMAT
from keras_captioning.data.vocab import check_max_length
from keras_captioning.errors import CaptioningError
from keras_captioning.features.backbones import (
    build_backbone,
    get_backbone_spec,
    resolve_alpha,
    resolve_image_size,
    resolve_weights,
)
from keras_captioning.features.feature_folder import FeatureFolder
from keras_captioning.features.images import (  # noqa: F401  (public names of this module)
    LARGE_IMAGE_PIXELS,
    ImageCheck,
    check_image,
    load_image_pil,
)
from keras_captioning.features.manifests import (  # noqa: F401
    RANDOM_BACKBONE_SEED,
    RESERVED_MANIFEST_KEYS,
    WORKER_MANIFEST,
    _check_folder,
    _fingerprint,
    _unfinished_shards,
    finalize_manifest,
)
from keras_captioning.features.plan import _plan_fingerprint, _plan_shards  # noqa: F401
from keras_captioning.features.runner import _FeatureRunner, _grid_hw, _write_shard
from keras_captioning.utils import Progress, atomic_output, sha256_file, utc_now, write_json_atomic

logger = logging.getLogger(__name__)

PROGRESS_SECONDS = 5.0  # interval of the images/s + ETA log line


def extract_features(records, vocab, out_dir, backbone: str = "inception_v3", weights="imagenet",
                     image_size: int | None = None, batch_size: int = 32, shard_size: int = 1000,
                     dtype: str = "float16", num_workers: int = 1, worker_index: int = 0,
                     overwrite: bool = False, max_length: int | None = None,
                     extra_manifest: dict | None = None, alpha: float | None = None,
                     dataset_skipped: list | None = None) -> dict:
    """Extract features of ``records`` into TFRecord shards in ``out_dir`` (see the module docstring).

    Args:
        records: ``CaptionRecord`` list; order decides the shard layout, ``split`` the shard set.
        vocab: ``Vocabulary`` used to store token ids (``vocab.encode(caption, max_length)``);
            saved as ``<out_dir>/vocab.json``.
        out_dir: output folder (created).
        backbone: a key of ``features.backbones.BACKBONES``.
        weights: "imagenet" | "none" | None | path to a local ``.h5``/``.weights.h5`` file.
        image_size: square input side; None = the backbone default.
        batch_size: images per CNN batch.
        shard_size: images per shard.
        dtype: grid storage dtype, "float16" (half the disk) or "float32".
        num_workers, worker_index: this process writes the shards with ordinal % K == I.
        overwrite: redo this worker's finished shards and replace files of other settings.
        max_length: caption cap in tokens incl. <start>/<end>; None keeps every token.
        extra_manifest: more top-level manifest keys (e.g. the dataset and its split settings).
        alpha: MobileNet width multiplier.
        dataset_skipped: records the dataset loader skipped (``records.collect_skips``), listed
            first in the manifest's ``skipped`` (split null) with the images skipped here.

    Returns:
        The final manifest when every shard is done (always with one worker), else this
        worker's manifest (``"kind": "worker"``).
    """
    started = time.monotonic()
    if dtype not in GRID_DTYPES:
        raise CaptioningError(f"dtype: must be one of {GRID_DTYPES}, got {dtype!r}")
    for name, value, low in (("batch_size", batch_size, 1), ("shard_size", shard_size, 1),
                             ("num_workers", num_workers, 1)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise CaptioningError(f"{name}: must be an integer >= {low}, got {value!r}")
    if not isinstance(worker_index, (int, np.integer)) or not 0 <= worker_index < num_workers:
        raise CaptioningError(f"worker_index: must be in [0, {num_workers - 1}], got {worker_index!r}")
    check_max_length(max_length)
    if not records:
        raise CaptioningError("records: no images to extract features from")
    clash = sorted(set(extra_manifest or {}) & RESERVED_MANIFEST_KEYS)
    if clash:
        raise CaptioningError(f"extra_manifest: keys {clash} are reserved by the manifest; rename them")

    get_backbone_spec(backbone)
    size = resolve_image_size(backbone, image_size)
    alpha = resolve_alpha(backbone, alpha)
    weights = resolve_weights(backbone, weights)
    weights_sha256 = sha256_file(weights) if weights not in (None, "imagenet") else None

    shards = _plan_shards(records, shard_size)
    plan = {}
    for shard in shards:
        plan.setdefault(shard.split, []).append(shard.name)
    config = {
        "backbone": backbone,
        "weights": "none" if weights is None else ("imagenet" if weights == "imagenet" else f"sha256:{weights_sha256}"),
        "alpha": alpha,
        "image_size": size,
        "dtype": dtype,
        "shard_size": int(shard_size),
        "max_length": max_length,
        "vocab_fingerprint": vocab.fingerprint(),
        "plan_fingerprint": _plan_fingerprint(shards),
    }
    fingerprint = _fingerprint(config)

    os.makedirs(out_dir, exist_ok=True)
    known = _check_folder(out_dir, config, fingerprint, plan, overwrite)
    _save_vocab(vocab, out_dir)

    mine = [s for s in shards if s.ordinal % num_workers == worker_index]
    done = {}
    for shard in mine:
        if not overwrite and shard.name in known and os.path.isfile(os.path.join(out_dir, shard.name)):
            problem = shard_problem(os.path.join(out_dir, shard.name), known[shard.name])
            if problem:  # truncated, extended or damaged since it was written: redo it
                logger.warning("%s: %s; writing it again", os.path.join(out_dir, shard.name), problem)
                continue
            done[shard.name] = known[shard.name]
    pending = [s for s in mine if s.name not in done]
    for shard in mine:  # half-written files of an interrupted run of this share
        for stale in glob.glob(glob.escape(os.path.join(out_dir, shard.name)) + ".tmp-*"):
            os.remove(stale)
    logger.info("features: %s -> %s; worker %d/%d has %d of %d shards, %d already done",
                backbone, out_dir, worker_index, num_workers, len(mine), len(shards), len(done))

    worker_manifest = {
        "format": MANIFEST_FORMAT, "format_version": FORMAT_VERSION, "kind": "worker",
        "worker": {"index": int(worker_index), "count": int(num_workers)},
        "package_version": __version__, "created": utc_now(), "updated": utc_now(),
        "config": config, "config_fingerprint": fingerprint,
        "weights_path": weights if weights not in (None, "imagenet") else None,
        "plan": plan, "vocab_size": len(vocab), "extra": dict(extra_manifest or {}),
        "grid_shape": None, "grid_hw": None, "shard_stats": dict(done),
        "dataset_skipped": list(dataset_skipped or []),
    }
    for stats in known.values():  # the grid shape of an earlier run, if we build no model
        worker_manifest["grid_shape"] = stats.get("grid_shape") or worker_manifest["grid_shape"]
        worker_manifest["grid_hw"] = stats.get("grid_hw") or worker_manifest["grid_hw"]
    worker_path = os.path.join(out_dir, WORKER_MANIFEST.format(index=worker_index, count=num_workers))

    written = skipped = 0
    if pending:
        if weights is None:
            # Random weights must be the same in every worker and at captioning time: seed them,
            # and keep a copy next to the shards (Captioner.from_run loads it).
            keras.utils.set_random_seed(RANDOM_BACKBONE_SEED)
        model = build_backbone(backbone, weights=weights, image_size=size, alpha=alpha)
        random_file = FeatureFolder(out_dir).random_backbone_path
        if weights is None and model.weights and not os.path.exists(random_file):
            with atomic_output(random_file, suffix=".weights.h5") as tmp:
                model.save_weights(tmp)
        worker_manifest["grid_shape"] = [int(n) for n in model.output["grid"].shape[1:]]
        worker_manifest["grid_hw"] = _grid_hw(model)
        runner = _FeatureRunner(model, size, dtype, batch_size)
        progress = Progress("features", sum(len(s.records) for s in pending), unit="images",
                            emit=logger.info, interval=PROGRESS_SECONDS)
        for shard in pending:
            stats = _write_shard(shard, out_dir, runner, vocab, max_length, progress)
            stats["grid_shape"], stats["grid_hw"] = worker_manifest["grid_shape"], worker_manifest["grid_hw"]
            worker_manifest["shard_stats"][shard.name] = stats
            worker_manifest["updated"] = utc_now()
            write_json_atomic(worker_path, worker_manifest, indent=1)
            written += stats["images"]
            skipped += len(stats["skipped"])
    else:
        write_json_atomic(worker_path, worker_manifest, indent=1)

    seconds = time.monotonic() - started
    logger.info(
        "features: worker %d/%d wrote %d images, skipped %d, %d shards (%d already done) in %.1f s (%.1f images/s)",
        worker_index, num_workers, written, skipped, len(pending), len(done), seconds,
        written / seconds if seconds > 0 else 0.0,
    )
    missing = _unfinished_shards(out_dir, fingerprint, plan)
    if missing:
        logger.info("features: %d shard(s) still to be written by other workers (e.g. %s); "
                    "finalize_manifest merges the manifests once they are done", len(missing), missing[0])
        return worker_manifest
    manifest = finalize_manifest(out_dir, config_fingerprint=fingerprint)
    if num_workers == 1:
        os.remove(worker_path)  # manifest.json holds everything (shard_stats included)
    return manifest


def _save_vocab(vocab, out_dir) -> None:
    with atomic_output(FeatureFolder(out_dir).vocab_path) as tmp:
        vocab.save(tmp)
