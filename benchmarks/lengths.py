"""Real caption lengths for the benchmarks: a words-per-caption histogram, and draws from it.

``FLICKR8K_TRAIN`` is the histogram of the 30 000 training captions of Flickr8k (Karpathy's
split), counted in words after the package's normalisation (``vocab.normalize_caption``):
mean 10.8 words, longest 37. COCO's captions are much alike (about 10.5 words on average,
a tail past 40 words); with COCO on disk the same table comes from the loader::

    python -m benchmarks.lengths --format karpathy --captions data/coco/dataset_coco.json
    python -m benchmarks.lengths --format coco --captions annotations/captions_train2014.json
    python -m benchmarks.lengths --format karpathy --captions data/flickr8k/dataset_flickr8k.json

(the last one prints ``FLICKR8K_TRAIN``). ``python -m benchmarks.run --lengths FILE.json``
uses a printed table instead of the built-in one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import Counter

# words per caption -> number of training captions (Flickr8k, Karpathy train split)
FLICKR8K_TRAIN = {
    2: 15, 3: 125, 4: 340, 5: 854, 6: 1948, 7: 2501, 8: 2917, 9: 3318, 10: 3310, 11: 3134,
    12: 2772, 13: 2332, 14: 1864, 15: 1339, 16: 979, 17: 683, 18: 518, 19: 369, 20: 213,
    21: 138, 22: 105, 23: 80, 24: 51, 25: 36, 26: 19, 27: 10, 28: 9, 29: 8, 30: 5, 31: 3,
    32: 2, 33: 2, 37: 1,
}


def summary(histogram: dict) -> str:
    total = sum(histogram.values())
    mean = sum(int(k) * v for k, v in histogram.items()) / total
    return f"{total} captions, mean {mean:.1f} words, longest {max(map(int, histogram))}"


def draw_words(rng, count: int, histogram: dict | None = None):
    """``count`` caption lengths in words, drawn (seeded by ``rng``) from ``histogram``."""
    import numpy as np

    histogram = histogram or FLICKR8K_TRAIN
    words = np.array(sorted(int(k) for k in histogram))
    weights = np.array([histogram[k] if k in histogram else histogram[str(k)] for k in words], float)
    return rng.choice(words, size=count, p=weights / weights.sum())


def load_histogram(path: str) -> dict:
    """A table printed by this module's CLI: ``{"words": count}``."""
    try:
        with open(path, encoding="utf-8") as fh:
            table = {int(k): int(v) for k, v in json.load(fh).items()}
    except (OSError, ValueError, AttributeError) as err:
        raise SystemExit(f"{path}: not a caption-length table ({err}); make one with python -m benchmarks.lengths") from None
    if not table or min(table) < 1 or min(table.values()) < 0 or not sum(table.values()):
        raise SystemExit(f"{path}: a caption-length table needs positive word counts and captions")
    return table


def from_loader(fmt: str, captions: str, images: str | None, split: str = "train") -> dict:
    """The histogram of ``split``'s captions as the package's loader reads them."""
    from keras_captioning.data.loaders import load_dataset
    from keras_captioning.data.vocab import normalize_caption

    records = load_dataset(fmt, captions=captions, images=images or ".", check_files=False)
    counts = Counter(len(normalize_caption(c).split()) for r in records
                     if split in (None, "all") or r.split in (split, None) for c in r.captions)
    return dict(sorted(counts.items()))


def write_length_shards(out_dir: str, images: int, regions: int, dim: int, seed: int = 0,
                        vocab_size: int = 5000, histogram: dict | None = None) -> str:
    """Format-3 shards of random float16 grids, 5 captions per image with real lengths (``histogram``).

    Token ids are random words (ids 4..vocab_size-1) wrapped in <start>/<end>; the texts are
    placeholders (the training benchmarks never read them).
    """
    import numpy as np
    import tensorflow as tf

    from keras_captioning.data.tfrecords import (
        FORMAT_VERSION,
        MANIFEST_FORMAT,
        MANIFEST_NAME,
        serialize_example,
    )
    from keras_captioning.features.feature_folder import FeatureFolder

    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    words = draw_words(rng, images * 5, histogram).reshape(images, 5)
    shards, per_shard, longest = [], 1000, 0
    count = math.ceil(images / per_shard)
    for index in range(count):
        name = FeatureFolder.shard_name("train", index, count)
        with tf.io.TFRecordWriter(os.path.join(out_dir, name)) as writer:
            for image in range(index * per_shard, min(images, (index + 1) * per_shard)):
                grid = rng.standard_normal((regions, dim), dtype=np.float32).astype("float16")
                ids = [[2, *rng.integers(4, vocab_size, size=int(n)).tolist(), 3] for n in words[image]]
                longest = max(longest, *map(len, ids))
                writer.write(serialize_example(str(image), grid, ["x"] * 5, ids))
        shards.append(name)
    manifest = {"format": MANIFEST_FORMAT, "format_version": FORMAT_VERSION, "kind": "final", "dtype": "float16",
                "grid_shape": [regions, dim], "pooled_dim": dim, "longest_caption": longest,
                "vocab_size": vocab_size, "shards": {"train": shards},
                "counts": {"train": {"images": images, "captions": images * 5, "trainable_images": images,
                                     "trainable_captions": images * 5}}}
    with open(os.path.join(out_dir, MANIFEST_NAME), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh)
    return out_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", required=True, help="coco | karpathy | flickr8k (the package's loaders)")
    parser.add_argument("--captions", required=True, help="the annotation file")
    parser.add_argument("--images", default=None, help="image folder (not read)")
    parser.add_argument("--split", default="train", help="split to count (default train; 'all' for every split)")
    args = parser.parse_args(argv)
    table = from_loader(args.format, args.captions, args.images, args.split)
    print(summary(table), file=sys.stderr)
    print(json.dumps({str(k): v for k, v in table.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
