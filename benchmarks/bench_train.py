"""2. Training step: real target tokens/s of optimizer steps."""

from __future__ import annotations

from benchmarks.harness import Context, Result, build_models, compare, median, random_captions, rates, timed


def bench_train(ctx: Context) -> list[Result]:
    import keras
    import numpy as np
    import tensorflow as tf

    from benchmarks import study_pipeline as sp

    s = ctx.sizes
    ours, encoder, decoder = build_models(ctx, seed=0)
    rng = np.random.default_rng(2)
    features = tf.constant(rng.standard_normal((s.train_batch, s.regions, s.feature_dim), dtype=np.float32))
    captions = random_captions(rng, s.train_batch, s.max_length, s.vocab_size)
    real_tokens = int((captions[:, 1:] != 0).sum())
    captions = tf.constant(captions)
    batch = {"features": features, "captions": captions}
    step = sp.make_study_train_step(encoder, decoder, keras.optimizers.Adam(4e-4))

    def run_ours():
        for _ in range(s.train_steps):
            logs = ours.train_on_batch(batch, return_dict=True)
        return logs

    def run_study():
        for _ in range(s.train_steps):
            loss, _ = step(features, captions)
        return float(loss.numpy())

    t_ours, _ = timed(run_ours)  # the first call traces: reported, not counted
    t_study, _ = timed(run_study)
    # One more untimed call each: the first steps after tracing are still slow (allocator, caches).
    ours_s, study_s = compare(run_ours, run_study, ctx.reps, warmup=True)
    work = s.train_steps * real_tokens
    notes = (f"batch {s.train_batch}, captions padded to {s.max_length} tokens, {real_tokens} real target "
             f"tokens per batch, vocab {s.vocab_size}, embedding {s.embedding_dim}, units {s.units}, "
             f"{s.regions}x{s.feature_dim} regions, {s.train_steps} steps per rep; first call (trace) "
             f"ours {t_ours:.1f}s, study {t_study:.1f}s; ours: train_on_batch, jit_compile=False")
    return [Result("train", "2a. training step, T=20", "tokens/s", median(rates(work, ours_s)),
                   median(rates(work, study_s)), 2.0, True, rates(work, ours_s), rates(work, study_s), notes)]


def bench_train_lengths(ctx: Context) -> list[Result]:
    """Training at real caption lengths: each side batches the same captions its own way.

    Ours: the trainer's fast path (image-major batches, length buckets, float16 features cast
    in the step), cut from a whole epoch of ``length_images`` images (Flickr8k's train split
    in full mode) exactly as the trainer cuts it; ``length_batches`` of those batches, the
    middle one of each equal part of the epoch, are timed (a small epoch would be mostly its
    end, where the buckets' remainders meet). The study: the same captions, one float32
    feature row per caption, every batch padded to the longest caption of the set. Real
    target tokens per second count words + <end>, never padding.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from benchmarks import study_pipeline as sp
    from benchmarks.lengths import summary, write_length_shards
    from keras_captioning.config import TrainConfig
    from keras_captioning.data.pipeline import make_train_dataset
    from keras_captioning.data.shards import read_manifest

    s = ctx.sizes
    # The epoch's batching depends on the captions only: its shards carry 1-number features.
    out = write_length_shards(f"{ctx.work}/length-shards", s.length_images, 1, 1, seed=5,
                              vocab_size=s.vocab_size, histogram=ctx.lengths)
    # Both sides pad as they would over the whole caption set the lengths are drawn from:
    # the study to its longest caption (<start> + words + <end>), ours to the buckets below it.
    histogram = ctx.lengths or _default_lengths()
    longest = max(int(read_manifest(out)["longest_caption"]), max(map(int, histogram)) + 2)
    buckets = tuple(w for w in BUCKETS if w < longest) or None
    from keras_captioning.features.feature_folder import FeatureFolder

    pattern = FeatureFolder(out).shard_pattern("train")
    epoch = list(make_train_dataset(pattern, s.train_batch, seed=1, shuffle_buffer=TrainConfig.shuffle_buffer,
                                    max_length=longest, length_buckets=buckets, batch_layout="image",
                                    drop_remainder=True))
    count = min(s.length_batches, len(epoch))  # systematic sample: the middle batch of each 1/count of the epoch
    picked = ((np.arange(count) + 0.5) * len(epoch) / count).astype(int)
    rng = np.random.default_rng(5)
    ours_batches = []
    for index in picked:  # the picked batches with full-size random grids, one per distinct image
        distinct = int(epoch[index]["features"].shape[0])
        grid = rng.standard_normal((distinct, s.regions, s.feature_dim), dtype=np.float32).astype("float16")
        ours_batches.append({"features": tf.constant(grid), "image_index": epoch[index]["image_index"],
                             "captions": epoch[index]["captions"]})
    # The study's batches: the same captions, each with its own float32 feature row, padded to the longest.
    rows = [(b["features"].numpy()[i], c) for b in ours_batches
            for i, c in zip(b["image_index"].numpy(), b["captions"].numpy())]
    order = np.random.default_rng(6).permutation(len(rows))
    study_batches = []
    for start in range(0, len(order) - s.train_batch + 1, s.train_batch):
        chunk = [rows[j] for j in order[start:start + s.train_batch]]
        captions = np.zeros((s.train_batch, longest), np.int32)
        for r, (_, c) in enumerate(chunk):
            captions[r, :len(c)] = c
        study_batches.append((tf.constant(np.stack([f for f, _ in chunk]).astype(np.float32)), tf.constant(captions)))
    real_ours = sum(int((b["captions"].numpy()[:, 1:] != 0).sum()) for b in ours_batches)
    real_study = sum(int((c.numpy()[:, 1:] != 0).sum()) for _, c in study_batches)
    assert real_ours == real_study, (real_ours, real_study)  # the same captions on both sides
    epoch_steps = sum(int(b["captions"].shape[1]) - 1 for b in epoch)
    timed_steps = sum(int(b["captions"].shape[1]) - 1 for b in ours_batches)

    ours, encoder, decoder = build_models(ctx, seed=0)
    step = sp.make_study_train_step(encoder, decoder, keras.optimizers.Adam(4e-4))

    def run_ours():
        for batch in ours_batches:
            logs = ours.train_on_batch(batch, return_dict=True)
        return logs

    def run_study():
        for features, captions in study_batches:
            loss, _ = step(features, captions)
        return float(loss.numpy())

    transformer = build_transformer(ctx, seed=0)

    def run_transformer():
        for batch in ours_batches:
            logs = transformer.train_on_batch(batch, return_dict=True)
        return logs

    t_ours, _ = timed(run_ours)  # traces every bucket width: reported, not counted
    t_study, _ = timed(run_study)
    t_transformer, _ = timed(run_transformer)
    # One untimed warm-up each, then the three alternate repetitions (compare() does this for two).
    runs = (run_ours, run_study, run_transformer)
    for run in runs:
        run()
    ours_s, study_s, transformer_s = [], [], []
    for _ in range(ctx.reps):
        for seconds, run in zip((ours_s, study_s, transformer_s), runs):
            seconds.append(timed(run)[0])
    ours_rate, study_rate = median(rates(real_ours, ours_s)), median(rates(real_study, study_s))
    images = sum(int(b["features"].shape[0]) for b in ours_batches)
    widths = sorted({int(b["captions"].shape[1]) for b in ours_batches})
    flops = useful_flops(s, real_ours, images) / median(ours_s)
    peak = matmul_peak()
    notes = (f"caption lengths drawn from {'the given table' if ctx.lengths else 'Flickr8k train'} "
             f"({summary(ctx.lengths or _default_lengths())}); one epoch of {s.length_images} images cut as the "
             f"trainer cuts it ({len(epoch)} batches, {epoch_steps / len(epoch):.1f} recurrent steps per batch), "
             f"{len(ours_batches)} of its batches timed (the middle one of each equal part) = {real_ours} real "
             f"target tokens per rep; ours image-major ({images} images for "
             f"{len(ours_batches) * s.train_batch} captions), bucket widths used {widths}, {timed_steps} "
             f"recurrent steps per rep; "
             f"the study padded to the set's longest caption, {longest} tokens "
             f"({len(study_batches) * (longest - 1)} steps); first pass (traces) ours {t_ours:.1f}s, study "
             f"{t_study:.1f}s; ours reach {flops / 1e9:.1f} GFLOP/s of useful work (real tokens, forward + "
             f"backward) = {flops / peak:.0%} of this machine's measured float32 matmul peak ({peak / 1e9:.0f} GFLOP/s)")
    transformer_rate = median(rates(real_ours, transformer_s))
    gru_rates = rates(real_ours, ours_s)
    # What 3x the GRU model's real tokens/s would take: the Transformer's useful FLOPs per real
    # token times that rate, against the matmul peak (above 100 %: out of reach on this machine).
    t_flops = transformer_useful_flops(transformer, real_ours, images)
    needed = t_flops / real_ours * 3 * median(gru_rates)
    notes_transformer = (f"the Transformer captioner (model.type transformer, {transformer_sizes(transformer)}) "
                         f"trained on row 2b's batches (the same images, captions, buckets and image-major "
                         f"layout), its repetitions alternating with 2b's in the same run; first pass (traces) "
                         f"{t_transformer:.1f}s; useful work per real token {t_flops / real_ours / 1e6:.1f} MFLOP "
                         f"(GRU attention {useful_flops(s, real_ours, images) / real_ours / 1e6:.1f}), reaching "
                         f"{t_flops / median(transformer_s) / 1e9:.1f} GFLOP/s = "
                         f"{t_flops / median(transformer_s) / peak:.0%} of the matmul peak; 3x the GRU model's "
                         f"tokens/s would need {needed / 1e9:.0f} GFLOP/s = {needed / peak:.0%} of it")
    return [Result("train", "2b. training step, real lengths", "tokens/s", ours_rate, study_rate, 5.0, True,
                   gru_rates, rates(real_study, study_s), notes),
            Result("train", "2c. transformer training, real lengths", "tokens/s", transformer_rate, study_rate,
                   5.0, True, rates(real_ours, transformer_s), rates(real_study, study_s),
                   notes_transformer + "; study column: the study's pipeline, as in 2b"),
            Result("train", "2d. transformer vs GRU attention, real lengths", "tokens/s", transformer_rate,
                   median(gru_rates), 3.0, True, rates(real_ours, transformer_s), gru_rates,
                   notes_transformer + "; 'study' column here: our GRU attention model (row 2b's ours)")]


def build_transformer(ctx: Context, seed: int):
    """The Transformer captioner at row 2b's sizes (R x D regions, vocabulary); its own widths are
    ``configs/flickr8k_transformer.yaml``'s (tiny mode: the tiny ``units`` as width, 2 heads)."""
    import os

    import keras

    from keras_captioning.config import load_config
    from keras_captioning.models.registry import build_model

    s = ctx.sizes
    tiny = [] if s.name == "full" else [f"model.transformer_dim={s.units}", "model.transformer_heads=2",
                                        f"model.transformer_ff_dim={2 * s.units}"]
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                          "flickr8k_transformer.yaml")
    cfg = load_config(config, tiny)
    keras.utils.set_random_seed(seed)
    model = build_model(cfg, s.vocab_size, (s.regions, s.feature_dim), {"pad_id": 0, "start_id": 2, "end_id": 3})
    model.compile(optimizer=keras.optimizers.Adam(4e-4), jit_compile=False)  # as build_models compiles ours
    return model


def transformer_sizes(model) -> str:
    return (f"width {model.model_dim}, {model.num_heads} heads, feed-forward {model.ff_dim}, "
            f"{model.num_layers} decoder + {model.encoder_layers} encoder layers, {model.norm}-norm")


BUCKETS = (8, 10, 12, 14, 16, 18, 20, 23, 26, 30)  # train.length_buckets in tokens; the README's advice


def _default_lengths():
    from benchmarks.lengths import FLICKR8K_TRAIN

    return FLICKR8K_TRAIN


def useful_flops(s, real_tokens: int, images: int) -> float:
    """FLOPs of one training pass (forward + backward ~ 3x forward) over the real tokens only.

    Per image: the encoder (R x D -> E) and the attention keys (E -> A) once. Per real target
    token: the query W2 h (U x A), scores (R x A) and context (R x E), the GRU (inputs [context;
    word] 2E -> 3U, recurrent U -> 3U), and the output layers (U -> U -> V).
    """
    r, d, e, u, v = s.regions, s.feature_dim, s.embedding_dim, s.units, s.vocab_size
    a = s.units  # attention units = units in these benchmarks
    per_image = r * d * e + r * e * a
    per_token = u * a + 2 * r * a + r * e + 2 * e * 3 * u + u * 3 * u + u * u + u * v
    return 3 * 2 * (images * per_image + real_tokens * per_token)


def transformer_useful_flops(model, real_tokens: int, images: int) -> float:
    """``useful_flops`` for the Transformer captioner (forward + backward ~ 3x forward).

    Per image: the regions projected to the width (R x D -> W), the encoder layers over the R
    regions (attention projections 4 W^2, scores and mixing 2 R W, feed-forward 2 W F per
    region) and each decoder layer's cross-attention keys and values (2 R W^2). Per real target
    token, in each decoder layer: self-attention projections (4 W^2) and its scores and mixing
    over the caption prefix (2 P W, P ~ 8 here), the cross-attention query and output (2 W^2)
    and its scores and mixing over the regions (2 R W), the feed-forward (2 W F); then the
    output layer (W x V).
    """
    r, d, v = model.num_regions, model.feature_dim, model.vocab_size
    w, f, layers, encoders = model.model_dim, model.ff_dim, model.num_layers, model.encoder_layers
    prefix = 8
    per_image = r * d * w + encoders * r * (4 * w * w + 2 * r * w + 2 * w * f) + layers * 2 * r * w * w
    per_token = layers * (4 * w * w + 2 * prefix * w + 2 * w * w + 2 * r * w + 2 * w * f) + w * v
    return 3 * 2 * (images * per_image + real_tokens * per_token)


def matmul_peak(size: int = 1024, reps: int = 20) -> float:
    """This machine's float32 matmul FLOP/s (median of a few timed 1024^3 products)."""
    import statistics
    import time

    import tensorflow as tf

    a = tf.random.normal((size, size))

    @tf.function
    def product(x):
        for _ in range(reps):
            x = tf.matmul(x, a) * 1e-3
        return x

    product(a).numpy()
    seconds = []
    for _ in range(5):
        start = time.perf_counter()
        product(a).numpy()
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 * reps / statistics.median(seconds)
