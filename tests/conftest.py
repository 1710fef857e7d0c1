"""Shared test setup: quiet TensorFlow, deterministic seeds, tiny sizes, one shared tiny run.

``tiny_run`` trains the smoke attention model once per session (a few seconds) in a session
tmp folder; tests that only read a run (caption, evaluate, bundle, export) share it instead
of training their own. Tests that change a run copy it first (``copy_run``).
"""

import os
import shutil
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A trained smoke attention run: ``root`` (data/, features/, run/), ``run_dir``, ``cfg``."""
    from keras_captioning.training.trainer import train
    from tests.helpers import smoke_config

    root = tmp_path_factory.mktemp("tiny")
    cfg = smoke_config(root, "attention", "run")
    run_dir = train(cfg)
    return types.SimpleNamespace(root=root, run_dir=str(run_dir), cfg=cfg)


@pytest.fixture
def copy_run(tiny_run, tmp_path):
    """A private copy of the tiny run's folder (the shared one stays untouched)."""
    target = tmp_path / "run-copy"
    shutil.copytree(tiny_run.run_dir, target)
    return str(target)
