"""
Title: Caption your own image
Description: Load a trained run and caption any JPEG or PNG, of any size.
"""

import argparse

from keras_captioning.captioner import Captioner

# ## Setup
RUN = "runs/demo-attention"
BEAM = 3

parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
parser.add_argument("images", nargs="+", help="image files")
parser.add_argument("--run", default=RUN)
parser.add_argument("--beam", type=int, default=BEAM)
args = parser.parse_args()

# ## Caption
# The run records its backbone, image size and vocabulary: the image is encoded exactly as
# the training images were, then decoded with beam search.
captioner = Captioner.from_run(args.run)
for path, result in zip(args.images, captioner.caption(args.images, beam=args.beam)):
    print(f"{path}: {result['caption']}")
