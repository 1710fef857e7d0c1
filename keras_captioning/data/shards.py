"""Shard files on disk: the manifest check and the damaged-shard finders.

``read_manifest(dir)`` loads ``<dir>/manifest.json`` (written by ``features/manifests.py``,
which documents its schema) and checks what readers rely on; ``shard_problem`` /
``damaged_shards`` compare shards with the sizes and checksums the manifest recorded;
``shard_read_error`` turns TensorFlow's "corrupted record" into a message naming the file;
``shard_files`` lists a split's shards and ``decoder_for`` makes their ``ExampleDecoder``.
The record format itself is ``data/tfrecords.py``.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from keras_captioning.data.tfrecords import (
    FORMAT_VERSION,
    GRID_DTYPES,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    ExampleDecoder,
)
from keras_captioning.errors import CaptioningError
from keras_captioning.utils import sha256_file


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


def shard_files(shard_pattern) -> list[str]:
    """Sorted shard paths of a glob (or the given list), never half-written temp files."""
    if isinstance(shard_pattern, (list, tuple)):
        files = sorted(os.fspath(f) for f in shard_pattern)
        missing = [f for f in files if not tf.io.gfile.exists(f)]
        if missing:
            raise CaptioningError(f"{missing[0]}: shard file not found")
    else:
        files = sorted(tf.io.gfile.glob(os.fspath(shard_pattern)))
    files = [f for f in files if ".tmp-" not in os.path.basename(f)]
    if not files:
        raise CaptioningError(
            f"{shard_pattern}: no TFRecord shards match; run the features step first "
            "(python -m keras_captioning features)"
        )
    return files


def decoder_for(files: list[str], keys) -> ExampleDecoder:
    """A decoder with the stored dtype and static shapes, from the manifest or the first record."""
    directory = os.path.dirname(files[0])
    if os.path.isfile(os.path.join(directory, MANIFEST_NAME)):
        manifest = read_manifest(directory)
        return ExampleDecoder(
            manifest["dtype"], manifest["grid_shape"], manifest.get("pooled_dim"), keys=keys
        )
    first = next(iter(tf.data.TFRecordDataset(files[:1]).take(1)), None)
    if first is None:
        raise CaptioningError(
            f"{files[0]}: empty shard and no {MANIFEST_NAME} beside it; rerun the features step"
        )
    probe = ExampleDecoder()(first)
    return ExampleDecoder(None, probe["grid"].shape, probe["grid"].shape[1], keys=keys)
