"""The feature-shard format: one ``tf.train.Example`` per image, and the manifest beside it.

An example holds everything training and evaluation need about one image, so nothing
else is read at training time:

    image/id            bytes   the dataset's image id
    features/grid       bytes   the (R, D) region grid as raw little-endian bytes
    features/grid_shape int64   [R, D]
    features/grid_dtype bytes   "float16" or "float32" (the grid's storage dtype)
    features/pooled     bytes   (D,) global average of the grid, raw little-endian bytes
    features/pooled_dtype bytes "float16" or "float32" (stored like the grid: its dtype)
    captions/text       bytes   (K,) every reference caption, raw text
    captions/ids        int64   all K token-id sequences concatenated ([<start> ... <end>])
    captions/lengths    int64   (K,) length of each sequence, to split ``captions/ids``

Reading follows the decoder/parser split of tensorflow/models' dataloaders:
``ExampleDecoder`` turns bytes into a dict of tensors (the stored layout), and
``ExampleParser`` (``data/pipeline.py`` uses it) turns that dict into model inputs, with
separate train and eval paths.

``read_manifest(dir)`` loads ``<dir>/manifest.json`` written by
``keras_captioning.features.extract`` (its schema is documented there).
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from keras_captioning.errors import CaptioningError
from keras_captioning.utils import sha256_file  # noqa: F401  (re-exported: shard checksums)

KEY_IMAGE_ID = "image/id"
KEY_GRID = "features/grid"
KEY_GRID_SHAPE = "features/grid_shape"
KEY_GRID_DTYPE = "features/grid_dtype"
KEY_POOLED = "features/pooled"
KEY_POOLED_DTYPE = "features/pooled_dtype"
KEY_CAPTIONS = "captions/text"
KEY_CAPTION_IDS = "captions/ids"
KEY_CAPTION_LENGTHS = "captions/lengths"

GRID_DTYPES = ("float16", "float32")  # storage dtypes the decoder understands
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "keras_captioning.features"
FORMAT_VERSION = 2  # shard layout; 2: pooled stored in the grid dtype (raw bytes), 1: float32 floats


def serialize_example(image_id, grid, pooled, captions_text, captions_ids) -> bytes:
    """Serialize one image's features and captions as a ``tf.train.Example``.

    Args:
        image_id: the image id (str; converted with ``str``).
        grid: array (R, D) of float16 or float32; stored as raw bytes in its own dtype.
        pooled: array (D,); stored in the grid's dtype (float16 halves its bytes; the
            pooled vector is the grid's mean, so it loses no more than the grid does).
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
    pooled = np.asarray(pooled).ravel().astype(grid.dtype, copy=False)
    flat_ids = [int(token) for ids in captions_ids for token in ids]
    feature = {
        KEY_IMAGE_ID: _bytes_feature([str(image_id).encode("utf-8")]),
        KEY_GRID: _bytes_feature([np.ascontiguousarray(grid).tobytes()]),
        KEY_GRID_SHAPE: _int64_feature(list(grid.shape)),
        KEY_GRID_DTYPE: _bytes_feature([grid.dtype.name.encode("ascii")]),
        KEY_POOLED: _bytes_feature([np.ascontiguousarray(pooled).tobytes()]),
        KEY_POOLED_DTYPE: _bytes_feature([pooled.dtype.name.encode("ascii")]),
        KEY_CAPTIONS: _bytes_feature([str(text).encode("utf-8") for text in captions_text]),
        KEY_CAPTION_IDS: _int64_feature(flat_ids),
        KEY_CAPTION_LENGTHS: _int64_feature([len(ids) for ids in captions_ids]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


class ExampleDecoder:
    """Serialized example -> dict of tensors, in the stored layout.

    Output (for one example):
        ``image_id`` string scalar; ``grid`` float32 (R, D) (decoded from the stored dtype
        and cast); ``pooled`` float32 (D,) (decoded from the dtype stored in the example
        and cast); ``captions`` string (K,); ``caption_ids`` int32
        (K, L) right-padded with 0, L = the longest of the K; ``caption_lengths`` int32 (K,).

    Args:
        grid_dtype: the stored grid dtype ("float16" | "float32"), usually the manifest's
            ``dtype``. None reads it from each example (``features/grid_dtype``) at a small
            cost, for shards without a manifest.
        grid_shape: (R, D) to give ``grid`` a static shape (the manifest's ``grid_shape``);
            None leaves it (None, None).
        pooled_dim: D to give ``pooled`` a static shape; defaults to ``grid_shape[1]``.
        keys: which of ``grid``/``pooled`` to decode; the other one is not parsed at all
            (a pooled-feature model never pays for the grid bytes).
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
        spec = {
            KEY_IMAGE_ID: tf.io.FixedLenFeature([], tf.string),
            KEY_CAPTIONS: tf.io.VarLenFeature(tf.string),
            KEY_CAPTION_IDS: tf.io.VarLenFeature(tf.int64),
            KEY_CAPTION_LENGTHS: tf.io.VarLenFeature(tf.int64),
        }
        if "grid" in self.keys:
            spec[KEY_GRID] = tf.io.FixedLenFeature([], tf.string)
            spec[KEY_GRID_SHAPE] = tf.io.FixedLenFeature([2], tf.int64)
            if grid_dtype is None:
                spec[KEY_GRID_DTYPE] = tf.io.FixedLenFeature([], tf.string)
        if "pooled" in self.keys:
            spec[KEY_POOLED] = tf.io.FixedLenFeature([], tf.string)
            spec[KEY_POOLED_DTYPE] = tf.io.FixedLenFeature([], tf.string)
        self._spec = spec

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
        if "grid" in self.keys:
            decoded["grid"] = self._decode_grid(parsed)
        if "pooled" in self.keys:
            pooled = _decode_float(parsed[KEY_POOLED], parsed[KEY_POOLED_DTYPE])
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
        caller casts late, after batching; float32 otherwise), ``pooled`` float32 (G, D),
        ``caption_ids`` int32 ragged (G, K, L). Needs ``grid_shape`` when decoding the grid.
        """
        spec = {
            KEY_CAPTION_IDS: tf.io.RaggedFeature(tf.int64),
            KEY_CAPTION_LENGTHS: tf.io.RaggedFeature(tf.int64),
        }
        if "grid" in self.keys:
            if self.grid_shape is None:
                raise ValueError("decode_batch: needs a static grid_shape")
            spec[KEY_GRID] = tf.io.FixedLenFeature([], tf.string)
            if self.grid_dtype is None:
                spec[KEY_GRID_DTYPE] = tf.io.FixedLenFeature([], tf.string)
        if "pooled" in self.keys:
            spec[KEY_POOLED] = tf.io.FixedLenFeature([], tf.string)
            spec[KEY_POOLED_DTYPE] = tf.io.FixedLenFeature([], tf.string)
        parsed = tf.io.parse_example(serialized, spec)
        lengths = tf.cast(parsed[KEY_CAPTION_LENGTHS], tf.int32)  # ragged (G, K)
        flat_ids = tf.cast(parsed[KEY_CAPTION_IDS].flat_values, tf.int32)
        decoded = {
            "caption_ids": tf.RaggedTensor.from_nested_row_lengths(
                flat_ids, [lengths.row_lengths(), lengths.flat_values]
            ),
        }
        if "grid" in self.keys:
            if self.grid_dtype is not None:
                grid = tf.io.decode_raw(parsed[KEY_GRID], tf.as_dtype(self.grid_dtype), little_endian=True)
            else:
                grid = tf.map_fn(
                    lambda args: _decode_float(*args),
                    (parsed[KEY_GRID], parsed[KEY_GRID_DTYPE]),
                    fn_output_signature=tf.TensorSpec([None], tf.float32),
                )
            decoded["grid"] = tf.reshape(grid, [-1, *self.grid_shape])
        if "pooled" in self.keys:
            pooled = tf.map_fn(
                lambda args: _decode_float(*args),
                (parsed[KEY_POOLED], parsed[KEY_POOLED_DTYPE]),
                fn_output_signature=tf.TensorSpec([None], tf.float32),
            )
            if self.pooled_dim is not None:
                pooled = tf.reshape(pooled, [-1, self.pooled_dim])
            decoded["pooled"] = pooled
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


def read_manifest(directory: str | os.PathLike) -> dict:
    """Load ``<directory>/manifest.json``; a missing or broken file is a CaptioningError.

    The check covers what readers rely on: the format name, ``dtype``, ``grid_shape``,
    ``counts`` and ``shards``.
    """
    path = os.path.join(os.fspath(directory), MANIFEST_NAME)
    if not os.path.isfile(path):
        workers = [n for n in _listdir(directory) if n.startswith("manifest.worker-")]
        hint = (
            f"; found {len(workers)} worker manifest(s): some workers have not finished, or run the "
            "features step once more to merge them (finalize)"
            if workers
            else "; run the features step first (python -m keras_captioning features)"
        )
        raise CaptioningError(f"{path}: feature manifest not found{hint}")
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CaptioningError(
            f"{path}: unreadable feature manifest ({err}); rerun the features step with --overwrite"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise CaptioningError(
            f'{path}: not a keras-captioning feature manifest (no "format": '
            f'"{MANIFEST_FORMAT}"); point to the folder the features step wrote'
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CaptioningError(
            f"{path}: shards in format {manifest.get('format_version')!r}, this package reads format "
            f"{FORMAT_VERSION}; rerun the features step with --overwrite"
        )
    problems = []
    if manifest.get("dtype") not in GRID_DTYPES:
        problems.append(f"dtype must be one of {GRID_DTYPES}")
    shape = manifest.get("grid_shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(n, int) and n > 0 for n in shape)):
        problems.append("grid_shape must be [regions, channels]")
    for key in ("counts", "shards"):
        if not isinstance(manifest.get(key), dict):
            problems.append(f"'{key}' must be an object")
    if problems:
        raise CaptioningError(
            f"{path}: corrupt feature manifest: {'; '.join(problems)}; rerun the "
            "features step with --overwrite"
        )
    return manifest


def shard_problem(path: str | os.PathLike, stats: dict | None) -> str | None:
    """Why the shard at ``path`` does not match what its manifest recorded, or None if it does.

    ``stats`` is the shard's ``shard_stats`` entry: its ``bytes`` and ``sha256`` are checked
    when recorded (manifests written before checksums existed have sizes only, and are
    size-checked).
    """
    try:
        size = os.path.getsize(path)
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    stats = stats or {}
    if stats.get("bytes") is not None and size != stats["bytes"]:
        return f"{size} bytes, the manifest recorded {stats['bytes']} (truncated or extended)"
    if stats.get("sha256"):
        try:
            actual = sha256_file(path)
        except OSError as err:
            return f"cannot be read ({err.strerror or err})"
        if actual != stats["sha256"]:
            return f"checksum {actual[:12]} differs from the manifest's {stats['sha256'][:12]} (damaged)"
    return None


def damaged_shards(directory: str | os.PathLike, manifest: dict, splits=None) -> list[tuple[str, str]]:
    """``[(path, reason)]`` for the shards of ``splits`` (default all) that fail :func:`shard_problem`."""
    stats = manifest.get("shard_stats") or {}
    bad = []
    for split, names in (manifest.get("shards") or {}).items():
        if splits is not None and split not in splits:
            continue
        for name in names:
            path = os.path.join(os.fspath(directory), name)
            problem = shard_problem(path, stats.get(name))
            if problem:
                bad.append((path, problem))
    return bad


def shard_read_error(err: Exception, files, advice: str) -> Exception:
    """A CaptioningError naming the shard behind a TensorFlow read error, else ``err`` itself.

    TensorFlow's DataLossError says "corrupted record at 1234" but not in which file, so the
    shards are read once more, one by one, to find it; ``advice`` ends the message.
    """
    found = unreadable_record_file(files) if isinstance(err, tf.errors.OpError) else None
    if found is None:
        return err
    return CaptioningError(f"{found[0]}: damaged feature shard ({found[1]}); {advice}")


def unreadable_record_file(files) -> tuple[str, str] | None:
    """The first of ``files`` whose records TensorFlow cannot read, with the reason, or None.

    Used after a read error: TensorFlow's DataLossError does not say which file it was reading.
    """
    for path in files:
        try:
            for _ in tf.data.TFRecordDataset(path):
                pass
        except (tf.errors.OpError, OSError) as err:
            message = getattr(err, "message", None) or str(err)
            return path, " ".join(message.split())[:200]
    return None


def _listdir(directory) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


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
