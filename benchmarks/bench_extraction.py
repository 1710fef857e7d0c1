"""6. Feature extraction: images/s from JPEG files to cached features, same CNN.

6b. The same with EfficientNet-Lite0 on photo-sized JPEGs (Flickr8k's 224 px): the encoder the
Flickr8k configs use on a CPU, with a floor of 57 images/s (a plain Keras port on these 2 cores).
"""

from __future__ import annotations

import os

from benchmarks.harness import Context, Result, compare, median, rates

LITE_FLOOR = 57.0  # images/s of a plain Keras Lite0 port over the 8 091 Flickr8k photos, 2 cores


def bench_extraction(ctx: Context) -> list[Result]:
    s = ctx.sizes
    n, ours_s, study_s = _compare_extraction(ctx, ctx.records[: s.extract_images], s.backbone, s.image_size, "6")
    notes = (f"{n} synthetic {s.synthetic_image_size}px JPEGs -> {s.backbone} (weights=None) at "
             f"{s.image_size}px; both sides build the CNN inside the timed call; ours writes float16 "
             f"shards with captions, the study one float32 .npy per image (batch 16)")
    return [Result("extraction", "6. feature extraction", "images/s", median(rates(n, ours_s)),
                   median(rates(n, study_s)), 1.0, True, rates(n, ours_s), rates(n, study_s), notes)]


def bench_extraction_lite(ctx: Context) -> list[Result]:
    from keras_captioning.data.loaders import load_dataset
    from keras_captioning.data.synthetic import generate_synthetic

    s = ctx.sizes
    root = os.path.join(ctx.work, "photos")
    generate_synthetic(root, num_images=s.lite_images, seed=1, image_size=s.lite_image_size)
    records = sorted(load_dataset("synthetic", root=root), key=lambda r: r.image_id)
    n, ours_s, study_s = _compare_extraction(ctx, records, "efficientnet_lite0", s.lite_image_size, "6b")
    notes = (f"{n} synthetic {s.lite_image_size}px JPEGs (Flickr8k's size here) -> efficientnet_lite0 "
             f"(weights=None: the same work as the ImageNet weights) at {s.lite_image_size}px, 7 x 7 x 1280 "
             f"grids; ours must also reach {LITE_FLOOR:g} images/s")
    return [Result("extraction", "6b. extraction, EfficientNet-Lite0", "images/s", median(rates(n, ours_s)),
                   median(rates(n, study_s)), 1.0, True, rates(n, ours_s), rates(n, study_s), notes,
                   floor=LITE_FLOOR)]


def _compare_extraction(ctx: Context, records, backbone: str, image_size: int, tag: str):
    """(images, our seconds per rep, the study's seconds per rep) for ``records`` through ``backbone``."""
    from benchmarks import study_pipeline as sp
    from keras_captioning.features.backbones import BACKBONES
    from keras_captioning.features.extract import extract_features

    s = ctx.sizes
    spec = BACKBONES[backbone]
    ours_dir = os.path.join(ctx.work, f"extract_ours_{tag}")
    study_dir = os.path.join(ctx.work, f"extract_study_{tag}")

    def run_ours(subset):
        extract_features(subset, ctx.vocab, ours_dir, backbone=backbone, weights="none",
                         image_size=image_size, dtype="float16", overwrite=True)

    def run_study(subset):
        # The study built its feature model once per notebook run, then looped over the images.
        cnn = spec.build_base((image_size, image_size, 3), None, spec.default_alpha)
        sp.study_extract_loop([r.image_path for r in subset], cnn, study_dir, image_size=image_size,
                              preprocess=spec.preprocess)

    # Each call builds its CNN and traces anew, so a warm-up on a few images is enough
    # (library initialisation, file cache); the timed calls process every image.
    run_ours(records[:2])
    run_study(records[:2])
    ours_s, study_s = compare(lambda: run_ours(records), lambda: run_study(records), s.slow_reps, warmup=False)
    return len(records), ours_s, study_s
