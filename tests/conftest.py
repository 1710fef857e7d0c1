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
if os.environ.get("PYTEST_XDIST_WORKER"):
    # ``-n N`` runs N processes already: one TensorFlow thread each (before TensorFlow starts)
    # instead of N processes each spreading its ops over every core (~6 % faster on 2 cores).
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(name, "1")

import pytest  # noqa: E402

#: Modules whose tests share a costly module fixture (a fine-tuned run, a traced Lite0 model):
#: under ``-n N`` each runs whole in one worker, so the fixture is built once, not once per worker.
ONE_WORKER_MODULES = ("tests/test_training_finetune.py",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's "load" with the tests of ``ONE_WORKER_MODULES`` as one work unit each (the
    largest units go first); every other test is its own unit, spread as before. (The
    ``xdist_group`` marks of ``--dist loadgroup`` are ignored under pytest 9 with xdist 3.8.)"""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerModules(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            module = nodeid.split("::", 1)[0]
            return module if module in ONE_WORKER_MODULES else nodeid

    return OneWorkerModules(config, log)


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
def root(tiny_run):
    """The tiny run's folder: ``data/``, ``features/`` and ``run/`` (read only; copy to change)."""
    return tiny_run.root


@pytest.fixture
def copy_run(tiny_run, tmp_path):
    """A private copy of the tiny run's folder (the shared one stays untouched)."""
    target = tmp_path / "run-copy"
    shutil.copytree(tiny_run.run_dir, target)
    return str(target)


@pytest.fixture(scope="session")
def length_shards(tmp_path_factory):
    """Shards of 24 tiny images x 5 captions of 1..14 random words (7 per shard): ``(pattern, manifest)``."""
    import numpy as np
    from PIL import Image

    from keras_captioning.data.records import CaptionRecord
    from keras_captioning.data.vocab import Vocabulary
    from keras_captioning.features.extract import extract_features
    from keras_captioning.features.feature_folder import FeatureFolder

    words = "a dog runs on the green grass near big red ball in park".split()
    root = tmp_path_factory.mktemp("length_shards")
    rng = np.random.default_rng(0)
    records = []
    for i in range(24):
        path = str(root / f"{i}.png")
        Image.new("RGB", (16, 16), (10 * i, 80, 200 - 5 * i)).save(path)
        captions = [" ".join(rng.choice(words, size=int(rng.integers(1, 15)))) for _ in range(5)]
        records.append(CaptionRecord(str(i), path, captions, "train"))
    vocab = Vocabulary.build([c for r in records for c in r.captions])
    out = str(root / "features")
    manifest = extract_features(records, vocab, out, backbone="patches", weights=None, shard_size=7)
    return FeatureFolder(out).shard_pattern("train"), manifest


@pytest.fixture(scope="session")
def shards(length_shards):
    """The glob of ``length_shards``."""
    return length_shards[0]
