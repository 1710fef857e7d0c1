"""tf.data input pipelines over the feature shards (no Python in the per-example path).

Train: shard files (shuffled) -> interleaved TFRecord reads -> shuffle serialized records
-> then by ``caption_mode``:
"all": windows of records parsed together (``ExampleDecoder.decode_batch``, features kept in
the stored dtype) -> caption rows shuffled within the window (or, image-major, images shuffled
with their captions together) -> exact batches cut across windows (``scan``) -> per batch one
gather of feature rows, still in the stored dtype (the model casts) -> prefetch;
"random": ``ExampleDecoder`` per record -> one seeded caption per image -> padded_batch.
Captions with no word token (only ``<start>``/``<end>``/padding) never reach a batch.

Memory: the record shuffle buffer holds ``shuffle_buffer`` serialized examples (an
InceptionV3 float16 grid is 256 KiB, so 1024 is ~256 MiB); in "all" mode a window holds
``min(shuffle_buffer, WINDOW_BATCHES * batch_size)`` images' features in the stored dtype
(64 MiB for 256 InceptionV3 images in float16) plus one batch of carried rows.

Eval: shards in file order -> decode -> ``{"image_id", "features", "references"}``
batches; ``references`` is padded with ``""`` to the largest K in the batch (drop empty
strings when scoring).

The grid's stored dtype and static shape come from the shard folder's ``manifest.json``;
without one (hand-made shards in tests) they are read from the first example.
"""

from __future__ import annotations

import os

import tensorflow as tf

from keras_captioning.data.shards import decoder_for, read_manifest, shard_files
from keras_captioning.data.tfrecords import (
    KEY_CAPTION_LENGTHS,
    MANIFEST_NAME,
    ExampleParser,
)
from keras_captioning.errors import CaptioningError
from keras_captioning.ranges import CHOICES

AUTOTUNE = tf.data.AUTOTUNE
CAPTION_MODES = CHOICES[("train", "caption_mode")]
BATCH_LAYOUTS = CHOICES[("train", "batch_layout")]
WINDOW_BATCHES = 4  # "all" mode: images parsed together, in batches (~5 captions per image)


def make_train_dataset(
    shard_pattern,
    batch_size: int,
    *,
    feature: str = "grid",
    caption_mode: str = "all",
    shuffle: bool = True,
    seed: int = 0,
    reshuffle: bool = True,
    max_length: int | None = None,
    drop_remainder: bool = False,
    shuffle_buffer: int = 1024,
    cycle_length: int = 4,
    length_buckets=None,
    batch_layout: str = "caption",
    cache=None,
) -> tf.data.Dataset:
    """Batches of ``{"features": (B, R, D) | (B, D), "captions": int32 (B, L)}``.

    "all" mode keeps the grid in its stored dtype (float16 shards give float16 features; the
    model casts them in its graph); the pooled vector (the grid's mean) is float32.
    ``batch_layout="image"`` adds ``"image_index": int32 (B,)`` and ``features`` holds each
    distinct image of the batch once, (G, ...) with G <= B: caption row i belongs to
    ``features[image_index[i]]``.

    Args:
        shard_pattern: glob of shard files (e.g. ``features/x/train-*-of-*.tfrecord``) or a list.
        batch_size: elements per batch.
        feature: "grid" (attention model) or "pooled" (merge model).
        caption_mode: "all" = one element per (image, caption), the study's setup;
            "random" = one caption per image per epoch, drawn by a seeded ``Dataset.random``
            stream (re-drawn each iteration with ``reshuffle``).
        shuffle: shuffle shard order, records and (in "all" mode) captions, seeded by ``seed``.
        seed: seeds shuffling and the "random" caption choice.
        reshuffle: a new order (and "random" caption draw) each time the dataset is iterated,
            so ``fit(ds, epochs=n)`` sees n orders. False: every iteration repeats the first
            one, so the order depends on ``seed`` alone; the trainer builds one dataset per
            epoch (seed ``train.seed + epoch``) and Keras iterates it once more before
            training under a tf.distribute strategy (to build the model from a first batch).
        max_length: truncate captions to this many tokens (keeping ``<end>`` last) and pad
            every batch to exactly this length; None pads to the longest in the batch.
        drop_remainder: drop the last partial batch (static batch size).
        shuffle_buffer: elements held by each shuffle buffer.
        cycle_length: shards read concurrently.
        length_buckets: "all" mode only: increasing caption widths in tokens (e.g.
            ``(10, 14, 18, 24, 32)``). Each caption row goes to the smallest width that holds
            it, and a batch is cut from one bucket's rows (buckets visited in a seeded random
            order per window; a bucket's rows short of a whole batch wait for the next
            window, so only the last batches of an epoch mix widths). Each batch is padded to
            the smallest width holding its longest caption, so the graph sees only these few
            widths and most recurrent steps run on real tokens. Captions longer than the last
            width keep the ``max_length`` rule (the last width is raised to it). None pads
            every batch to ``max_length``.
            With ``batch_layout="image"`` an image's captions share the bucket of its longest.
        batch_layout: "all" mode only. "caption" (the study's): one feature row per caption
            row, an image's captions spread over batches. "image" (self-critical.pytorch's
            ``seq_per_img``): an image's captions come together and its features are read,
            cast and encoded once per batch (an image split by a batch boundary is in both).
        cache: "all" mode only: a ``FeatureCache`` of these shards (``data/feature_cache.py``)
            to read from memory instead of the files; each epoch then shuffles all images.

    Captions are ``[<start> ... <end>]`` right-padded with 0.
    """
    if caption_mode not in CAPTION_MODES:
        raise CaptioningError(f"caption_mode: must be one of {CAPTION_MODES}, got {caption_mode!r}")
    if batch_layout not in BATCH_LAYOUTS:
        raise CaptioningError(f"batch_layout: must be one of {BATCH_LAYOUTS}, got {batch_layout!r}")
    if batch_layout == "image" and caption_mode != "all":
        raise CaptioningError("batch_layout='image' needs caption_mode='all' (every caption of an image)")
    if cache is not None and caption_mode != "all":
        raise CaptioningError("cache: needs caption_mode='all'")
    if cache is not None and cache.feature != feature:
        raise CaptioningError(f"cache: holds '{cache.feature}' features, the dataset reads '{feature}'")
    _check_batch_size(batch_size)
    files = shard_files(shard_pattern)
    decoder = decoder_for(files, keys=(feature,))
    parser = ExampleParser(feature, max_length=max_length)

    if caption_mode == "all":
        width = max_length or _longest_caption(files)
        return _all_captions(
            files, batch_size, decoder, parser, width, feature=feature, shuffle=shuffle, seed=seed,
            reshuffle=reshuffle, drop_remainder=drop_remainder, shuffle_buffer=shuffle_buffer, cycle_length=cycle_length,
            pad_to_width=max_length is not None, length_buckets=_bucket_widths(length_buckets, width),
            image_major=batch_layout == "image", cache=cache,
        )

    ds = _read_records(files, shuffle=shuffle, seed=seed, cycle_length=cycle_length, reshuffle=reshuffle)
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=reshuffle)
    ds = ds.map(decoder, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.map(
        lambda d: (parser.features(d), *parser.nonempty_captions(d)),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    ds = ds.filter(lambda features, ids, lengths: tf.shape(ids)[0] > 0)
    picks = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=reshuffle)

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


def _all_captions(
    files, batch_size, decoder, parser, width, *, feature, shuffle, seed, reshuffle, drop_remainder,
    shuffle_buffer, cycle_length, pad_to_width, length_buckets=None, image_major=False, cache=None,
) -> tf.data.Dataset:
    """The "all" mode, vectorised: windows of images -> their caption rows -> batches.

    A window of up to ``WINDOW_BATCHES * batch_size`` serialized records is parsed in one
    ``parse_example`` call (features stay in the stored dtype); its non-empty captions become
    rows (image index, ids). Caption-major: rows shuffled within the window by a seeded
    ``Dataset.random`` draw (new each iteration with ``reshuffle``), so one image's captions land in different
    batches. Image-major: the window's images are shuffled and each image's rows stay
    together, in caption order. A ``scan`` carries the rows that do not fill a batch (with
    their images' feature rows, once per image) into the next window, and a flushing end
    marker emits the last partial batch, so every batch but the last holds exactly
    ``batch_size`` rows. Each batch is then one gather from its window's features: per row
    (caption-major) or per distinct image (image-major, plus ``image_index``). There are no
    per-image datasets (``flat_map`` of one small dataset per image cost ~0.75 ms per image)
    and no per-row elements. With a ``cache`` the records are image indices (all of them
    shuffled) and the batch's gather reads the cached features.
    """
    window = min(shuffle_buffer, WINDOW_BATCHES * batch_size) if shuffle else WINDOW_BATCHES * batch_size
    window = max(window, batch_size)
    if length_buckets is not None:
        widths = tf.constant(length_buckets, tf.int32)
    if cache is None:
        ds = _read_records(files, shuffle=shuffle, seed=seed, cycle_length=cycle_length, reshuffle=reshuffle)
        if shuffle:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=reshuffle)
        decode, materialize = decoder.decode_batch, (lambda rows: rows)
    else:
        ds = tf.data.Dataset.range(cache.num_images)
        if shuffle:
            ds = ds.shuffle(cache.num_images, seed=seed, reshuffle_each_iteration=reshuffle)
        decode, materialize = cache.decode_batch, cache.gather
    ds = ds.batch(window)
    if shuffle:
        draws = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=reshuffle)
        ds = tf.data.Dataset.zip(ds, draws)
    else:
        ds = ds.map(lambda records: (records, tf.constant(0, tf.int64)))

    def reorder(order, *tensors):
        return tuple(tf.gather(t, order) for t in tensors)

    def expand(records, draw):
        """A window's caption rows in random order, each with its length bucket (0 without buckets).

        Image-major: each image's rows stay together, in caption order, in the bucket of
        the image's longest caption.
        """
        decoded = decode(records)
        source = decoded[feature]
        image, ids, lengths = parser.caption_rows(decoded["caption_ids"], width)
        images = tf.shape(source)[0]
        if shuffle:
            if image_major:  # a random rank per image; a stable sort keeps an image's rows in order
                key = tf.random.stateless_uniform([images], seed=tf.stack([draw, tf.constant(0, tf.int64)]))
                order = tf.argsort(tf.gather(key, image), stable=True)
            else:  # spreads the ~5 captions of one image over different batches
                noise = tf.random.stateless_uniform(tf.shape(image), seed=tf.stack([draw, tf.constant(0, tf.int64)]))
                order = tf.argsort(noise)
            image, ids, lengths = reorder(order, image, ids, lengths)
        bucket = tf.zeros_like(lengths)
        if length_buckets is not None:
            rows = tf.gather(tf.math.unsorted_segment_max(lengths, image, images), image) if image_major else lengths
            bucket = tf.searchsorted(widths, rows, side="left")
        return source, image, ids, lengths, bucket, draw, tf.constant(False)

    ds = ds.map(expand, num_parallel_calls=AUTOTUNE, deterministic=True)
    source_spec, image_spec, ids_spec, lengths_spec, bucket_spec, _, _ = ds.element_spec

    def empty(spec):
        return tf.zeros([0, *spec.shape[1:]], spec.dtype)

    end_marker = (empty(source_spec), empty(image_spec), empty(ids_spec), empty(lengths_spec), empty(bucket_spec),
                  tf.constant(0, tf.int64), tf.constant(True))
    ds = ds.concatenate(tf.data.Dataset.from_tensors(end_marker))

    def cut(carry, window_rows):
        """Prepend the carried rows; emit the full batches (all rows at the end), carry the rest.

        With length buckets a batch is cut from one bucket's rows only: the rows are grouped
        by bucket (buckets in a seeded random order per window; a stable sort keeps the
        carried rows first in their bucket and an image's rows together), each bucket emits
        its whole batches and carries its remainder into the next window, so only the end
        of the epoch mixes widths in a batch.
        """
        carry_source, carry_image, carry_ids, carry_lengths, carry_bucket = carry
        source, image, ids, lengths, bucket, draw, last = window_rows
        image = tf.concat([carry_image, image + tf.shape(carry_source)[0]], axis=0)
        source = tf.concat([carry_source, source], axis=0)
        ids = tf.concat([carry_ids, ids], axis=0)
        lengths = tf.concat([carry_lengths, lengths], axis=0)
        bucket = tf.concat([carry_bucket, bucket], axis=0)
        total = tf.shape(image)[0]
        whole = total // batch_size * batch_size
        if length_buckets is not None:
            rank = tf.gather(_bucket_order(tf.size(widths), draw), bucket)
            order = tf.argsort(rank, stable=True)
            image, ids, lengths, bucket, rank = reorder(order, image, ids, lengths, bucket, rank)
            size = tf.math.bincount(rank, minlength=tf.size(widths), dtype=tf.int32)  # rows per rank
            position = tf.range(total) - tf.gather(tf.cumsum(size, exclusive=True), rank)  # place in its bucket
            emit = position < tf.gather(size // batch_size * batch_size, rank)
            at_end = tf.range(total) < (total if not drop_remainder else whole)
            emit = tf.logical_or(emit, tf.logical_and(last, at_end))
            sent, rest = tf.where(emit)[:, 0], tf.where(tf.logical_not(emit))[:, 0]
        else:
            used = tf.where(last, total if not drop_remainder else whole, whole)
            sent, rest = tf.range(used), tf.range(used, total)
        kept, rest_image = tf.unique(tf.gather(image, rest))  # carried feature rows: once per image
        out = (source, tf.gather(image, sent), tf.gather(ids, sent), tf.gather(lengths, sent))
        return (tf.gather(source, kept), rest_image, *reorder(rest, ids, lengths, bucket)), out

    initial = (empty(source_spec), empty(image_spec), empty(ids_spec), empty(lengths_spec), empty(bucket_spec))
    ds = ds.scan(initial, cut)

    def batches(source, image, ids, lengths):
        starts = tf.data.Dataset.range(0, tf.cast(tf.shape(image)[0], tf.int64), batch_size)

        def one_batch(start):
            rows = slice(start, start + batch_size)
            captions = ids[rows]
            if length_buckets is not None:
                longest = tf.reduce_max(lengths[rows])
                captions = captions[:, : tf.gather(widths, tf.searchsorted(widths, [longest])[0])]
            elif not pad_to_width:
                captions = captions[:, : tf.reduce_max(lengths[rows])]
            if image_major:
                distinct, image_index = tf.unique(image[rows])
                return {"features": materialize(tf.gather(source, distinct)), "image_index": image_index,
                        "captions": captions}
            return {"features": materialize(tf.gather(source, image[rows])), "captions": captions}

        return starts.map(one_batch, num_parallel_calls=AUTOTUNE, deterministic=True)

    ds = ds.flat_map(batches)
    if drop_remainder:
        def static(batch):
            fixed = {k: v for k, v in batch.items() if not (image_major and k == "features")}
            return {**batch, **{k: tf.ensure_shape(v, [batch_size, *v.shape[1:]]) for k, v in fixed.items()}}

        ds = ds.map(static)
    return ds.prefetch(AUTOTUNE)


def _bucket_order(buckets, draw):
    """A seeded random order of the buckets (new per window): bucket -> its rank."""
    return tf.argsort(tf.random.stateless_uniform([buckets], seed=tf.stack([draw, tf.constant(1, tf.int64)])))


def _bucket_widths(length_buckets, width: int):
    """Validated bucket widths, the last one raised to ``width`` (every caption fits one)."""
    if length_buckets is None:
        return None
    widths = [int(w) for w in length_buckets]
    if not widths or any(w < 2 for w in widths) or widths != sorted(set(widths)):
        raise CaptioningError(
            f"length_buckets: expected increasing widths >= 2 (tokens incl. <start>/<end>), got {length_buckets!r}"
        )
    widths = [w for w in widths if w < width] + [width]
    return tuple(widths)


def make_eval_dataset(shard_pattern, batch_size: int, feature: str = "grid") -> tf.data.Dataset:
    """Batches of ``{"image_id": string (B,), "features": ..., "references": string (B, K)}``.

    Images come in shard order (files sorted by name, records in file order), each once.
    ``references`` rows are padded with ``""`` up to the largest K in the batch.
    """
    _check_batch_size(batch_size)
    files = shard_files(shard_pattern)
    decoder = decoder_for(files, keys=(feature,))
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


def _longest_caption(files: list[str]) -> int:
    """Tokens of the longest stored caption: the manifest's ``longest_caption``, else a scan."""
    directory = os.path.dirname(files[0])
    if os.path.isfile(os.path.join(directory, MANIFEST_NAME)):
        longest = read_manifest(directory).get("longest_caption")
        if isinstance(longest, int) and longest >= 2:
            return longest
    spec = {KEY_CAPTION_LENGTHS: tf.io.VarLenFeature(tf.int64)}
    ds = tf.data.TFRecordDataset(files).batch(256).map(lambda r: tf.io.parse_example(r, spec)[KEY_CAPTION_LENGTHS])
    longest = ds.reduce(tf.constant(0, tf.int64), lambda acc, lengths: tf.maximum(acc, tf.reduce_max(
        tf.concat([lengths.values, [0]], axis=0))))
    return max(2, int(longest))


def _read_records(files: list[str], shuffle: bool, seed: int, cycle_length: int,
                  reshuffle: bool = True) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=reshuffle)
    return ds.interleave(
        tf.data.TFRecordDataset,
        cycle_length=max(1, min(cycle_length, len(files))),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
