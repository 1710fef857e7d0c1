"""tf.data pipelines over real shards (patches backbone): counts, padding, captions, determinism."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from keras_captioning.data.feature_cache import FeatureCache
from keras_captioning.data.pipeline import count_examples, make_eval_dataset, make_train_dataset
from keras_captioning.data.records import CaptionRecord
from keras_captioning.data.vocab import Vocabulary
from keras_captioning.errors import CaptioningError
from keras_captioning.features.extract import extract_features
from keras_captioning.features.feature_folder import FeatureFolder

SPECIAL = (0, 2, 3)  # <pad>, <start>, <end>


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    words = ["red", "blue", "green", "small", "big", "circle", "square", "left", "right", "top"]
    records = []
    for i in range(10):
        path = str(root / f"{i}.png")
        Image.new("RGB", (24, 24), (20 * i, 100, 255 - 20 * i)).save(path)
        captions = [" ".join(words[(i + k) % 10] for k in range(2 + j + i % 3)) for j in range(3)]
        records.append(CaptionRecord(str(i), path, captions, "train" if i < 8 else "val"))
    records[0].captions = ["!!!", "a b c d e f g h i j k l"]  # one caption normalizes to nothing
    records[1].captions = ["???", "..."]  # an image with no usable caption
    vocab = Vocabulary.build([c for r in records for c in r.captions])
    out = str(root / "features")
    manifest = extract_features(records, vocab, out, backbone="patches", weights=None, shard_size=3)
    return out, manifest, records


def _pattern(out, split="train"):
    return FeatureFolder(out).shard_pattern(split)


def _rows(dataset):
    """All caption rows of a dataset, right-padded with 0 to one width."""
    batches = [batch["captions"].numpy() for batch in dataset]
    width = max(b.shape[1] for b in batches)
    return np.concatenate([np.pad(b, ((0, 0), (0, width - b.shape[1]))) for b in batches], axis=0)


def test_all_and_random_counts_match_the_manifest(shards):
    out, manifest, _ = shards
    assert count_examples(manifest, "train", "all") == 3 * 6 + 1  # 6 full images + 1 usable caption
    assert count_examples(manifest, "train", "random") == 7  # the image without words is dropped
    assert count_examples(manifest, "test", "all") == 0
    for mode in ("all", "random"):
        rows = _rows(make_train_dataset(_pattern(out), 4, caption_mode=mode, seed=1))
        assert len(rows) == count_examples(manifest, "train", mode)


def test_captions_are_padded_with_zero_and_never_empty(shards):
    out, _, _ = shards
    for batch in make_train_dataset(_pattern(out), 5, feature="grid"):
        assert batch["features"].shape[1:] == (64, 294) and batch["features"].dtype == "float16"  # stored dtype; the model casts
        captions = batch["captions"].numpy()
        assert captions.dtype == np.int32 and (captions[:, 0] == 2).all()
        for row in captions:
            end = int(np.argmax(row == 3))
            assert row[end] == 3 and (row[end + 1:] == 0).all() and (row[1:end] != 0).all()
            assert any(token not in SPECIAL for token in row)  # no empty caption


def test_max_length_pads_and_truncates(shards):
    out, _, _ = shards
    rows = _rows(make_train_dataset(_pattern(out), 4, feature="pooled", max_length=5, shuffle=False))
    assert rows.shape[1] == 5
    assert ((rows == 3).sum(axis=1) == 1).all()  # every caption still ends with <end>
    assert any(row[-1] == 3 for row in rows)  # the long ones were cut to 4 tokens + <end>
    batch = next(iter(make_train_dataset(_pattern(out), 4, feature="pooled", drop_remainder=True)))
    assert batch["features"].shape == (4, 294)


def test_shuffle_and_random_choice_are_seeded(shards):
    out, _, _ = shards
    first = _rows(make_train_dataset(_pattern(out), 64, caption_mode="random", seed=3, shuffle=False))
    again = _rows(make_train_dataset(_pattern(out), 64, caption_mode="random", seed=3, shuffle=False))
    np.testing.assert_array_equal(first, again)
    dataset = make_train_dataset(_pattern(out), 64, caption_mode="random", seed=3, shuffle=False)
    epochs = [_rows(dataset) for _ in range(3)]
    assert any(not np.array_equal(epochs[0], other) for other in epochs[1:])  # a new draw each epoch

    shuffled = [_rows(make_train_dataset(_pattern(out), 64, seed=7, shuffle_buffer=8)) for _ in range(2)]
    np.testing.assert_array_equal(*shuffled)
    in_order = _rows(make_train_dataset(_pattern(out), 64, shuffle=False))
    assert not np.array_equal(shuffled[0], in_order)
    assert sorted(map(tuple, shuffled[0])) == sorted(map(tuple, in_order))


def test_eval_dataset_yields_every_image_once_with_references(shards):
    out, _, records = shards
    seen = {}
    for batch in make_eval_dataset(_pattern(out), 3, feature="pooled"):
        assert batch["features"].shape[1:] == (294,)
        for image_id, refs in zip(batch["image_id"].numpy(), batch["references"].numpy()):
            seen[image_id.decode()] = [r.decode() for r in refs if r]
    expected = {r.image_id: r.captions for r in records if r.split == "train"}
    assert seen == expected


def test_shards_without_manifest_are_probed(shards, tmp_path):
    out, _, _ = shards
    for name in os.listdir(out):
        if name.startswith("val-"):
            shutil.copy(os.path.join(out, name), tmp_path / name)
    batch = next(iter(make_train_dataset(FeatureFolder(tmp_path).shard_pattern("val"), 8)))
    assert batch["features"].shape == (6, 64, 294)  # 2 images x 3 captions


def test_errors(shards, tmp_path):
    out, _, _ = shards
    with pytest.raises(CaptioningError, match="no TFRecord shards match"):
        make_train_dataset(FeatureFolder(tmp_path).shard_pattern("train"), 4)
    with pytest.raises(CaptioningError, match="caption_mode"):
        make_train_dataset(_pattern(out), 4, caption_mode="first")
    with pytest.raises(CaptioningError, match="batch_size"):
        make_eval_dataset(_pattern(out), 0)


def test_all_mode_batches_are_exact_across_windows_and_reshuffled(shards):
    out, manifest, _ = shards
    total = count_examples(manifest, "train", "all")
    in_order = _rows(make_train_dataset(_pattern(out), 4, shuffle=False))
    # shuffle_buffer=2 -> windows of 4 images, so batches are cut across window boundaries
    dataset = make_train_dataset(_pattern(out), 4, seed=5, shuffle_buffer=2)
    epochs = []
    for _ in range(2):
        sizes = [int(b["captions"].shape[0]) for b in dataset]
        assert sizes == [4] * (total // 4) + ([total % 4] if total % 4 else [])
        epochs.append(_rows(dataset))
    assert sorted(map(tuple, epochs[0])) == sorted(map(tuple, in_order))
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each iteration
    dropped = [b for b in make_train_dataset(_pattern(out), 4, seed=5, shuffle_buffer=2, drop_remainder=True)]
    assert len(dropped) == total // 4 and dropped[0]["features"].shape == (4, 64, 294)


@pytest.mark.parametrize("options", [
    {"caption_mode": "random"},
    pytest.param({"length_buckets": (5, 8, 11)}, marks=pytest.mark.slow),  # the window draws: "cached"
    pytest.param({"batch_layout": "image"}, marks=pytest.mark.slow),
    {"cache": "grid"},
], ids=["random", "buckets", "image-major", "cached"])
def test_reshuffle_false_repeats_the_first_order_on_every_iteration(shards, options):
    """The trainer's per-epoch datasets: Keras iterates one once more under a strategy."""
    out, _, _ = shards
    if options.get("cache"):
        options = {"cache": FeatureCache.from_shards(_pattern(out), "grid")}
    fixed = make_train_dataset(_pattern(out), 4, seed=5, shuffle_buffer=2, reshuffle=False, **options)
    first, second = _rows(fixed), _rows(fixed)
    np.testing.assert_array_equal(first, second)
    fresh = make_train_dataset(_pattern(out), 4, seed=5, shuffle_buffer=2, reshuffle=False, **options)
    np.testing.assert_array_equal(first, _rows(fresh))  # the order depends on the seed alone
    other = make_train_dataset(_pattern(out), 4, seed=6, shuffle_buffer=2, reshuffle=False, **options)
    assert not np.array_equal(first, _rows(other))
    moving = make_train_dataset(_pattern(out), 4, seed=5, shuffle_buffer=2, **options)
    assert not np.array_equal(_rows(moving), _rows(moving))  # the default: a new order each iteration
