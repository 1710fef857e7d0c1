"""4. Storage: feature bytes on disk per image."""

from __future__ import annotations

import os

from benchmarks.bench_input import feature_files
from benchmarks.harness import Context, Result


def bench_storage(ctx: Context) -> list[Result]:
    s = ctx.sizes
    files = feature_files(ctx)
    n = len(files["records"])
    from keras_captioning.features.feature_folder import FeatureFolder

    shard_bytes = sum(os.path.getsize(f) for f in FeatureFolder(files["ours_dir"]).shard_files())
    npy_bytes = sum(os.path.getsize(p) for p in files["npy_paths"])
    ours, grid_npy = shard_bytes / n, npy_bytes / n
    grid16 = s.regions * s.feature_dim * 2
    pooled_npy = s.feature_dim * 4 + 128  # the study's float32 .npy: np.save adds a 128-byte header
    study = grid_npy + pooled_npy
    notes = (f"apparent file sizes, {n} images; ours per image = float16 grid {grid16} B + captions, ids and "
             f"proto framing {ours - grid16:.0f} B (the pooled vector is the grid's mean: derived, not stored), "
             f"one shard for both models; study = what its two models read per image: the float32 grid .npy "
             f"({grid_npy:.0f} B, attention) + the float32 pooled .npy ({pooled_npy} B, vanilla), captions in "
             f"its JSON not counted; against the grid .npy alone the ratio is {ours / grid_npy:.3f}x "
             f"(the float16 grid alone {grid16 / grid_npy:.3f}x); manifest/vocab JSON (per dataset) not counted")
    return [Result("storage", "4. storage", "bytes/image", ours, study, 0.5, False, [ours], [study], notes)]
