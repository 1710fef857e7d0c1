"""Check a converted EfficientNet-Lite against the reference PyTorch implementation, on real photos.

Not part of the package or its tests (the package never imports torch). Run it in a separate
environment that has torch and the reference implementation (PyPI: efficientnet-lite-pytorch):

    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch efficientnet-lite-pytorch pillow numpy
    .venv/bin/python -m benchmarks.verify_efficientnet_lite --variant lite0 \\
        --checkpoint data/weights/efficientnet-lite0.pth --images 'data/flickr8k/images/*.jpg' \\
        --count 64 --torch-python /tmp/tv/bin/python

Both sides get the same float32 inputs (the photo resized to the nominal size, scaled as
``(x - 127) / 128``). Ours: ``efficientnet_lite`` with the classifier, the checkpoint converted in
memory by ``load_checkpoint_into``. The reference: ``EfficientNet.from_pretrained`` of that package
with the same .pth, run by ``--torch-python`` in a subprocess. Prints the largest absolute logit
difference, the largest relative to the logits' scale, and top-1 agreement.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np

REFERENCE = r"""
import sys, numpy as np, torch
from efficientnet_lite_pytorch import EfficientNet
name, checkpoint, inputs, out = sys.argv[1:5]
model = EfficientNet.from_pretrained(name, weights_path=checkpoint)
model.eval()
x = torch.from_numpy(np.load(inputs)).permute(0, 3, 1, 2).contiguous()
with torch.no_grad():
    np.save(out, model(x).numpy())
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="lite0", choices=["lite0", "lite1", "lite2"])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--images", required=True, help="a glob of photos")
    p.add_argument("--count", type=int, default=64)
    p.add_argument("--torch-python", required=True, help="a Python with torch + efficientnet-lite-pytorch")
    args = p.parse_args(argv)

    from keras_captioning.features.convert_weights import load_checkpoint_into
    from keras_captioning.features.efficientnet_lite import efficientnet_lite, nominal_size, preprocess
    from keras_captioning.features.images import read_image, resize_image

    size = nominal_size(args.variant)
    files = sorted(glob.glob(args.images))[: args.count]
    if not files:
        raise SystemExit(f"no images match {args.images}")
    x = np.stack([preprocess(resize_image(read_image(f, size), size).numpy()) for f in files]).astype(np.float32)
    model = efficientnet_lite(args.variant, (size, size, 3), include_top=True)
    load_checkpoint_into(model, args.checkpoint)
    ours = model.predict(x, batch_size=16, verbose=0)

    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "x.npy"), x)
        subprocess.run([args.torch_python, "-c", REFERENCE, f"efficientnet-{args.variant}", args.checkpoint,
                        os.path.join(tmp, "x.npy"), os.path.join(tmp, "ref.npy")], check=True)
        ref = np.load(os.path.join(tmp, "ref.npy"))
    diff = np.abs(ours - ref)
    print(f"{args.variant}: {len(files)} photos at {size}px, logits {ours.shape}; "
          f"max |ours - reference| = {diff.max():.2e} (logits span {ref.min():.1f}..{ref.max():.1f}; "
          f"relative {diff.max() / np.abs(ref).max():.1e}); mean {diff.mean():.2e}; "
          f"top-1 agree {np.mean(ours.argmax(1) == ref.argmax(1)) * 100:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
