"""
Title: Train the Bahdanau-attention captioner
Description: From feature shards to a trained AttentionCaptioner with the custom train_step.

Uses the package's pieces directly (pipeline, model, fit) rather than the CLI driver, so you
can see what `python -m keras_captioning train` does.
"""

import argparse
import math
import os

import keras

from keras_captioning.config import load_config
from keras_captioning.data.pipeline import count_examples, make_train_dataset
from keras_captioning.decoding import greedy_decode
from keras_captioning.features.build import build_features
from keras_captioning.features.feature_folder import FeatureFolder
from keras_captioning.models import AttentionCaptioner

# ## Setup
CONFIG = "configs/demo.yaml"
FEATURES = "runs/examples/features"
EPOCHS = 8
BATCH_SIZE = 64
LEARNING_RATE = 1e-3

parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
parser.add_argument("--smoke", action="store_true", help="tiny data, seconds")
parser.add_argument("--features", default=FEATURES)
args = parser.parse_args()
overrides = [f"features.out_dir={args.features}"]
if args.smoke:
    overrides += [f"data.root={args.features}-data", "data.synthetic_images=40", "features.shard_size=20"]
    EPOCHS, BATCH_SIZE = 1, 16

# ## Data: one example per (image, caption), padded to the longest caption
cfg = load_config(CONFIG, overrides)
manifest = build_features(cfg)  # no-op when the shards are already there
folder = FeatureFolder(args.features)  # owns the folder's file names
vocab = folder.vocab()
pattern = folder.shard_pattern("train")
max_length = manifest["longest_caption"]
train_ds = make_train_dataset(pattern, BATCH_SIZE, feature="grid", max_length=max_length).repeat()
steps = math.ceil(count_examples(manifest, "train", "all") / BATCH_SIZE)

# ## Model: CNNEncoder -> BahdanauAttention -> RNNDecoder, trained with teacher forcing
num_regions, feature_dim = manifest["grid_shape"]
model = AttentionCaptioner(vocab_size=len(vocab), feature_dim=feature_dim, num_regions=num_regions,
                           embedding_dim=128, units=256, attention_units=256)
model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
model.fit(train_ds, epochs=EPOCHS, steps_per_epoch=steps, verbose=2)

# ## Caption a few training images
batch = next(iter(make_train_dataset(pattern, 4, feature="grid", shuffle=False)))
result = greedy_decode(model, batch["features"], max_length=20)
for ids in result.tokens:
    print(vocab.decode([int(t) for t in ids]))
saved = os.path.join(os.path.dirname(os.path.abspath(args.features)), "attention.keras")
model.save(saved)
print("saved", saved)
