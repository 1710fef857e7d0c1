"""``train.cache_features``: the train split's features read once and held in memory.

The cached pipeline must give the batches the streaming one gives, only in another
(seeded) order: every caption once per epoch with its own image's features, the stored
dtype, the same bucket widths and layouts.
"""

import os

import pytest
import tensorflow as tf

from keras_captioning.data.feature_cache import FeatureCache, cached_bytes
from keras_captioning.data.pipeline import make_train_dataset
from keras_captioning.data.shards import read_manifest
from keras_captioning.errors import CaptioningError
from tests.helpers import caption_pairs


@pytest.mark.parametrize("layout,buckets", [("caption", None), ("image", None), ("image", (5, 8, 11)),
                                            ("caption", (5, 8, 11))])
def test_cached_batches_hold_the_streamed_rows(shards, layout, buckets):
    cache = FeatureCache.from_shards(shards, "grid")
    streamed = list(make_train_dataset(shards, 8, seed=2, length_buckets=buckets, batch_layout=layout))
    cached = make_train_dataset(shards, 8, seed=2, length_buckets=buckets, batch_layout=layout, cache=cache)
    epochs = []
    for _ in range(2):
        batches = list(cached)
        assert caption_pairs(batches) == caption_pairs(streamed)  # every caption once, with its own image
        assert all(len(b["captions"]) == 8 for b in batches[:-1])
        assert batches[0]["features"].dtype == streamed[0]["features"].dtype == tf.float16
        widths = {int(b["captions"].shape[1]) for b in batches}
        longest = max(int(b["captions"].shape[1]) for b in streamed)
        assert widths <= (set(buckets) | {longest} if buckets else set(range(2, longest + 1)))
        epochs.append([b["captions"].numpy().tolist() for b in batches])
    assert epochs[0] != epochs[1]  # reshuffled each epoch
    again = make_train_dataset(shards, 8, seed=2, length_buckets=buckets, batch_layout=layout, cache=cache)
    assert [b["captions"].numpy().tolist() for b in again] == epochs[0]  # seeded


def test_pooled_cache_equals_the_streamed_mean(shards):
    cache = FeatureCache.from_shards(shards, "pooled")
    assert cache.features.dtype == tf.float32
    streamed = list(make_train_dataset(shards, 8, feature="pooled", shuffle=False))
    cached = list(make_train_dataset(shards, 8, feature="pooled", shuffle=False, cache=cache))
    assert cached[0]["features"].dtype == streamed[0]["features"].dtype == tf.float32
    assert caption_pairs(cached) == caption_pairs(streamed)  # the same vectors, bit for bit, with the same captions


def test_cached_bytes_come_from_the_manifest(shards):
    manifest = read_manifest(os.path.dirname(shards))
    cache = FeatureCache.from_shards(shards, "grid")
    assert cached_bytes(manifest, "train", "grid") == cache.nbytes
    assert cached_bytes(manifest, "train", "pooled") == FeatureCache.from_shards(shards, "pooled").nbytes


def test_cache_needs_all_captions_and_its_own_feature(shards):
    with pytest.raises(CaptioningError, match="caption_mode='all'"):
        make_train_dataset(shards, 8, caption_mode="random", cache=FeatureCache.from_shards(shards))
    with pytest.raises(CaptioningError, match="holds 'pooled' features, the dataset reads 'grid'"):
        make_train_dataset(shards, 8, feature="grid", cache=FeatureCache.from_shards(shards, "pooled"))


def test_cache_setting_is_checked_when_the_config_loads(tmp_path):
    from tests.helpers import smoke_config

    with pytest.raises(CaptioningError, match="cache_features"):
        smoke_config(tmp_path, **{"train.cache_features": "sometimes"})
    with pytest.raises(CaptioningError, match="cache_features=on needs"):
        smoke_config(tmp_path, **{"train.cache_features": "on", "train.strategy": "mirrored"})
    assert smoke_config(tmp_path).train.cache_features == "off"  # the streaming order of earlier runs


def test_trainer_caches_as_the_setting_says(length_shards, tmp_path, monkeypatch, caplog):
    from keras_captioning.data import feature_cache
    from keras_captioning.training.cross_entropy_stage import feature_cache as _feature_cache
    from tests.helpers import smoke_config

    pattern, manifest = length_shards
    folder = os.path.dirname(pattern)

    def cfg(setting, **extra):
        return smoke_config(tmp_path, **{"features.out_dir": folder, "train.cache_features": setting, **extra})

    assert _feature_cache(cfg("off"), manifest, "grid") is None
    assert _feature_cache(cfg("auto", **{"train.caption_mode": "random"}), manifest, "grid") is None
    cache = _feature_cache(cfg("auto"), manifest, "grid")
    assert cache.num_images == manifest["counts"]["train"]["images"]
    monkeypatch.setattr(feature_cache, "CACHE_LIMIT_BYTES", cache.nbytes - 1)
    with caplog.at_level("INFO"):
        assert _feature_cache(cfg("auto"), manifest, "grid") is None  # too big for "auto" ...
    assert "read from the shards each epoch" in caplog.text
    assert _feature_cache(cfg("on"), manifest, "grid").num_images == cache.num_images  # ... "on" caches anyway

