"""Shared helpers for the end-to-end and robustness tests: tiny configs in tmp folders."""

import os
import pathlib

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
