"""tf.data input pipelines over the feature shards (no Python in the per-example path).

Train: shard files (shuffled) -> interleaved TFRecord reads -> shuffle serialized records
-> ``ExampleDecoder`` -> per-caption elements (``caption_mode``) -> shuffle -> padded_batch
-> prefetch. Captions with no word token (only ``<start>``/``<end>``/padding) never
reach a batch.

Memory: the record shuffle buffer holds ``shuffle_buffer`` serialized examples (an
InceptionV3 float16 grid is 256 KiB, so the default 1024 is ~256 MiB); the caption shuffle
that follows in "all" mode holds ``shuffle_buffer`` captions whose features are shared by
the ~5 captions of each image.

Eval: shards in file order -> decode -> ``{"image_id", "features", "references"}``
batches; ``references`` is padded with ``""`` to the largest K in the batch (drop empty
strings when scoring).

The grid's stored dtype and static shape come from the shard folder's ``manifest.json``;
without one (hand-made shards in tests) they are read from the first example.
"""

from __future__ import annotations

import os

import tensorflow as tf

from keras_captioning.data.tfrecords import MANIFEST_NAME, ExampleDecoder, ExampleParser, read_manifest
from keras_captioning.errors import CaptioningError

AUTOTUNE = tf.data.AUTOTUNE
CAPTION_MODES = ("all", "random")


def make_train_dataset(
    shard_pattern,
    batch_size: int,
    *,
    feature: str = "grid",
    caption_mode: str = "all",
    shuffle: bool = True,
    seed: int = 0,
    max_length: int | None = None,
    drop_remainder: bool = False,
    shuffle_buffer: int = 1024,
    cycle_length: int = 4,
) -> tf.data.Dataset:
    """Batches of ``{"features": float32 (B, R, D) | (B, D), "captions": int32 (B, L)}``.

    Args:
        shard_pattern: glob of shard files (e.g. ``features/x/train-*-of-*.tfrecord``) or a list.
        batch_size: elements per batch.
        feature: "grid" (attention model) or "pooled" (merge model).
        caption_mode: "all" = one element per (image, caption), the study's setup;
            "random" = one caption per image per epoch, drawn by a seeded ``Dataset.random``
            stream that is re-drawn each time the dataset is iterated (each epoch).
        shuffle: shuffle shard order, records and (in "all" mode) captions, seeded by ``seed``,
            reshuffled each iteration.
        seed: seeds shuffling and the "random" caption choice.
        max_length: truncate captions to this many tokens (keeping ``<end>`` last) and pad
            every batch to exactly this length; None pads to the longest in the batch.
        drop_remainder: drop the last partial batch (static batch size).
        shuffle_buffer: elements held by each shuffle buffer.
        cycle_length: shards read concurrently.

    Captions are ``[<start> ... <end>]`` right-padded with 0.
    """
    if caption_mode not in CAPTION_MODES:
        raise CaptioningError(f"caption_mode: must be one of {CAPTION_MODES}, got {caption_mode!r}")
    _check_batch_size(batch_size)
    files = _shard_files(shard_pattern)
    decoder = _decoder_for(files, keys=(feature,))
    parser = ExampleParser(feature, max_length=max_length)

    ds = _read_records(files, shuffle=shuffle, seed=seed, cycle_length=cycle_length)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(decoder, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.map(
        lambda d: (parser.features(d), *parser.nonempty_captions(d)),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )

    if caption_mode == "all":

        def per_caption(features, ids, lengths):
            captions = tf.data.Dataset.from_tensor_slices((ids, lengths))
            return captions.map(lambda row, length: parser.train_example(features, row, length))

        ds = ds.flat_map(per_caption)
        if shuffle:
            # Spreads the ~5 captions of one image over different batches.
            ds = ds.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    else:
        ds = ds.filter(lambda features, ids, lengths: tf.shape(ids)[0] > 0)
        picks = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

        def pick_one(example, draw):
            features, ids, lengths = example
            index = tf.math.floormod(draw, tf.cast(tf.shape(ids)[0], tf.int64))
            return parser.train_example(features, ids[index], lengths[index])

        ds = tf.data.Dataset.zip(ds, picks).map(pick_one, num_parallel_calls=AUTOTUNE, deterministic=True)

    feature_shape = ds.element_spec["features"].shape
    ds = ds.padded_batch(
        batch_size,
        padded_shapes={"features": feature_shape, "captions": [max_length]},
        padding_values={"features": tf.constant(0.0, tf.float32), "captions": tf.constant(0, tf.int32)},
        drop_remainder=drop_remainder,
    )
    return ds.prefetch(AUTOTUNE)


def make_eval_dataset(shard_pattern, batch_size: int, feature: str = "grid") -> tf.data.Dataset:
    """Batches of ``{"image_id": string (B,), "features": ..., "references": string (B, K)}``.

    Images come in shard order (files sorted by name, records in file order), each once.
    ``references`` rows are padded with ``""`` up to the largest K in the batch.
    """
    _check_batch_size(batch_size)
    files = _shard_files(shard_pattern)
    decoder = _decoder_for(files, keys=(feature,))
    parser = ExampleParser(feature)
    ds = tf.data.TFRecordDataset(files)
    ds = ds.map(decoder, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.map(parser.eval_example, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.padded_batch(
        batch_size,
        padding_values={
            "image_id": tf.constant("", tf.string),
            "features": tf.constant(0.0, tf.float32),
            "references": tf.constant("", tf.string),
        },
    )
    return ds.prefetch(AUTOTUNE)


def count_examples(manifest: dict, split: str, caption_mode: str = "all") -> int:
    """Elements ``make_train_dataset`` yields per epoch for ``split`` (for steps per epoch).

    "all": captions with at least one word; "random": images with at least one such
    caption. A split the manifest does not list has 0.
    """
    if caption_mode not in CAPTION_MODES:
        raise CaptioningError(f"caption_mode: must be one of {CAPTION_MODES}, got {caption_mode!r}")
    counts = manifest.get("counts", {}).get(split)
    if not counts:
        return 0
    if caption_mode == "all":
        return int(counts.get("trainable_captions", counts.get("captions", 0)))
    return int(counts.get("trainable_images", counts.get("images", 0)))


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise CaptioningError(f"batch_size: must be a positive integer, got {batch_size!r}")


def _shard_files(shard_pattern) -> list[str]:
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


def _decoder_for(files: list[str], keys) -> ExampleDecoder:
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
    return ExampleDecoder(None, probe["grid"].shape, probe["pooled"].shape[0], keys=keys)


def _read_records(files: list[str], shuffle: bool, seed: int, cycle_length: int) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    return ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=max(1, min(cycle_length, len(files))),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
