"""One Flickr8k-sized training epoch of the attention model, before and after, in one run.

Usage::

    python -m benchmarks.epoch --features features/flickr8k-mobilenet_025   # real shards
    python -m benchmarks.epoch                                              # synthetic shards

"before" is the study's batching as the package first did it: one feature row per
(image, caption), every batch padded to the longest caption, and TF's automatic
differentiation of the time loop. "after" is this package's fast path: image-major batches
(each image's features read and encoded once per batch; ``--layout caption`` for the
committed Flickr8k configs' batching), length buckets, float16 features up to the model,
features held in memory (``FeatureCache``, its one read of the shards counted in the epoch's
wall time; ``--no-cache`` streams them), and the fused GRU loop (``gru_attention_loop``: a
hand-written backward pass, each step only on the captions still going). ``--compare loop``
isolates the loop: both sides batch the "after" way, before with automatic differentiation,
after with the fused loop. Both train the same model (study sizes:
embedding 256, 512 units, attention 512, Adam 4e-4, batch 64 captions) from the same seed
for one pass over the same training captions, through ``model.fit`` as the trainer does;
the wall time includes tracing (one width before, a few after). Without ``--features``,
shards of random features are written with the real Flickr8k caption lengths
(``benchmarks.lengths``) at the study's InceptionV3 grid (64 x 2048, float16).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")



def log(message: str) -> None:
    print(f"[epoch] {message}", file=sys.stderr, flush=True)


def one_epoch(features_dir: str, manifest: dict, layout: str, buckets, seed: int, cached: bool = False,
              fused: bool = True) -> dict:
    import keras

    from keras_captioning.data.feature_cache import FeatureCache
    from keras_captioning.data.pipeline import count_examples, make_train_dataset
    from keras_captioning.features.feature_folder import FeatureFolder
    from keras_captioning.models.attention_captioner import AttentionCaptioner

    regions, dim = manifest["grid_shape"]
    vocab = int(manifest.get("vocab_size") or 5000)
    captions = count_examples(manifest, "train", "all")
    steps = math.ceil(captions / 64)
    longest = int(manifest["longest_caption"])
    pattern = FeatureFolder(features_dir).shard_pattern("train")
    load_started = time.perf_counter()
    cache = FeatureCache.from_shards(pattern, "grid") if cached else None
    load_seconds = time.perf_counter() - load_started  # part of this epoch's wall time
    ds = make_train_dataset(pattern, 64, seed=seed, shuffle_buffer=10000, max_length=longest,
                            length_buckets=buckets, batch_layout=layout, cache=cache)
    keras.utils.set_random_seed(seed)
    model = AttentionCaptioner(vocab_size=vocab, feature_dim=dim, num_regions=regions, embedding_dim=256,
                               units=512, attention_units=512, fused_backward=fused)
    model.compile(optimizer=keras.optimizers.Adam(4e-4))

    real = padded = 0
    for batch in ds:  # untimed: what the epoch holds (real target tokens vs padded steps)
        targets = batch["captions"].numpy()[:, 1:]
        real += int((targets != 0).sum())
        padded += targets.size
    started = time.perf_counter()
    history = model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
    seconds = time.perf_counter() - started + load_seconds
    return {"layout": layout, "buckets": list(buckets) if buckets else None, "cached": cached, "fused_loop": fused,
            "cache_load_seconds": round(load_seconds, 1), "seconds": round(seconds, 1),
            "steps": steps, "captions": captions, "real_tokens": real, "padded_tokens": padded,
            "tokens_per_s": round(real / seconds, 1), "loss": float(history.history["loss"][-1])}


def main(argv=None) -> int:
    from benchmarks.bench_train import BUCKETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", help="a features folder (format 3 shards); default: synthetic shards")
    parser.add_argument("--images", type=int, default=6000, help="synthetic: images (x 5 captions)")
    parser.add_argument("--regions", type=int, default=64)
    parser.add_argument("--feature-dim", type=int, default=2048)
    parser.add_argument("--buckets", default=",".join(map(str, BUCKETS)), help="after: length buckets")
    parser.add_argument("--layout", choices=("image", "caption"), default="image", help="after: batch layout")
    parser.add_argument("--no-cache", action="store_true", help="after: stream the features from the shards")
    parser.add_argument("--compare", choices=("package", "loop"), default="package",
                        help="package: the study's batching + autodiff loop against the fast path; loop: the "
                             "fast path's batching on both sides, autodiff loop against the fused loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench_out")
    args = parser.parse_args(argv)

    from benchmarks.lengths import write_length_shards
    from keras_captioning.data.shards import read_manifest

    buckets = tuple(int(w) for w in args.buckets.split(",") if w.strip())
    with tempfile.TemporaryDirectory(prefix="epoch-") as work:
        features = args.features
        if not features:
            log(f"writing synthetic shards: {args.images} images x 5 captions, {args.regions}x{args.feature_dim}")
            features = write_length_shards(os.path.join(work, "shards"), args.images, args.regions, args.feature_dim)
        manifest = read_manifest(features)
        runs = []
        after = (args.layout, buckets, not args.no_cache)
        before = after if args.compare == "loop" else ("caption", None, False)
        for name, (layout, widths, cached), fused in (("before", before, False), ("after", after, True)):
            log(f"{name}: {layout}-major batches, buckets {widths}, features {'in memory' if cached else 'streamed'}, "
                f"{'fused loop' if fused else 'autodiff loop'}")
            runs.append({"name": name, **one_epoch(features, manifest, layout, widths, args.seed, cached, fused)})
            log(f"{name}: {runs[-1]['seconds']} s, {runs[-1]['tokens_per_s']} real tokens/s")
    before, after = runs
    result = {"features": args.features or f"synthetic {args.regions}x{args.feature_dim}",
              "grid_shape": manifest["grid_shape"], "runs": runs,
              "speedup": round(before["seconds"] / after["seconds"], 2)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "epoch.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    print(f"one epoch, {before['captions']} captions, grid {manifest['grid_shape']}, batch 64, study sizes")
    for r in runs:
        loop = "fused" if r["fused_loop"] else "autodiff"
        print(f"  {r['name']:6s} {r['layout']}-major buckets={r['buckets']} cached={r['cached']} loop={loop}: "
              f"{r['seconds']:7.1f} s  "
              f"{r['tokens_per_s']:8.1f} real tokens/s  ({r['real_tokens']} real of {r['padded_tokens']} "
              f"token steps), loss {r['loss']:.3f}")
    print(f"  wall time before/after: {result['speedup']}x  ({args.out}/epoch.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
