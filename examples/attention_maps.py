"""
Title: Draw attention maps
Description: The study's figure: one heat map per generated word, from a trained run.

Needs a run trained with `make train-attention` (or pass --run).
"""

import argparse
import glob

from keras_captioning.captioner import Captioner

# ## Setup
RUN = "runs/demo-attention"
IMAGES = "data/synthetic/images/*.jpg"
OUT = "runs/examples/attention.png"

parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
parser.add_argument("--run", default=RUN)
parser.add_argument("--images", default=IMAGES)
parser.add_argument("--out", default=OUT)
parser.add_argument("--count", type=int, default=2)
args = parser.parse_args()

# ## Caption with beam search and keep the per-word attention
captioner = Captioner.from_run(args.run)
paths = sorted(glob.glob(args.images))[: args.count]
results = captioner.caption(paths, beam=3)
for path, res in zip(paths, results):
    print(path, "->", res["caption"])

# ## One figure per image: the image with a heat map per word
for written in captioner.draw_attention(results, args.out):
    print("wrote", written)
