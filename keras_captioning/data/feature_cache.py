"""A split's features held in memory: read and parsed from the shards once per run.

``train.cache_features`` (``auto``: when they take at most ``CACHE_LIMIT_BYTES``): the
training pipeline then draws image indices instead of reading records, so after the first
read there are no file reads, record copies or proto parses; each batch's features are one
gather from memory. Each epoch is a full seeded shuffle of the split's images (the
streaming pipeline shuffles within a buffer), so a cached run and a streaming run see their
data in different orders; either is seeded and resumes exactly.
"""

from __future__ import annotations

import logging
import math
import time

import tensorflow as tf

from keras_captioning.data.shards import decoder_for, shard_files
from keras_captioning.data.tfrecords import ExampleDecoder
from keras_captioning.errors import CaptioningError

log = logging.getLogger(__name__)

CACHE_LIMIT_BYTES = 4 * 2**30  # "auto": an InceptionV3 float16 grid is 256 KiB: ~16 000 images


def cached_bytes(manifest: dict, split: str, feature: str) -> int:
    """Bytes the cache of ``split``'s ``feature`` takes, from the manifest alone."""
    images = int(manifest.get("counts", {}).get(split, {}).get("images", 0))
    if feature == "pooled":
        return images * int(manifest["pooled_dim"]) * 4  # derived in float32
    itemsize = tf.as_dtype(manifest["dtype"]).size
    return images * math.prod(int(d) for d in manifest["grid_shape"]) * itemsize


class FeatureCache:
    """Every image of a split, decoded once: its ``feature`` and its captions' token ids.

    ``features`` (N, ...) stays in the stored dtype (the pooled vector in float32) in a
    non-trainable CPU variable; ``caption_ids`` is int32 ragged (N, K, L). In the pipeline an
    image is its index: ``decode_batch(indices)`` gives what ``ExampleDecoder.decode_batch``
    gives for records, with the indices in place of the features, and ``gather(indices)``
    turns a batch's indices into its features.
    """

    def __init__(self, features, caption_ids: tf.RaggedTensor, feature: str = "grid"):
        with tf.init_scope(), tf.device("/cpu:0"):
            self.features = tf.Variable(features, trainable=False, name=f"cached_{feature}")
        self.caption_ids = caption_ids
        self.feature = feature

    @classmethod
    def from_shards(cls, shard_pattern, feature: str = "grid") -> FeatureCache:
        """The cache of the shards a glob (or list) names, as ``make_train_dataset`` reads them."""
        files = shard_files(shard_pattern)
        return cls.load(files, decoder_for(files, keys=(feature,)), feature)

    @classmethod
    def load(cls, files: list[str], decoder: ExampleDecoder, feature: str = "grid", batch: int = 256):
        """Reads ``files`` (sorted shard paths) once; the decoder must know the grid's shape."""
        start = time.perf_counter()
        features, captions = [], []
        decoded = tf.data.TFRecordDataset(files).batch(batch).map(decoder.decode_batch)
        for part in decoded.prefetch(tf.data.AUTOTUNE):
            features.append(part[feature])
            captions.append(part["caption_ids"])
        if not features:
            raise CaptioningError(f"{files[0]}: no records to cache")
        cache = cls(tf.concat(features, axis=0), tf.concat(captions, axis=0), feature)
        log.info("features of %d images held in memory (%.0f MiB, read in %.1f s)", cache.num_images,
                 cache.nbytes / 2**20, time.perf_counter() - start)
        return cache

    @property
    def num_images(self) -> int:
        return int(self.features.shape[0])

    @property
    def nbytes(self) -> int:
        return self.num_images * math.prod(self.features.shape[1:]) * self.features.dtype.size

    def decode_batch(self, indices: tf.Tensor) -> dict:
        indices = tf.cast(indices, tf.int32)
        return {self.feature: indices, "caption_ids": tf.gather(self.caption_ids, indices)}

    def gather(self, indices: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.features, indices)
