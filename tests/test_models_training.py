"""Training the captioners: fit with callbacks, overfitting, mixed precision, XLA, MirroredStrategy."""

import csv
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_captioning.decoding import greedy_decode
from keras_captioning.models import AttentionCaptioner
from tests.helpers import tiny_captioner

VOCAB, REGIONS, DIM = 20, 4, 8
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_model(kind, **overrides):
    sizes = dict(vocab_size=VOCAB, feature_dim=DIM, embedding_dim=16, units=16)
    if kind != "merge":
        sizes.update(num_regions=REGIONS, attention_units=16)
    return tiny_captioner(kind, **dict(sizes, **overrides))


def make_data(kind, num_images=8, words=5, seed=0):
    """Random features and distinct captions [START w1..w5 END] (some rows padded)."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(num_images, REGIONS, DIM)).astype(np.float32)
    if kind == "merge":
        features = features.mean(axis=1)
    body = np.stack([rng.permutation(np.arange(4, VOCAB))[:words] for _ in range(num_images)]).astype(
        np.int32
    )
    captions = np.concatenate(
        [np.full((num_images, 1), 2), body, np.full((num_images, 1), 3), np.zeros((num_images, 2))], axis=1
    ).astype(np.int32)
    return features, captions, body


def as_dataset(features, captions, batch_size):
    return tf.data.Dataset.from_tensor_slices({"features": features, "captions": captions}).batch(batch_size)


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("kind", [pytest.param("merge", marks=pytest.mark.slow), "attention"])  # merge learns: make demo
def test_overfits_eight_images(kind):
    """Distinct captions for 8 random 'images' are memorised: loss < 0.1 and greedy reproduces them."""
    keras.utils.set_random_seed(0)
    features, captions, body = make_data(kind)
    model = make_model(kind)
    model.compile(optimizer=keras.optimizers.Adam(3e-2))
    data = tf.data.Dataset.from_tensors({"features": features, "captions": captions})
    model.fit(data.repeat(), steps_per_epoch=200, epochs=1, verbose=0)
    logs = model.evaluate(data, verbose=0, return_dict=True)
    assert logs["loss"] < 0.1
    assert logs["accuracy"] == 1.0
    assert logs["perplexity"] == pytest.approx(np.exp(logs["loss"]), rel=1e-4)
    result = greedy_decode(model, features, max_length=10)
    np.testing.assert_array_equal(result.tokens[:, :5], body)
    np.testing.assert_array_equal(result.lengths, 5)  # then END, which is not a word
    assert (result.tokens[:, 5:] == 0).all()


@pytest.mark.slow  # Keras's own callbacks on fit; the trainer's: tests/test_training_*.py
def test_fit_with_callbacks(tmp_path):
    keras.utils.set_random_seed(0)
    features, captions, _ = make_data("attention", num_images=12)
    model = make_model("attention", attention_reg=0.01, dropout=0.1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2, clipnorm=1.0))
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True),
        keras.callbacks.ModelCheckpoint(
            str(tmp_path / "best.keras"), monitor="val_loss", save_best_only=True
        ),
        keras.callbacks.CSVLogger(str(tmp_path / "log.csv")),
    ]
    history = model.fit(
        as_dataset(features[:8], captions[:8], 4),
        validation_data=as_dataset(features[8:], captions[8:], 4),
        epochs=3,
        callbacks=callbacks,
        verbose=0,
    )
    expected = {"loss", "accuracy", "perplexity", "val_loss", "val_accuracy", "val_perplexity"}
    assert expected <= set(history.history)
    assert all(np.isfinite(v) for values in history.history.values() for v in values)
    with open(tmp_path / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and "val_perplexity" in rows[0]
    restored = keras.saving.load_model(tmp_path / "best.keras")
    assert isinstance(restored, AttentionCaptioner)


@pytest.mark.parametrize("kind", ["merge", "attention"])
def test_mixed_float16_train_step(kind, mixed_precision):
    keras.utils.set_random_seed(0)
    features, captions, _ = make_data(kind, num_images=4)
    model = make_model(kind, **({} if kind == "merge" else {"attention_reg": 0.1}))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    logs = model.train_on_batch({"features": features, "captions": captions}, return_dict=True)
    assert np.isfinite(logs["loss"])
    inputs = {"features": features, "tokens": captions[:, :-1]}
    if kind == "attention":
        logits, attention = model(inputs, return_attention=True)
        assert attention.dtype.name == "float32"
        np.testing.assert_allclose(attention.numpy().sum(-1), 1.0, atol=1e-3)
    else:
        logits = model(inputs)
    assert logits.dtype.name == "float32"
    assert model.compute_dtype == "float16"
    result = greedy_decode(model, features, 6)
    assert np.isfinite(result.scores).all()


@pytest.mark.slow  # an XLA compile; the train step itself: the tests above
def test_jit_compiled_train_step():
    keras.utils.set_random_seed(0)
    features, captions, _ = make_data("attention", num_images=4)
    model = make_model("attention", attention_reg=0.1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=True)
    before = [v.numpy() for v in model.trainable_variables]
    logs = model.train_on_batch({"features": features, "captions": captions}, return_dict=True)
    assert np.isfinite(logs["loss"])
    # Every weight learns, so gradients reach all of them through the while loop.
    assert all((b != v.numpy()).any() for b, v in zip(before, model.trainable_variables))


def test_padding_columns_do_not_change_training_loss():
    keras.utils.set_random_seed(0)
    features, captions, _ = make_data("attention", num_images=4)
    model = make_model("attention")
    model.compile(optimizer="adam")
    short = model.evaluate(as_dataset(features, captions, 4), verbose=0, return_dict=True)
    padded = np.concatenate([captions, np.zeros((4, 6), np.int32)], axis=1)
    long = model.evaluate(as_dataset(features, padded, 4), verbose=0, return_dict=True)
    assert long["loss"] == pytest.approx(short["loss"], rel=1e-6)
    assert long["accuracy"] == pytest.approx(short["accuracy"])


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    import keras
    from tests.helpers import tiny_captioner

    rng = np.random.default_rng(0)
    grid = rng.normal(size=(8, 4, 8)).astype("float32")
    captions = np.zeros((8, 9), "int32")
    captions[:, 0] = 2
    for i in range(8):  # replica 0 gets long captions, replica 1 short ones
        n = 6 if i < 4 else 1
        captions[i, 1:n + 1] = rng.integers(4, 20, n)
        captions[i, n + 1] = 3

    def build(kind):
        keras.utils.set_random_seed(0)
        if kind == "merge":
            return tiny_captioner("merge", units=8)
        return tiny_captioner(num_regions=None, units=8, attention_reg=0.1)

    def train(model, features):
        model.compile(optimizer=keras.optimizers.SGD(0.5))
        data = tf.data.Dataset.from_tensors({"features": features, "captions": captions})
        history = model.fit(data.repeat(), steps_per_epoch=2, epochs=1, verbose=0)
        return history.history["loss"][-1], [v.numpy() for v in model.trainable_variables]

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    print("REPLICAS", strategy.num_replicas_in_sync)
    for kind, features in (("merge", grid.mean(1)), ("attention", grid)):
        with strategy.scope():
            loss, weights = train(build(kind), features)
        single_loss, single_weights = train(build(kind), features)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(weights, single_weights))
        print(kind, "LOSS", loss, single_loss, "MAXDIFF", diff)
    """
)


@pytest.mark.slow  # a fresh process with two logical CPUs; the token-weighted replica loss: test_padding_columns_do_not_change_training_loss
def test_mirrored_strategy_matches_single_device():
    """Two logical CPUs (set up in a fresh process, before TF initialises) train like one device."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "REPLICAS 2" in lines
    results = [line.split() for line in lines if " LOSS " in line]
    assert [r[0] for r in results] == ["merge", "attention"]
    for _, _, loss, single_loss, _, diff in results:
        assert np.isfinite(float(loss))
        # Gradients are all-reduced over replicas holding 4x6 and 4x1 real tokens:
        # the token-weighted loss must give the single-device update.
        assert float(diff) < 1e-4
        assert float(loss) == pytest.approx(float(single_loss), rel=1e-4)
