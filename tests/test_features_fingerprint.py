"""Features know whether they are current: one fingerprint decides reuse, extract or refuse."""

import json
import os

import pytest

from keras_captioning.config import load_config
from keras_captioning.errors import CaptioningError
from keras_captioning.features.build import build_features
from keras_captioning.features.feature_folder import FeatureFolder
from keras_captioning.features.fingerprint import FINGERPRINT_KEY, feature_fingerprint
from keras_captioning.run_directory import RunDirectory
from tests.helpers import SMOKE, smoke_overrides

FAST = {"train.epochs": 1, "train.steps_per_epoch": 1, "train.select_on": "val_loss"}


def decide(cfg):
    return FeatureFolder(cfg.features_dir).decide(cfg)


def _own(root, **extra):
    """A smoke config whose features folder is its own (features/<name> under the cwd)."""
    return load_config(SMOKE, smoke_overrides(root, **{"features.out_dir": "", **FAST, **extra}))


@pytest.mark.slow  # builds features and trains; the currency rule itself: the tests below
def test_vocab_size_override_trains_on_the_new_vocabulary(tmp_path, monkeypatch):
    from keras_captioning.training.trainer import train

    monkeypatch.chdir(tmp_path)
    build_features(_own(tmp_path))  # features of data.vocab_size 5000 are there
    cfg = _own(tmp_path, run="run-small", **{"data.vocab_size": 3})
    run_dir = train(cfg)
    vocab = RunDirectory(run_dir).vocab()
    assert len(vocab) == 3 + 4  # three words and the four special tokens
    assert vocab.fingerprint() == FeatureFolder(cfg.features_dir).vocab().fingerprint()
    with open(os.path.join(run_dir, "manifest.json"), encoding="utf-8") as fh:
        assert json.load(fh)[FINGERPRINT_KEY]["data.vocab_size"] == 3


def test_dtype_change_reextracts_own_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert build_features(_own(tmp_path))["dtype"] == "float16"
    cfg = _own(tmp_path, **{"features.dtype": "float32"})
    assert decide(cfg)[0] == "extract"
    assert build_features(cfg)["dtype"] == "float32"
    assert decide(cfg) == ("reuse", [])


def test_stale_explicit_folder_is_refused_in_one_line(tmp_path):
    cfg = load_config(SMOKE, smoke_overrides(tmp_path))
    build_features(cfg)
    stale = load_config(SMOKE, smoke_overrides(tmp_path, **{"data.seed": 7, "data.max_length": 9}))
    assert decide(stale)[0] == "refuse"
    with pytest.raises(CaptioningError) as err:
        build_features(stale)
    message = str(err.value)
    assert "\n" not in message and "data.seed: 0 -> 7" in message and "data.max_length: 20 -> 9" in message
    assert build_features(stale, overwrite=True)[FINGERPRINT_KEY] == feature_fingerprint(stale)


def test_manifest_without_fingerprint_is_not_current(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _own(tmp_path)
    build_features(cfg)
    path = os.path.join(cfg.features_dir, "manifest.json")
    with open(path, encoding="utf-8") as fh:
        manifest = json.load(fh)
    del manifest[FINGERPRINT_KEY]
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh)
    decision, changed = decide(cfg)
    assert decision == "extract" and changed
    assert FINGERPRINT_KEY in build_features(cfg)
