"""Shared helpers for the end-to-end and robustness tests: tiny configs in tmp folders."""

import hashlib
import os
import pathlib

import numpy as np

from keras_captioning.config import load_config

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")


def smoke_overrides(root, model="attention", run="run", **extra):
    """``--set`` strings for a seconds-long run whose files all live under ``root``."""
    root = pathlib.Path(root)
    items = {
        "data.root": root / "data",
        "features.out_dir": root / "features",
        "train.run_dir": root / run,
        "model.type": model,
        "train.epochs": 2,
    }
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


def smoke_config(root, model="attention", run="run", **extra):
    return load_config(SMOKE, smoke_overrides(root, model, run, **extra))


def subprocess_env():
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def digest(row) -> str:
    return hashlib.sha1(np.ascontiguousarray(row).tobytes()).hexdigest()


def caption_pairs(batches):
    """Sorted (feature digest, caption without padding), one per caption row of training batches.

    Image-major batches are also checked: each image once, and an image's captions contiguous.
    """
    out = []
    for b in batches:
        features, captions = b["features"].numpy(), b["captions"].numpy()
        index = b["image_index"].numpy() if "image_index" in b else np.arange(len(captions))
        if "image_index" in b:
            assert sorted(set(index.tolist())) == list(range(len(features)))  # each image once ...
            assert len({digest(f) for f in features}) == len(features)  # ... and no image twice
            assert int((np.diff(index) != 0).sum()) == len(features) - 1  # its captions contiguous
        out += [(digest(features[row]), tuple(int(t) for t in caption if t)) for row, caption in zip(index, captions)]
    return sorted(out)
