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

``manifest.json`` schema (format_version 2)::

    format, format_version, kind  "keras_captioning.features", 2, "final" (worker files: "worker")
    package_version, created      keras_captioning.__version__, ISO-8601 UTC time
    backbone, alpha               registry name; MobileNet width multiplier or null
    weights, weights_sha256       "imagenet" | "none" | absolute path; sha256 of that file or null
    image_size                    square input side S
    grid_shape, grid_hw           [R, C] regions x channels; [H, W] with H*W = R
    num_regions, feature_dim, pooled_dim
    dtype, pooled_dtype           grid storage dtype ("float16" | "float32"); pooled's, the same
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

Images. A thread pool first checks every image of a shard with PIL: missing, empty (0
bytes), unrecognised (e.g. a text file named .jpg) and corrupt files are skipped and listed
with the reason; JPEGs are decoded at 1/8 scale (``draft``), which reads every byte of the
compressed data and so catches truncation, at about 0.6 ms for a 640x480 photo (against
~1 ms for TensorFlow's full decode and ~100 ms for InceptionV3 on CPU); PNG/GIF/BMP get
``verify()`` (chunk checksums, no decode). Files that pass go through a parallel tf.data
pipeline: ``tf.io.decode_image(channels=3, expand_animations=False)`` (JPEG incl. CMYK,
PNG incl. 16-bit and alpha, GIF first frame, BMP; grayscale -> RGB, alpha dropped), then
``tf.image.resize`` to S x S (bilinear, aspect ratio not kept: the study's preprocessing).
Only two kinds of files take a Python (PIL) path inside the pipeline: images above
``LARGE_IMAGE_PIXELS`` and formats TensorFlow does not decode (TIFF, WebP, ...). PIL then
decodes JPEGs at a reduced DCT scale (``draft``) and shrinks the result to at most 2 S per
side before TensorFlow resizes it, so a 12000 x 9000 JPEG costs a few MB instead of 324 MB
(other formats are decoded in full, up to PIL's decompression-bomb limit). Anything
TensorFlow still refuses is dropped by ``ignore_errors`` and retried with PIL; if PIL fails
too it is skipped with PIL's reason. A 1 x 1 image is valid and is simply resized. EXIF
orientation is ignored, as in the study. A float16 grid that overflows (inf) stops the
run with a message to use ``dtype="float32"``.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import hashlib
import json
import logging
import math
import os
import re
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from keras_captioning import __version__
from keras_captioning.data.tfrecords import (
    FORMAT_VERSION,
    GRID_DTYPES,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    serialize_example,
    sha256_file,
    shard_problem,
)
from keras_captioning.errors import CaptioningError
from keras_captioning.features.backbones import (
    build_backbone,
    get_backbone_spec,
    resolve_alpha,
    resolve_image_size,
    resolve_weights,
)
from keras_captioning.features.images import decode_image, resize_image

logger = logging.getLogger(__name__)

VOCAB_NAME = "vocab.json"
SHARD_PATTERN = "{split}-{index:05d}-of-{count:05d}.tfrecord"
WORKER_MANIFEST = "manifest.worker-{index}-of-{count}.json"
LARGE_IMAGE_PIXELS = 4096 * 4096  # above this the image is shrunk by PIL before TensorFlow sees it
RANDOM_BACKBONE_SEED = 1234  # seeds a backbone built with weights=None
RANDOM_BACKBONE_FILE = "backbone.weights.h5"  # its weights, saved beside the shards
TF_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP")  # PIL format names tf.io.decode_image reads
PROGRESS_SECONDS = 5.0  # interval of the images/s + ETA log line
MAX_SKIP_LOGS = 5  # per shard; every skip is listed in the manifest anyway
CHECK_THREADS = 8  # PIL checks are I/O and C decode (GIL released): threads are enough
RESERVED_MANIFEST_KEYS = frozenset({
    "kind", "format", "format_version", "package_version", "created", "backbone", "alpha", "weights",
    "weights_sha256", "image_size", "grid_shape", "grid_hw", "num_regions", "feature_dim", "pooled_dim",
    "dtype", "pooled_dtype", "max_length", "longest_caption", "vocab", "vocab_fingerprint", "vocab_size",
    "shard_size", "num_workers", "counts", "shards", "skipped", "num_skipped", "seconds", "config",
    "config_fingerprint", "plan", "shard_stats", "extra", "worker", "updated", "weights_path",
    "dataset_skipped",
})
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_.]+$")
_WORKER_FILE = re.compile(r"^manifest\.worker-(\d+)-of-(\d+)\.json$")


@dataclasses.dataclass
class _Shard:
    split: str
    index: int
    count: int
    ordinal: int  # global number over all splits: decides the worker
    records: list

    @property
    def name(self) -> str:
        return SHARD_PATTERN.format(split=self.split, index=self.index, count=self.count)


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
        dtype: grid and pooled storage dtype, "float16" (half the disk) or "float32".
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
    if max_length is not None and max_length < 2:
        raise CaptioningError(f"max_length: must be at least 2 (<start> and <end>), got {max_length}")
    if not records:
        raise CaptioningError("records: no images to extract features from")
    clash = sorted(set(extra_manifest or {}) & RESERVED_MANIFEST_KEYS)
    if clash:
        raise CaptioningError(f"extra_manifest: keys {clash} are reserved by the manifest; rename them")

    get_backbone_spec(backbone)
    size = resolve_image_size(backbone, image_size)
    alpha = resolve_alpha(backbone, alpha)
    weights = resolve_weights(backbone, weights)
    weights_sha256 = _sha256_file(weights) if weights not in (None, "imagenet") else None

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
        "package_version": __version__, "created": _now(), "updated": _now(),
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
        random_file = os.path.join(out_dir, RANDOM_BACKBONE_FILE)
        if weights is None and model.weights and not os.path.exists(random_file):
            tmp = os.path.join(out_dir, f"tmp-{os.getpid()}-{RANDOM_BACKBONE_FILE}")
            model.save_weights(tmp)
            os.replace(tmp, random_file)
        worker_manifest["grid_shape"] = [int(n) for n in model.output["grid"].shape[1:]]
        worker_manifest["grid_hw"] = _grid_hw(model)
        runner = _FeatureRunner(model, size, dtype, batch_size)
        progress = _Progress(sum(len(s.records) for s in pending))
        for shard in pending:
            stats = _write_shard(shard, out_dir, runner, vocab, max_length, progress)
            stats["grid_shape"], stats["grid_hw"] = worker_manifest["grid_shape"], worker_manifest["grid_hw"]
            worker_manifest["shard_stats"][shard.name] = stats
            worker_manifest["updated"] = _now()
            _write_json_atomic(worker_path, worker_manifest)
            written += stats["images"]
            skipped += len(stats["skipped"])
    else:
        _write_json_atomic(worker_path, worker_manifest)

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
        "created": _now(),
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
        "pooled_dtype": config["dtype"],
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
    _write_json_atomic(os.path.join(out_dir, MANIFEST_NAME), manifest)
    return manifest


# ----------------------------------------------------------------------------- image checks


@dataclasses.dataclass
class ImageCheck:
    """Outcome of ``check_image``: usable or not, and whether it needs the PIL path."""

    ok: bool
    use_pil: bool = False
    reason: str = ""


def check_image(path: str) -> ImageCheck:
    """Cheap PIL check of one image file (see the module docstring); never raises."""
    try:
        if os.path.isdir(path):
            return ImageCheck(False, reason="is a directory, not an image file")
        if os.path.getsize(path) == 0:
            return ImageCheck(False, reason="empty file (0 bytes)")
    except FileNotFoundError:
        return ImageCheck(False, reason="file not found")
    except OSError as err:
        return ImageCheck(False, reason=f"cannot read the file ({err.strerror})")
    try:
        with Image.open(path) as image:
            fmt, (width, height) = image.format, image.size
            if fmt in ("JPEG", "MPO"):
                # 1/8-scale decode: reads all compressed data (finds truncation) at a fraction of the cost.
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                image.load()
            else:
                image.verify()
    except UnidentifiedImageError:
        return ImageCheck(False, reason="not an image (format not recognised)")
    except Image.DecompressionBombError as err:
        return ImageCheck(False, reason=f"too many pixels ({_first_line(err)}); shrink it or raise "
                                        "PIL.Image.MAX_IMAGE_PIXELS")
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, struct.error...
        return ImageCheck(False, reason=f"corrupt or truncated image data ({_first_line(err)})")
    if width < 1 or height < 1:
        return ImageCheck(False, reason=f"no pixels ({width}x{height})")
    return ImageCheck(True, use_pil=width * height > LARGE_IMAGE_PIXELS or fmt not in TF_FORMATS)


def load_image_pil(path: str, max_side: int) -> np.ndarray:
    """Decode ``path`` with PIL to uint8 RGB (h, w, 3), at most ``max_side`` per side.

    JPEGs are decoded at a reduced DCT scale (``draft``) so huge photos never exist at full
    size in memory; 16-bit images are scaled to 8 bits (/257, as TensorFlow does); palette
    and alpha images are converted through RGBA and the alpha channel is dropped.
    """
    with Image.open(path) as image:
        if image.format in ("JPEG", "MPO"):
            image.draft("RGB", (max_side, max_side))
        image.load()
        rgb = _to_rgb(image)
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if image.mode != "F":
            values = values / 257.0  # 16-bit range -> 8-bit, like tf.io.decode_png(dtype=uint8)
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    if image.mode in ("P", "PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")  # palette transparency and premultiplied alpha resolved first
    return image if image.mode == "RGB" else image.convert("RGB")


# ----------------------------------------------------------------------------- CNN + writing


class _FeatureRunner:
    """The tf.data image pipeline and the CNN for one backbone."""

    def __init__(self, model, image_size: int, dtype: str, batch_size: int):
        self.image_size = image_size
        self.max_side = 2 * image_size  # PIL path: shrink to this, TF resizes the rest (anti-aliasing headroom)
        self.batch_size = batch_size
        storage = tf.as_dtype(dtype)

        @tf.function(reduce_retracing=True)
        def run(images):
            out = model(images, training=False)
            return tf.cast(out["grid"], storage), tf.cast(out["pooled"], storage)

        self.run = run

    def images(self, indices, paths, use_pil) -> tf.data.Dataset:
        """Batches of (index int64 (B,), image float32 (B, S, S, 3)); undecodable files dropped."""
        size, max_side = self.image_size, self.max_side

        def load(index, path, pil):
            image = tf.cond(
                pil,
                lambda: _pil_decode(path, max_side),
                lambda: decode_image(tf.io.read_file(path)),
            )
            return index, resize_image(image, size)  # float32 in [0, 255]

        ds = tf.data.Dataset.from_tensor_slices(
            (np.asarray(indices, np.int64), np.asarray(paths, dtype=object).astype(str), np.asarray(use_pil, bool))
        )
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.ignore_errors()  # safety net: a file the check passed but TensorFlow refuses is retried below
        return ds.batch(self.batch_size).prefetch(2)


def _pil_decode(path: tf.Tensor, max_side: int) -> tf.Tensor:
    image = tf.numpy_function(lambda p: load_image_pil(p.decode("utf-8"), max_side), [path], tf.uint8,
                              stateful=False)
    image.set_shape([None, None, 3])
    return image


def _write_shard(shard: _Shard, out_dir: str, runner: _FeatureRunner, vocab, max_length, progress) -> dict:
    started = time.monotonic()
    path = os.path.join(out_dir, shard.name)
    tmp = f"{path}.tmp-{os.getpid()}"
    records = shard.records
    with warnings.catch_warnings():
        # 100-180 Mpixel images are handled safely (reduced decode); PIL's warning is noise here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with ThreadPoolExecutor(CHECK_THREADS) as pool:
            checks = list(pool.map(check_image, [r.image_path for r in records]))
        skipped = [_skip(records[i], c.reason) for i, c in enumerate(checks) if not c.ok]
        good = [i for i, c in enumerate(checks) if c.ok]

        stats = {"split": shard.split, "index": shard.index, "images": 0, "captions": 0, "trainable_images": 0,
                 "trainable_captions": 0, "truncated_captions": 0, "longest_caption": 0}
        seen, counted = set(), 0
        try:
            with tf.io.TFRecordWriter(tmp) as writer:
                if good:
                    batches = runner.images(good, [records[i].image_path for i in good],
                                            [checks[i].use_pil for i in good])
                    for indices, images in batches:
                        grids, pooled = runner.run(images)
                        _write_batch(writer, records, indices.numpy(), grids.numpy(), pooled.numpy(),
                                     vocab, max_length, stats)
                        seen.update(indices.numpy().tolist())
                        progress.update(len(indices))
                        counted += len(indices)
                retry = [i for i in good if i not in seen]
                if retry:
                    arrays, ok = [], []
                    for i in retry:
                        try:
                            arrays.append(load_image_pil(records[i].image_path, runner.max_side))
                            ok.append(i)
                        except Exception as err:  # any decoder failure means "skip it"
                            skipped.append(_skip(records[i], f"could not be decoded ({_first_line(err)})"))
                    for start in range(0, len(ok), runner.batch_size):
                        chunk = arrays[start:start + runner.batch_size]
                        images = tf.stack([resize_image(a, runner.image_size) for a in chunk])
                        grids, pooled = runner.run(images)
                        _write_batch(writer, records, np.asarray(ok[start:start + runner.batch_size]),
                                     grids.numpy(), pooled.numpy(), vocab, max_length, stats)
                    if ok:
                        logger.debug("%s: %d image(s) decoded by PIL after TensorFlow refused them", shard.name, len(ok))
            progress.update(len(records) - counted)  # retried and skipped images
            _fsync(tmp)
            os.replace(tmp, path)
            _fsync(out_dir)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    for item in skipped[:MAX_SKIP_LOGS]:
        logger.warning("skipped image %s (%s): %s", item["image_id"], item["path"], item["reason"])
    if len(skipped) > MAX_SKIP_LOGS:
        logger.warning("%s: skipped %d more images; the manifest lists them all", shard.name,
                       len(skipped) - MAX_SKIP_LOGS)
    stats["skipped"] = skipped
    stats["seconds"] = round(time.monotonic() - started, 3)
    stats["bytes"] = os.path.getsize(path)
    stats["sha256"] = sha256_file(path)  # verified before a finished shard is trusted again
    stats["written"] = _now()
    return stats


def _write_batch(writer, records, indices, grids, pooled, vocab, max_length, stats) -> None:
    specials = {vocab.pad_id, vocab.start_id, vocab.end_id}
    if not np.isfinite(grids).all():
        bad = records[int(indices[int(np.argmin(np.isfinite(grids).reshape(len(indices), -1).all(axis=1)))])]
        hint = "extract with dtype='float32'" if grids.dtype == np.float16 else "check the backbone weights"
        raise CaptioningError(f"{bad.image_path}: the backbone produced values that do not fit {grids.dtype} "
                              f"(inf/nan); {hint}")
    for row, index in enumerate(indices):
        record = records[int(index)]
        ids = [vocab.encode(caption, max_length) for caption in record.captions]
        if max_length is not None:
            stats["truncated_captions"] += sum(len(vocab.encode(c)) > max_length for c in record.captions)
        trainable = sum(any(token not in specials for token in seq) for seq in ids)
        writer.write(serialize_example(record.image_id, grids[row], pooled[row], record.captions, ids))
        stats["images"] += 1
        stats["captions"] += len(ids)
        stats["trainable_captions"] += trainable
        stats["trainable_images"] += int(trainable > 0)
        stats["longest_caption"] = max([stats["longest_caption"], *map(len, ids)])


def _skip(record, reason: str) -> dict:
    return {"image_id": record.image_id, "path": record.image_path, "reason": reason}


class _Progress:
    """Logs images/s and ETA at most every ``PROGRESS_SECONDS``."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.started = self.last = time.monotonic()

    def update(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if count <= 0 or now - self.last < PROGRESS_SECONDS or self.done >= self.total:
            return
        self.last = now
        rate = self.done / max(now - self.started, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        logger.info("features: %d/%d images (%.0f%%), %.1f images/s, ETA %s", self.done, self.total,
                    100.0 * self.done / max(self.total, 1), rate, _duration(eta))


# ----------------------------------------------------------------------------- plan + manifests


def _plan_shards(records, shard_size: int) -> list[_Shard]:
    by_split: dict[str, list] = {}
    for record in records:
        if not _SPLIT_NAME.match(str(record.split)):
            raise CaptioningError(f"split: {record.split!r} (image {record.image_id}) cannot name a shard file; "
                                  "use letters, digits, '_' or '.'")
        by_split.setdefault(record.split, []).append(record)
    shards, ordinal = [], 0
    for split in sorted(by_split):
        items = by_split[split]
        count = math.ceil(len(items) / shard_size)
        for index in range(count):
            shards.append(_Shard(split, index, count, ordinal, items[index * shard_size:(index + 1) * shard_size]))
            ordinal += 1
    return shards


def _plan_fingerprint(shards: list[_Shard]) -> str:
    digest = hashlib.sha256()
    for shard in shards:
        digest.update(json.dumps([shard.name, [str(r.image_id) for r in shard.records]]).encode("utf-8"))
    return digest.hexdigest()


def _fingerprint(config: dict) -> str:
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
    strays = sorted(n for n in os.listdir(out_dir) if n.endswith(".tfrecord") and n not in planned)
    if (others or strays) and not overwrite:
        if others:
            old = others[0].get("config", {})
            changed = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in config.items() if old.get(k) != v]
            what = f"features made with other settings ({'; '.join(changed) or 'unknown'})"
        else:
            what = f"{len(strays)} shard file(s) not in this run's plan (e.g. {strays[0]})"
        raise CaptioningError(f"{out_dir}: holds {what}; pass overwrite=True (--overwrite) to replace "
                              "them, or choose another folder")
    for manifest in others:
        os.remove(os.path.join(out_dir, manifest["_file"]))
    for name in strays:
        os.remove(os.path.join(out_dir, name))
    return _merge_stats(m for m in found.values() if m["config_fingerprint"] == fingerprint)


def _save_vocab(vocab, out_dir) -> None:
    tmp = os.path.join(out_dir, f"{VOCAB_NAME}.tmp-{os.getpid()}")
    vocab.save(tmp)
    os.replace(tmp, os.path.join(out_dir, VOCAB_NAME))


def _write_json_atomic(path: str, data: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    payload = {k: v for k, v in data.items() if not k.startswith("_")}
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1, sort_keys=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _grid_hw(model) -> list[int] | None:
    """[H, W] of the spatial map before it was flattened into regions."""
    try:
        height, width = model.get_layer("grid").input.shape[1:3]
    except (ValueError, AttributeError):  # not a build_backbone model
        return None
    return [int(height), int(width)] if height and width else None


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:300] if lines else type(err).__name__
