"""1. Input pipeline: caption rows/s reading features + captions (TFRecord shards vs .npy)."""

from __future__ import annotations

import json
import os

from benchmarks.harness import Context, Result, log, median, rates, timed


def write_shards(records, grids, vocab, out_dir: str, dtype: str = "float16", shard_size: int = 1000) -> dict:
    """Our shard layout for given feature arrays: ``train-*.tfrecord`` + a minimal ``manifest.json``.

    The examples are made by ``data.tfrecords.serialize_example``, byte for byte what the
    features step writes; the manifest holds the keys the pipeline reads (dtype, static shapes).
    Random features keep the benchmark from spending minutes in a CNN first.
    """
    import math

    import tensorflow as tf

    from keras_captioning.data.tfrecords import (
        FORMAT_VERSION,
        MANIFEST_FORMAT,
        MANIFEST_NAME,
        serialize_example,
    )
    from keras_captioning.features.feature_folder import FeatureFolder

    os.makedirs(out_dir, exist_ok=True)
    count = math.ceil(len(records) / shard_size)
    names = []
    for index in range(count):
        names.append(FeatureFolder.shard_name("train", index, count))
        chunk = slice(index * shard_size, (index + 1) * shard_size)
        with tf.io.TFRecordWriter(os.path.join(out_dir, names[-1])) as writer:
            for record, grid in zip(records[chunk], grids[chunk]):
                ids = [vocab.encode(caption) for caption in record.captions]
                writer.write(serialize_example(record.image_id, grid.astype(dtype), record.captions, ids))
    regions, dim = grids[0].shape
    captions = sum(len(r.captions) for r in records)
    manifest = {"format": MANIFEST_FORMAT, "format_version": FORMAT_VERSION, "kind": "final", "dtype": dtype,
                "grid_shape": [int(regions), int(dim)], "num_regions": int(regions), "feature_dim": int(dim),
                "pooled_dim": int(dim), "shards": {"train": names},
                "counts": {"train": {"images": len(records), "captions": captions,
                                     "trainable_images": len(records), "trainable_captions": captions}},
                "note": "written by benchmarks/run.py from random features"}
    with open(os.path.join(out_dir, MANIFEST_NAME), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2)
    return manifest


def write_feature_files(ctx: Context) -> dict:
    """Random float32 grids for the first ``input_images`` images, stored both ways.

    Ours: TFRecord shards (float16 grid + captions; the pooled vector is derived). The study:
    one float32 ``.npy`` grid per image.
    """
    import numpy as np

    from benchmarks import study_pipeline as sp

    s = ctx.sizes
    records = ctx.records[: s.input_images]
    rng = np.random.default_rng(1)
    grids = [rng.standard_normal((s.regions, s.feature_dim), dtype=np.float32) for _ in records]
    ours_dir = os.path.join(ctx.work, "shards")
    study_dir = os.path.join(ctx.work, "npy")
    t_ours, manifest = timed(lambda: write_shards(records, grids, ctx.vocab, ours_dir))
    t_study, paths = timed(lambda: sp.save_npy_features([r.image_id for r in records], grids, study_dir))
    log(f"wrote features of {len(records)} images: shards {t_ours:.1f}s, .npy {t_study:.1f}s")
    return {"records": records, "ours_dir": ours_dir, "study_dir": study_dir, "npy_paths": paths,
            "manifest": manifest}


def feature_files(ctx: Context) -> dict:
    if "feature_files" not in ctx.cache:
        ctx.cache["feature_files"] = write_feature_files(ctx)
    return ctx.cache["feature_files"]


def bench_input(ctx: Context) -> list[Result]:

    import tensorflow as tf

    from benchmarks import study_pipeline as sp
    from keras_captioning.config import TrainConfig
    from keras_captioning.data.feature_cache import FeatureCache
    from keras_captioning.data.pipeline import make_train_dataset

    s = ctx.sizes
    files = feature_files(ctx)
    records = files["records"]
    from keras_captioning.features.feature_folder import FeatureFolder

    shards = FeatureFolder(files["ours_dir"]).shard_files("train")
    # The study: one element per (image, caption); captions padded to the longest in the set.
    paths = [sp.npy_path(files["study_dir"], r.image_id) for r in records for _ in r.captions]
    ids, _ = ctx.vocab.encode_batch([c for r in records for c in r.captions], None)
    study_ds = sp.npy_dataset(paths, ids, s.input_batch)
    # Ours: the trainer's settings. The fast path: features held in memory (train.cache_features,
    # "auto" below 4 GiB: read from the shards once per run, timed separately) and image-major
    # batches, each padded to its longest caption; then the caption-major layout (the study's),
    # and the streaming path a run takes when its features do not fit in memory.
    train_cfg = TrainConfig()
    load_s, cache = timed(lambda: FeatureCache.from_shards(shards, "grid"))

    def ours(layout, cached, epoch=0):
        return make_train_dataset(shards, s.input_batch, feature="grid", caption_mode="all", shuffle=True,
                                  seed=train_cfg.seed + epoch, shuffle_buffer=train_cfg.shuffle_buffer,
                                  batch_layout=layout, cache=cache if cached else None)

    def epochs(layout, cached, count):
        # As the trainer feeds fit(): the epochs (seed + e) concatenated, one iterator for all.
        ds = ours(layout, cached)
        for epoch in range(1, count):
            ds = ds.concatenate(ours(layout, cached, epoch))
        return iter(ds)

    def next_epoch(iterator, batches):
        # Timed: one epoch's batches from the run's iterator.
        n = 0
        for _ in range(batches):
            n += int(next(iterator)["captions"].shape[0])
        return n

    def real_examples(batches):
        # Untimed check: caption rows holding a token. padded_batch pads tokens, never rows.
        n = 0
        for batch in batches:
            captions = batch["captions"] if isinstance(batch, dict) else batch[1]
            n += int(tf.reduce_sum(tf.cast(tf.reduce_any(captions != 0, axis=1), tf.int32)))
        return n

    def rows(batches):
        # Timed pass: what a training loop does with the batches, minus the training.
        n = 0
        for batch in batches:
            n += int((batch["captions"] if isinstance(batch, dict) else batch[1]).shape[0])
        return n

    results = []
    variants = (("image", True, "1. input pipeline", 10.0), ("caption", True, "1b. input, caption-major", None),
                ("image", False, "1c. input, from the files", None))
    for layout, cached, label, target in variants:
        ours_ds = ours(layout, cached)
        n_ours, n_study = real_examples(ours_ds), real_examples(study_ds)  # also the warm-up pass
        if (rows(ours_ds), rows(study_ds)) != (n_ours, n_study):
            raise RuntimeError("input: a batch holds caption rows without any token")
        # Not alternated with the study: our iterator's prefetching would work on while the
        # study is timed. Ours: one untimed epoch, then `reps` timed epochs back to back from the
        # same iterator; it is exhausted (no work left in the background) before the study runs.
        batches = len(list(ours_ds))
        stream = epochs(layout, cached, ctx.reps + 1)
        next_epoch(stream, batches)
        ours_s = [timed(lambda it=stream, n=batches: next_epoch(it, n))[0] for _ in range(ctx.reps)]
        if next(stream, None) is not None:
            raise RuntimeError("input: the epochs hold more batches than counted")
        del stream
        study_s = [timed(lambda: rows(study_ds))[0] for _ in range(ctx.reps)]
        grid_bytes = s.regions * s.feature_dim * 4
        notes = (f"{n_ours} vs {n_study} (image, caption) examples per epoch, batch {s.input_batch}, "
                 f"{len(records)} images, features {s.regions}x{s.feature_dim} "
                 f"({grid_bytes / 2**20:.2f} MiB float32 per example on the study's side); ours {layout}-major, "
                 + (f"features held in memory (read from the shards once per run in {load_s:.2f} s, "
                    f"{cache.nbytes / 2**20:.0f} MiB; each epoch shuffles all images)" if cached else
                    f"features read from the shards each epoch (shuffle buffer {train_cfg.shuffle_buffer})")
                 + f", float16 up to the model, batches padded to their longest caption, the epochs concatenated "
                 f"into one iterator as the trainer feeds fit(); the study's .npy read each epoch by a new "
                 f"iterator (its loop), padded to {ids.shape[1]} tokens; files in the page cache on both sides")
        results.append(Result("input", label, "examples/s", median(rates(n_ours, ours_s)),
                              median(rates(n_study, study_s)), target, True, rates(n_ours, ours_s),
                              rates(n_study, study_s), notes))
    return results
