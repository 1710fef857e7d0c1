"""The CNN runner: a parallel tf.data image pipeline into the backbone, and shard writing.

Every image goes through ``images.py`` (check, then the one decoder); see ``extract.py`` for
the shard layout and ``manifests.py`` for the per-shard statistics written here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tensorflow as tf
from PIL import Image

from keras_captioning.data.tfrecords import serialize_example
from keras_captioning.errors import CaptioningError
from keras_captioning.features.images import check_image, load_image_pil, load_pixels, resize_image
from keras_captioning.features.plan import _Shard
from keras_captioning.utils import atomic_output, first_line, fsync_path, sha256_file, utc_now

logger = logging.getLogger("keras_captioning.features.extract")

MAX_SKIP_LOGS = 5  # per shard; every skip is listed in the manifest anyway
CHECK_THREADS = 8  # PIL checks are I/O and C decode (GIL released): threads are enough


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
            return tf.cast(out["grid"], storage)  # the pooled vector is derived from it when read

        self.run = run

    def images(self, indices, paths, use_pil) -> tf.data.Dataset:
        """Batches of (index int64 (B,), image float32 (B, S, S, 3)); undecodable files dropped."""
        size = self.image_size

        def load(index, path, pil):
            return index, load_pixels(path, pil, size)  # float32 in [0, 255]

        ds = tf.data.Dataset.from_tensor_slices(
            (np.asarray(indices, np.int64), np.asarray(paths, dtype=object).astype(str), np.asarray(use_pil, bool))
        )
        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.ignore_errors()  # safety net: a file the check passed but TensorFlow refuses is retried below
        return ds.batch(self.batch_size).prefetch(2)


def _write_shard(shard: _Shard, out_dir: str, runner: _FeatureRunner, vocab, max_length, progress) -> dict:
    started = time.monotonic()
    path = os.path.join(out_dir, shard.name)
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
        with atomic_output(path) as tmp, _file_errors(tmp), tf.io.TFRecordWriter(tmp) as writer:
            if good:
                batches = runner.images(good, [records[i].image_path for i in good],
                                        [checks[i].use_pil for i in good])
                for indices, images in batches:
                    grids = runner.run(images)
                    _write_batch(writer, records, indices.numpy(), grids.numpy(), vocab, max_length, stats)
                    seen.update(indices.numpy().tolist())
                    progress.add(len(indices))
                    counted += len(indices)
            retry = [i for i in good if i not in seen]
            if retry:
                arrays, ok = [], []
                for i in retry:
                    try:
                        arrays.append(load_image_pil(records[i].image_path, runner.max_side))
                        ok.append(i)
                    except Exception as err:  # any decoder failure means "skip it"
                        skipped.append(_skip(records[i], f"could not be decoded ({first_line(err)})"))
                for start in range(0, len(ok), runner.batch_size):
                    chunk = arrays[start:start + runner.batch_size]
                    images = tf.stack([resize_image(a, runner.image_size) for a in chunk])
                    grids = runner.run(images)
                    _write_batch(writer, records, np.asarray(ok[start:start + runner.batch_size]),
                                 grids.numpy(), vocab, max_length, stats)
                if ok:
                    logger.debug("%s: %d image(s) decoded by PIL after TensorFlow refused them", shard.name, len(ok))
        progress.add(len(records) - counted)  # retried and skipped images
        fsync_path(out_dir)
    for item in skipped[:MAX_SKIP_LOGS]:
        logger.warning("skipped image %s (%s): %s", item["image_id"], item["path"], item["reason"])
    if len(skipped) > MAX_SKIP_LOGS:
        logger.warning("%s: skipped %d more images; the manifest lists them all", shard.name,
                       len(skipped) - MAX_SKIP_LOGS)
    stats["skipped"] = skipped
    stats["seconds"] = round(time.monotonic() - started, 3)
    stats["bytes"] = os.path.getsize(path)
    stats["sha256"] = sha256_file(path)  # verified before a finished shard is trusted again
    stats["written"] = utc_now()
    return stats


@contextlib.contextmanager
def _file_errors(path: str):
    """TensorFlow's errors about writing ``path`` (no space, no permission) as ``OSError``."""
    try:
        yield
    except tf.errors.OpError as err:
        if path not in str(err):
            raise
        raise OSError(str(err).replace(path, "").strip("; ")) from None


def _write_batch(writer, records, indices, grids, vocab, max_length, stats) -> None:
    if not np.isfinite(grids).all():
        bad = records[int(indices[int(np.argmin(np.isfinite(grids).reshape(len(indices), -1).all(axis=1)))])]
        hint = "extract with dtype='float32'" if grids.dtype == np.float16 else "check the backbone weights"
        raise CaptioningError(f"{bad.image_path}: the backbone produced values that do not fit {grids.dtype} "
                              f"(inf/nan); {hint}")
    for row, index in enumerate(indices):
        record = records[int(index)]
        full = [vocab.encode(caption) for caption in record.captions]
        ids = [vocab.truncate(seq, max_length) for seq in full]
        stats["truncated_captions"] += sum(len(whole) > len(kept) for whole, kept in zip(full, ids))
        trainable = sum(map(vocab.has_word, ids))
        writer.write(serialize_example(record.image_id, grids[row], record.captions, ids))
        stats["images"] += 1
        stats["captions"] += len(ids)
        stats["trainable_captions"] += trainable
        stats["trainable_images"] += int(trainable > 0)
        stats["longest_caption"] = max([stats["longest_caption"], *map(len, ids)])


def _skip(record, reason: str) -> dict:
    return {"image_id": record.image_id, "path": record.image_path, "reason": reason}


def _grid_hw(model) -> list[int] | None:
    """[H, W] of the spatial map before it was flattened into regions."""
    try:
        height, width = model.get_layer("grid").input.shape[1:3]
    except (ValueError, AttributeError):  # not a build_backbone model
        return None
    return [int(height), int(width)] if height and width else None
