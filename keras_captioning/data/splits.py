"""Seeded image subsets and train/val/test splits by image (never by caption)."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence

from keras_captioning.data.records import CaptionRecord
from keras_captioning.errors import CaptioningError


def select_and_split(
    records: Sequence[CaptionRecord],
    num_images: int | None = None,
    ratios: dict[str, float] | None = None,
    seed: int = 0,
) -> list[CaptionRecord]:
    """Pick a seeded random subset of images and assign splits by image.

    The records are sorted by ``image_id`` and then shuffled with ``random.Random(seed)``,
    so the result depends only on the set of images and the seed, not on input order.
    An image and all its captions always land in one split.

    Args:
        records: one record per image (image ids must be unique).
        num_images: how many images to keep (the first ones of the shuffle); None keeps all.
        ratios: ``{split name: fraction}`` with fractions >= 0 summing to 1, e.g.
            ``{"train": 0.7, "val": 0.3}`` (the study's split). None keeps each record's own
            split. Counts come from ``split_sizes``.
        seed: shuffle seed.

    Returns:
        New records (the inputs are not modified) in shuffled order; with ``ratios`` the
        first ``n_1`` get the first split name, the next ``n_2`` the second, and so on.

    Raises:
        CaptioningError: repeated image ids, ``num_images`` out of range, or bad ratios.
    """
    ids = [record.image_id for record in records]
    if len(set(ids)) != len(ids):
        raise CaptioningError("records: image ids repeat; a split by image needs one record per image")
    if num_images is None:
        num_images = len(records)
    elif not 1 <= num_images <= len(records):
        raise CaptioningError(f"num_images: {num_images} requested but {len(records)} images are available")

    shuffled = sorted(records, key=lambda record: record.image_id)
    random.Random(seed).shuffle(shuffled)
    chosen = shuffled[:num_images]
    if ratios is None:
        splits = [record.split for record in chosen]
    else:
        sizes = split_sizes(num_images, ratios)
        splits = [name for name, size in sizes.items() for _ in range(size)]
    return [dataclasses.replace(r, captions=list(r.captions), split=s) for r, s in zip(chosen, splits)]


def split_sizes(num_images: int, ratios: dict[str, float]) -> dict[str, int]:
    """Turn fractions into image counts that sum to ``num_images``.

    Rounding: each split first gets ``floor(n * fraction)``; the images left over go one
    each to the splits with the largest fractional remainders (ties: earlier split first).
    Then every split with a positive fraction that got 0 images takes one from the
    currently largest split, as long as that leaves the largest with at least one, so all
    splits are non-empty whenever ``num_images`` is at least the number of splits.
    E.g. 10 images at 0.7/0.3 -> 7/3; 3 images at 0.9/0.05/0.05 -> 1/1/1.
    """
    if not ratios:
        raise CaptioningError("ratios: give at least one split, e.g. {'train': 0.7, 'val': 0.3}")
    if any(not isinstance(f, (int, float)) or f < 0 for f in ratios.values()):
        raise CaptioningError(f"ratios: fractions must be numbers >= 0, got {ratios}")
    if not math.isclose(sum(ratios.values()), 1.0, abs_tol=1e-6):
        raise CaptioningError(f"ratios: fractions must sum to 1, got {sum(ratios.values()):g} for {ratios}")

    total = sum(ratios.values())  # within 1e-6 of 1; dividing keeps the floors from overshooting
    exact = {name: num_images * fraction / total for name, fraction in ratios.items()}
    sizes = {name: math.floor(value) for name, value in exact.items()}
    by_remainder = sorted(
        exact, key=lambda name: exact[name] - sizes[name], reverse=True
    )  # stable: ties keep order
    for name in by_remainder[: num_images - sum(sizes.values())]:
        sizes[name] += 1
    for name, fraction in ratios.items():
        largest = max(sizes, key=sizes.get)
        if fraction > 0 and sizes[name] == 0 and sizes[largest] > 1:
            sizes[largest] -= 1
            sizes[name] += 1
    return sizes
