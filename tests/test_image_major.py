"""Image-major batches (``batch_layout="image"``): same loss and gradients as one caption per
row, every caption once per epoch, each image's features once per batch, resume exact."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_captioning.data.pipeline import make_train_dataset
from keras_captioning.errors import CaptioningError
from tests.helpers import caption_pairs, tiny_captioner


def _model(kind):
    keras.utils.set_random_seed(3)
    if kind == "merge":
        return tiny_captioner("merge", vocab_size=30, feature_dim=6, units=8)
    return tiny_captioner(vocab_size=30, feature_dim=6, units=8, init_state="features", attention_reg=0.5,
                          rnn="gru" if kind == "attention-gru" else "lstm")


def _loss_and_grads(model, batch):
    features, tokens, targets, image_index = model._split_batch(batch)
    with tf.GradientTape() as tape:
        _, _, ce_sum, num_tokens, penalty = model._objective(features, tokens, targets, True, image_index)
        loss = ce_sum / num_tokens + penalty
    return float(loss), [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)]


@pytest.mark.parametrize("kind", ["attention", "attention-gru", "merge"])
def test_same_loss_and_gradients_as_one_caption_per_row(kind):
    rng = np.random.default_rng(0)
    shape = (3, 6) if kind == "merge" else (3, 4, 6)
    images = rng.standard_normal(shape).astype("float16")  # the stored dtype: the step casts
    image_index = np.array([0, 0, 1, 2, 2, 2, 1], np.int32)
    captions = np.zeros((7, 9), np.int32)
    for row in range(7):
        words = int(rng.integers(1, 7))
        captions[row, :words + 2] = [2, *rng.integers(4, 30, size=words), 3]
    model = _model(kind)
    grouped = _loss_and_grads(model, {"features": images, "image_index": image_index, "captions": captions})
    per_row = _loss_and_grads(model, {"features": images[image_index], "captions": captions})
    assert grouped[0] == pytest.approx(per_row[0], abs=1e-5)
    for a, b in zip(grouped[1], per_row[1]):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    assert any(np.abs(g).sum() > 0 for g in grouped[1])


@pytest.mark.parametrize("buckets", [None, (5, 8, 11)])
def test_every_caption_once_with_its_own_image(shards, buckets):
    reference = caption_pairs(make_train_dataset(shards, 8, shuffle=False))
    longest = max(len(caption) for _, caption in reference)
    dataset = make_train_dataset(shards, 8, seed=5, shuffle_buffer=16, length_buckets=buckets, batch_layout="image")
    epochs = []
    for _ in range(2):
        batches = list(dataset)
        assert all(len(b["captions"]) == 8 for b in batches[:-1])  # exact batches, as caption-major
        assert batches[0]["features"].dtype == tf.float16  # stored dtype up to the model
        if buckets:
            assert {int(b["captions"].shape[1]) for b in batches} <= {5, 8, 11, longest}
        epochs.append([b["captions"].numpy().tolist() for b in batches])
        assert caption_pairs(batches) == reference  # every caption exactly once, with its own image
    assert epochs[0] != epochs[1]  # reshuffled each epoch
    again = make_train_dataset(shards, 8, seed=5, shuffle_buffer=16, length_buckets=buckets, batch_layout="image")
    assert [b["captions"].numpy().tolist() for b in again] == epochs[0]  # seeded


def test_fewer_feature_rows_than_caption_rows(shards):
    rows = images = 0
    for b in make_train_dataset(shards, 16, seed=1, batch_layout="image", drop_remainder=True):
        assert b["captions"].shape[0] == 16 and b["image_index"].shape == (16,)
        rows, images = rows + 16, images + int(b["features"].shape[0])
    assert images < rows / 2  # ~4.5 captions per image here


def test_bad_layouts_are_refused(shards):
    with pytest.raises(CaptioningError, match="batch_layout"):
        make_train_dataset(shards, 8, batch_layout="rows")
    with pytest.raises(CaptioningError, match="caption_mode='all'"):
        make_train_dataset(shards, 8, caption_mode="random", batch_layout="image")


@pytest.mark.slow  # three short training runs
@pytest.mark.parametrize("cache", ["off", "on"])  # streamed, or held in memory (test_feature_cache.py)
def test_resume_is_exact_with_image_major_buckets(tmp_path, cache):
    from keras_captioning.training.trainer import train
    from tests.helpers import smoke_config

    extra = {"train.batch_layout": "image", "train.length_buckets": "[6, 9]", "train.cache_features": cache}
    train(smoke_config(tmp_path, run="straight", **{"train.epochs": 2}, **extra))
    train(smoke_config(tmp_path, run="resumed", **{"train.epochs": 1}, **extra))
    train(smoke_config(tmp_path, run="resumed", **{"train.epochs": 2}, **extra), resume=True)
    straight = keras.saving.load_model(str(tmp_path / "straight" / "checkpoints" / "last.keras"))
    resumed = keras.saving.load_model(str(tmp_path / "resumed" / "checkpoints" / "last.keras"))
    for a, b in zip(straight.weights, resumed.weights):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-6)
