"""6. Feature extraction: images/s from JPEG files to cached features, same CNN."""

from __future__ import annotations

import os

from benchmarks.harness import Context, Result, compare, median, rates


def bench_extraction(ctx: Context) -> list[Result]:
    from benchmarks import study_pipeline as sp
    from keras_captioning.features.backbones import BACKBONES
    from keras_captioning.features.extract import extract_features

    s = ctx.sizes
    records = ctx.records[: s.extract_images]
    spec = BACKBONES[s.backbone]
    ours_dir = os.path.join(ctx.work, "extract_ours")
    study_dir = os.path.join(ctx.work, "extract_study")

    def run_ours(subset):
        extract_features(subset, ctx.vocab, ours_dir, backbone=s.backbone, weights="none",
                         image_size=s.image_size, dtype="float16", overwrite=True)

    def run_study(subset):
        # The study built its feature model once per notebook run, then looped over the images.
        cnn = spec.build_base((s.image_size, s.image_size, 3), None, spec.default_alpha)
        sp.study_extract_loop([r.image_path for r in subset], cnn, study_dir, image_size=s.image_size,
                              preprocess=spec.preprocess)

    # Each call builds its CNN and traces anew, so a warm-up on a few images is enough
    # (library initialisation, file cache); the timed calls process every image.
    run_ours(records[:2])
    run_study(records[:2])
    ours_s, study_s = compare(lambda: run_ours(records), lambda: run_study(records), s.slow_reps, warmup=False)
    n = len(records)
    notes = (f"{n} synthetic {s.synthetic_image_size}px JPEGs -> {s.backbone} (weights=None) at "
             f"{s.image_size}px; both sides build the CNN inside the timed call; ours writes float16 "
             f"shards with captions, the study one float32 .npy per image (batch 16)")
    return [Result("extraction", "6. feature extraction", "images/s", median(rates(n, ours_s)),
                   median(rates(n, study_s)), 1.0, True, rates(n, ours_s), rates(n, study_s), notes)]
