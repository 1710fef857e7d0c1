"""
Title: Extract CNN features into TFRecord shards
Description: Encode every image once with a backbone and cache grids + pooled vectors.

The study's first phase: run the CNN once per image, never during training. Here on the
embedded synthetic dataset with the weight-free `patches` encoder (no download); for COCO pick
`BACKBONE = "inception_v3"` and `WEIGHTS = "imagenet"`.
"""

import argparse
import json
import os

from keras_captioning.config import load_config
from keras_captioning.features.build import build_features

# ## Setup
CONFIG = "configs/demo.yaml"
OUT = "runs/examples/features"
BACKBONE = "patches"
WEIGHTS = "none"

parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
parser.add_argument("--smoke", action="store_true", help="tiny data, seconds")
parser.add_argument("--out", default=OUT)
args = parser.parse_args()

overrides = [f"features.out_dir={args.out}", f"features.backbone={BACKBONE}", f"features.weights={WEIGHTS}"]
if args.smoke:
    overrides += [f"data.root={args.out}-data", "data.synthetic_images=40", "features.shard_size=20"]

# ## Extract
# The dataset is read, split by image, the vocabulary is built from the training captions,
# and the shards, `vocab.json` and `manifest.json` are written (resumable: rerun to finish).
cfg = load_config(CONFIG, overrides)
manifest = build_features(cfg)

# ## What was written
print(json.dumps({k: manifest[k] for k in ("backbone", "grid_shape", "dtype", "counts")}, indent=1))
print("shards:", sorted(os.listdir(args.out))[:4], "...")
