"""The feature-shard format: one ``tf.train.Example`` per image, and the manifest beside it.

An example holds everything training and evaluation need about one image, so nothing
else is read at training time:

    image/id            bytes   the dataset's image id
    features/grid       bytes   the (R, D) region grid as raw little-endian bytes
    features/grid_shape int64   [R, D]
    features/grid_dtype bytes   "float16" or "float32" (the grid's storage dtype)
    captions/text       bytes   (K,) every reference caption, raw text
    captions/ids        int64   all K token-id sequences concatenated ([<start> ... <end>])
    captions/lengths    int64   (K,) length of each sequence, to split ``captions/ids``

The pooled vector the merge model reads is not stored: every backbone defines it as the mean
of the grid over its regions (``features/backbones.py``), so the decoder derives it (format 3;
format 2 stored it as well, which cost 1/R of the grid's bytes per image).

Reading follows the decoder/parser split of tensorflow/models' dataloaders:
``ExampleDecoder`` turns bytes into a dict of tensors (the stored layout), and
``ExampleParser`` (``data/pipeline.py`` uses it) turns that dict into model inputs, with
separate train and eval paths. The manifest check and the damaged-shard finders are
``data/shards.py``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_captioning.errors import CaptioningError
from keras_captioning.ranges import CHOICES

KEY_IMAGE_ID = "image/id"
KEY_GRID = "features/grid"
KEY_GRID_SHAPE = "features/grid_shape"
KEY_GRID_DTYPE = "features/grid_dtype"
KEY_CAPTIONS = "captions/text"
KEY_CAPTION_IDS = "captions/ids"
KEY_CAPTION_LENGTHS = "captions/lengths"

GRID_DTYPES = CHOICES[("features", "dtype")]  # storage dtypes the decoder understands
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "keras_captioning.features"
FORMAT_VERSION = 3  # shard layout; 3: no pooled vector (derived), 2: pooled in the grid dtype


def serialize_example(image_id, grid, captions_text, captions_ids) -> bytes:
    """Serialize one image's features and captions as a ``tf.train.Example``.

    Args:
        image_id: the image id (str; converted with ``str``).
        grid: array (R, D) of float16 or float32; stored as raw bytes in its own dtype.
        captions_text: the K reference captions (str).
        captions_ids: K sequences of token ids (ragged: one list per caption).

    Returns:
        The serialized example.
    """
    grid = np.asarray(grid)
    if grid.ndim != 2 or grid.dtype.name not in GRID_DTYPES:
        raise ValueError(f"grid must be a 2-D float16/float32 array, got {grid.dtype} {grid.shape}")
    if len(captions_text) != len(captions_ids):
        raise ValueError(f"{len(captions_text)} caption texts but {len(captions_ids)} id sequences")
    grid = grid.astype(grid.dtype.newbyteorder("<"), copy=False)  # stored little-endian everywhere
    flat_ids = [int(token) for ids in captions_ids for token in ids]
    feature = {
        KEY_IMAGE_ID: _bytes_feature([str(image_id).encode("utf-8")]),
        KEY_GRID: _bytes_feature([np.ascontiguousarray(grid).tobytes()]),
        KEY_GRID_SHAPE: _int64_feature(list(grid.shape)),
        KEY_GRID_DTYPE: _bytes_feature([grid.dtype.name.encode("ascii")]),
        KEY_CAPTIONS: _bytes_feature([str(text).encode("utf-8") for text in captions_text]),
        KEY_CAPTION_IDS: _int64_feature(flat_ids),
        KEY_CAPTION_LENGTHS: _int64_feature([len(ids) for ids in captions_ids]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


class ExampleDecoder:
    """Serialized example -> dict of tensors, in the stored layout.

    Output (for one example):
        ``image_id`` string scalar; ``grid`` float32 (R, D) (decoded from the stored dtype
        and cast); ``pooled`` float32 (D,), the mean of the grid over its regions (derived,
        not stored); ``captions`` string (K,); ``caption_ids`` int32 (K, L) right-padded
        with 0, L = the longest of the K; ``caption_lengths`` int32 (K,).

    Args:
        grid_dtype: the stored grid dtype ("float16" | "float32"), usually the manifest's
            ``dtype``. None reads it from each example (``features/grid_dtype``) at a small
            cost, for shards without a manifest.
        grid_shape: (R, D) to give ``grid`` a static shape (the manifest's ``grid_shape``);
            None leaves it (None, None).
        pooled_dim: D to give ``pooled`` a static shape; defaults to ``grid_shape[1]``.
        keys: which of ``grid``/``pooled`` to return (both are read from the grid bytes).
    """

    def __init__(
        self,
        grid_dtype: str | None = None,
        grid_shape=None,
        pooled_dim: int | None = None,
        keys=("grid", "pooled"),
    ):
        if grid_dtype is not None and grid_dtype not in GRID_DTYPES:
            raise CaptioningError(f"dtype: grid dtype must be one of {GRID_DTYPES}, got {grid_dtype!r}")
        unknown = set(keys) - {"grid", "pooled"}
        if unknown:
            raise ValueError(f"keys: unknown feature(s) {sorted(unknown)}; use 'grid' and/or 'pooled'")
        self.grid_dtype = grid_dtype
        self.grid_shape = None if grid_shape is None else tuple(int(n) for n in grid_shape)
        if pooled_dim is None and self.grid_shape is not None:
            pooled_dim = self.grid_shape[1]
        self.pooled_dim = pooled_dim
        self.keys = tuple(keys)
        self._spec = {
            KEY_IMAGE_ID: tf.io.FixedLenFeature([], tf.string),
            KEY_CAPTIONS: tf.io.VarLenFeature(tf.string),
            KEY_CAPTION_IDS: tf.io.VarLenFeature(tf.int64),
            KEY_CAPTION_LENGTHS: tf.io.VarLenFeature(tf.int64),
            KEY_GRID: tf.io.FixedLenFeature([], tf.string),
            KEY_GRID_SHAPE: tf.io.FixedLenFeature([2], tf.int64),
        }
        if grid_dtype is None:
            self._spec[KEY_GRID_DTYPE] = tf.io.FixedLenFeature([], tf.string)

    def __call__(self, serialized: tf.Tensor) -> dict:
        parsed = tf.io.parse_single_example(serialized, self._spec)
        lengths = tf.cast(tf.sparse.to_dense(parsed[KEY_CAPTION_LENGTHS]), tf.int32)
        flat_ids = tf.cast(tf.sparse.to_dense(parsed[KEY_CAPTION_IDS]), tf.int32)
        decoded = {
            "image_id": parsed[KEY_IMAGE_ID],
            "captions": tf.sparse.to_dense(parsed[KEY_CAPTIONS]),  # (K,)
            "caption_ids": tf.RaggedTensor.from_row_lengths(flat_ids, lengths).to_tensor(0),  # (K, L)
            "caption_lengths": lengths,  # (K,)
        }
        grid = self._decode_grid(parsed)
        if "grid" in self.keys:
            decoded["grid"] = grid
        if "pooled" in self.keys:
            pooled = tf.reduce_mean(grid, axis=0)
            if self.pooled_dim is not None:
                pooled = tf.ensure_shape(pooled, [self.pooled_dim])
            decoded["pooled"] = pooled
        return decoded

    def _decode_grid(self, parsed: dict) -> tf.Tensor:
        shape = tf.cast(parsed[KEY_GRID_SHAPE], tf.int32)
        raw = parsed[KEY_GRID]
        if self.grid_dtype is not None:
            grid = tf.cast(
                tf.io.decode_raw(raw, tf.as_dtype(self.grid_dtype), little_endian=True), tf.float32
            )
        else:
            grid = _decode_float(raw, parsed[KEY_GRID_DTYPE])
        grid = tf.reshape(grid, shape)  # (R, D)
        if self.grid_shape is not None:
            grid = tf.ensure_shape(grid, self.grid_shape)
        return grid

    def decode_batch(self, serialized: tf.Tensor) -> dict:
        """A batch of serialized examples (G,) -> dict of batched tensors, in one vectorised parse.

        Output: ``grid`` (G, R, D) in the *stored* dtype when ``grid_dtype`` is known (the
        model casts it, inside its graph; float32 otherwise), ``pooled`` float32 (G, D) (the
        grid's mean, computed in float32), ``caption_ids`` int32 ragged (G, K, L). Needs
        ``grid_shape``.
        """
        if self.grid_shape is None:
            raise ValueError("decode_batch: needs a static grid_shape")
        spec = {
            KEY_CAPTION_IDS: tf.io.RaggedFeature(tf.int64),
            KEY_CAPTION_LENGTHS: tf.io.RaggedFeature(tf.int64),
            KEY_GRID: tf.io.FixedLenFeature([], tf.string),
        }
        if self.grid_dtype is None:
            spec[KEY_GRID_DTYPE] = tf.io.FixedLenFeature([], tf.string)
        parsed = tf.io.parse_example(serialized, spec)
        lengths = tf.cast(parsed[KEY_CAPTION_LENGTHS], tf.int32)  # ragged (G, K)
        flat_ids = tf.cast(parsed[KEY_CAPTION_IDS].flat_values, tf.int32)
        decoded = {
            "caption_ids": tf.RaggedTensor.from_nested_row_lengths(
                flat_ids, [lengths.row_lengths(), lengths.flat_values]
            ),
        }
        if self.grid_dtype is not None:
            grid = tf.io.decode_raw(parsed[KEY_GRID], tf.as_dtype(self.grid_dtype), little_endian=True)
        else:
            grid = tf.map_fn(
                lambda args: _decode_float(*args),
                (parsed[KEY_GRID], parsed[KEY_GRID_DTYPE]),
                fn_output_signature=tf.TensorSpec([None], tf.float32),
            )
        grid = tf.reshape(grid, [-1, *self.grid_shape])
        if "grid" in self.keys:
            decoded["grid"] = grid
        if "pooled" in self.keys:
            decoded["pooled"] = tf.reduce_mean(tf.cast(grid, tf.float32), axis=1)  # (G, D)
        return decoded


class ExampleParser:
    """Decoded dict (``ExampleDecoder`` output) -> model inputs.

    Train path (``nonempty_captions`` then ``train_example``): one ``{"features", "captions"}``
    element per (image, caption), captions truncated to ``max_length`` the way
    ``Vocabulary.encode`` does (first ``max_length - 1`` tokens, then ``<end>``).
    Eval path (``eval_example``): ``{"image_id", "features", "references"}`` per image.

    Args:
        feature: "grid" (B, R, D) for the attention model or "pooled" (B, D) for the merge model.
        max_length: cap on caption tokens (incl. <start>/<end>); None keeps the stored length.
        pad_id, start_id, end_id: the vocabulary's special ids (package convention 0, 2, 3).
    """

    def __init__(
        self,
        feature: str = "grid",
        max_length: int | None = None,
        pad_id: int = 0,
        start_id: int = 2,
        end_id: int = 3,
    ):
        if feature not in ("grid", "pooled"):
            raise CaptioningError(f"feature: must be 'grid' or 'pooled', got {feature!r}")
        if max_length is not None and max_length < 2:
            raise CaptioningError(f"max_length: must be at least 2 (<start> and <end>), got {max_length}")
        self.feature = feature
        self.max_length = max_length
        self.pad_id, self.start_id, self.end_id = pad_id, start_id, end_id

    def features(self, decoded: dict) -> tf.Tensor:
        """The selected feature tensor: (R, D) grid or (D,) pooled."""
        return decoded[self.feature]

    def nonempty_captions(self, decoded: dict) -> tuple[tf.Tensor, tf.Tensor]:
        """Caption rows holding at least one word token (not only pad/start/end).

        Returns:
            ``(ids (K', L) int32, lengths (K',) int32)`` with K' <= K.
        """
        ids = decoded["caption_ids"]
        special = (ids == self.pad_id) | (ids == self.start_id) | (ids == self.end_id)
        keep = tf.reduce_any(~special, axis=1)
        return tf.boolean_mask(ids, keep), tf.boolean_mask(decoded["caption_lengths"], keep)

    def caption_rows(self, caption_ids: tf.RaggedTensor, width: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Every non-empty caption of a batch of images, vectorised (the batched train path).

        Args:
            caption_ids: int32 ragged (G, K, L), ``ExampleDecoder.decode_batch``'s ``caption_ids``.
            width: columns of the returned ids (``max_length``, or at least the longest caption).

        Returns:
            ``(image (C,) int32 index into G, ids (C, width) int32 0-padded, lengths (C,) int32)``
            for the C captions holding a word, in image then caption order; captions longer
            than ``width`` (or ``max_length``) keep their first tokens and end with ``<end>``,
            as in ``train_example``.
        """
        limit = width if self.max_length is None else min(width, self.max_length)
        rows = caption_ids.values  # ragged (N, L): all captions of the G images
        tokens = rows.flat_values
        word = (tokens != self.pad_id) & (tokens != self.start_id) & (tokens != self.end_id)
        keep = tf.reduce_any(rows.with_flat_values(word), axis=1)  # (N,)
        image = tf.boolean_mask(tf.cast(caption_ids.value_rowids(), tf.int32), keep)
        lengths = tf.boolean_mask(tf.cast(rows.row_lengths(), tf.int32), keep)
        ids = tf.ragged.boolean_mask(rows, keep).to_tensor(self.pad_id, shape=[None, width])
        if limit < width:
            ids = ids[:, :limit]
        # Same rule as Vocabulary.encode: keep limit - 1 tokens and end with <end>.
        too_long = lengths > limit
        last = tf.equal(tf.range(tf.shape(ids)[1]), limit - 1)
        ids = tf.where(too_long[:, None] & last[None, :], tf.constant(self.end_id, ids.dtype), ids)
        if limit < width:
            ids = tf.pad(ids, [[0, 0], [0, width - limit]])
        return image, ids, tf.minimum(lengths, limit)

    def train_example(self, features: tf.Tensor, ids: tf.Tensor, length: tf.Tensor) -> dict:
        """One training element: ``{"features": features, "captions": int32 (L',)}``."""
        ids = ids[:length]
        if self.max_length is not None:
            too_long = length > self.max_length
            ids = ids[: self.max_length]
            # Same rule as Vocabulary.encode: keep max_length - 1 tokens and end with <end>.
            ids = tf.cond(
                too_long,
                lambda: tf.concat([ids[: self.max_length - 1], [self.end_id]], axis=0),
                lambda: ids,
            )
        return {"features": features, "captions": ids}

    def eval_example(self, decoded: dict) -> dict:
        """One evaluation element: image id, features and the K reference texts."""
        return {
            "image_id": decoded["image_id"],
            "features": self.features(decoded),
            "references": decoded["captions"],
        }


def _decode_float(raw: tf.Tensor, dtype: tf.Tensor) -> tf.Tensor:
    """Raw little-endian bytes stored as ``dtype`` ("float16" | "float32") -> float32 vector."""
    return tf.cond(
        tf.equal(dtype, "float16"),
        lambda: tf.cast(tf.io.decode_raw(raw, tf.float16, little_endian=True), tf.float32),
        lambda: tf.io.decode_raw(raw, tf.float32, little_endian=True),
    )


def _bytes_feature(values: list[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _int64_feature(values: list[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
