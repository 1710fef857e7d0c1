"""The fused GRU loop (hand-written backward, only the captions still going per step) against
TF's automatic differentiation of the same model: same outputs, loss and gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import tiny_captioner

SIZES = dict(vocab_size=30, feature_dim=12, num_regions=5, embedding_dim=8, units=16, attention_units=10)


def _pair(**options):
    """The same weights twice: fused loop, and automatic differentiation of tf.scan."""
    keras.utils.set_random_seed(1)
    fused = tiny_captioner(fused_backward=True, **SIZES, **options)
    autodiff = tiny_captioner(fused_backward=False, **SIZES, **options)
    autodiff.set_weights(fused.get_weights())
    return fused, autodiff


def _batch(rows=7, width=10, seed=0):
    """Captions of mixed lengths: one fills the width, one is only <start> (no real target)."""
    rng = np.random.default_rng(seed)
    captions = np.zeros((rows, width), np.int32)
    captions[:, 0] = 2
    for row, words in enumerate([width - 2, 3, 0, 5, 1, width - 3, 2][:rows]):
        captions[row, 1:words + 1] = rng.integers(4, 30, size=words)
        if row != 2:
            captions[row, words + 1] = 3
    features = rng.standard_normal((rows, 5, 12)).astype("float32")
    return tf.constant(features), tf.constant(captions[:, :-1]), tf.constant(captions[:, 1:])


def _loss_and_grads(model, features, tokens, targets, dynamic=False):
    def run(features, tokens, targets):
        with tf.GradientTape() as tape:
            _, _, ce_sum, num_tokens, penalty = model._objective(features, tokens, targets, True)
            loss = ce_sum / tf.cast(num_tokens, ce_sum.dtype) + penalty
        return loss, tape.gradient(loss, model.trainable_variables)

    if dynamic:  # unknown batch and time sizes, as in fit() on a tf.data pipeline with buckets
        spec = [tf.TensorSpec((None, None, None)), tf.TensorSpec((None, None), tf.int32),
                tf.TensorSpec((None, None), tf.int32)]
        run = tf.function(run, input_signature=spec)
    loss, grads = run(features, tokens, targets)
    return float(loss), [tf.convert_to_tensor(g).numpy() for g in grads]


_OPTIONS = {
    "study": dict(),
    "features-init+penalty": dict(init_state="features", attention_reg=0.5),
    "attention-vector": dict(init_state="features", attention_vector=True, dropout=0.0),
}


#: Every option eagerly; in a graph with unknown shapes (a trace each, ~2 s), one option by default.
@pytest.mark.parametrize("options, dynamic", [
    pytest.param(options, dynamic, id=f"{'graph-unknown-shapes' if dynamic else 'eager'}-{name}",
                 marks=[pytest.mark.slow] if dynamic and name != "features-init+penalty" else [])
    for dynamic in (False, True) for name, options in _OPTIONS.items()])
def test_same_loss_and_gradients_as_automatic_differentiation(options, dynamic):
    fused, autodiff = _pair(**options)
    batch = _batch()
    loss, grads = _loss_and_grads(fused, *batch, dynamic=dynamic)
    expected_loss, expected = _loss_and_grads(autodiff, *batch, dynamic=dynamic)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    for variable, got, want in zip(fused.trainable_variables, grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=variable.path)
    # Every weight gets a gradient except the attention score's bias (the softmax ignores it).
    learning = [v.path for v, g in zip(fused.trainable_variables, grads) if np.abs(g).sum() > 0]
    assert set(v.path for v in fused.trainable_variables) - set(learning) == {"attention/V/bias"}


@pytest.mark.parametrize("init_state", ["zeros", "features"])
def test_each_step_is_a_keras_gru_cell_with_the_same_weights(init_state):
    """The fused loop's step against ``keras.layers.GRUCell``: attention on h_{t-1} (the model's
    own BahdanauAttention layer), then a fresh Keras GRUCell given the decoder cell's weights
    on ``[c_t; E w_{t-1}]``; every step's hidden state and context agree."""
    fused, _ = _pair(init_state=init_state)
    features, tokens, _ = _batch()
    hiddens, contexts, weights = fused._run_decoder(features, tokens, False)

    cell = keras.layers.GRUCell(SIZES["units"], reset_after=True)
    cell.build((None, 2 * SIZES["embedding_dim"]))
    cell.set_weights([w.numpy() for w in fused.decoder.cell.weights])
    (encoded, keys), state = fused.init_decode(features)
    embedded = fused.decoder.embedding(tokens)
    h = state[0]
    for t in range(tokens.shape[1]):
        context, alpha = fused.attention(keys, encoded, h)
        h, _ = cell(tf.concat([context, embedded[:, t]], axis=-1), [h])
        np.testing.assert_allclose(hiddens[:, t].numpy(), h.numpy(), rtol=1e-5, atol=1e-6, err_msg=f"h_{t + 1}")
        np.testing.assert_allclose(contexts[:, t].numpy(), context.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weights[:, t].numpy(), alpha.numpy(), rtol=1e-5, atol=1e-6)


def test_same_outputs_as_the_autodiff_loop():
    fused, autodiff = _pair(init_state="features")
    features, tokens, _ = _batch()
    for got, want in zip(fused._run_decoder(features, tokens, False), autodiff._run_decoder(features, tokens, False)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_with_lengths_ended_rows_give_zeros_and_the_rest_is_unchanged():
    fused, autodiff = _pair()
    features, tokens, targets = _batch()
    lengths = np.array([9, 4, 0, 6, 2, 8, 3])  # <end> included; row 2 has no real target
    np.testing.assert_array_equal((targets.numpy() != 0).sum(axis=1), lengths)
    packed = fused._run_decoder(features, tokens, False, lengths=tf.constant(lengths))
    full = autodiff._run_decoder(features, tokens, False)
    running = np.arange(tokens.shape[1])[None, :] < lengths[:, None]  # (B, T)
    for got, want in zip(packed, full):
        np.testing.assert_allclose(got.numpy()[running], want.numpy()[running], rtol=1e-5, atol=1e-6)
        assert not got.numpy()[~running].any()


def test_mixed_float16_gradients_match_float32():
    fused, _ = _pair(init_state="features", attention_reg=0.5)
    batch = _batch()
    _, expected = _loss_and_grads(fused, *batch)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(1)
        half = tiny_captioner(fused_backward=True, init_state="features", attention_reg=0.5, **SIZES)
    finally:
        keras.config.set_dtype_policy(previous)
    half.set_weights(fused.get_weights())
    _, grads = _loss_and_grads(half, *batch)
    for variable, got, want in zip(fused.trainable_variables, grads, expected):
        assert np.isfinite(got).all(), variable.path
        np.testing.assert_allclose(got, want, atol=2e-3 * (np.abs(want).max() + 1e-3), err_msg=variable.path)


def test_the_switch_survives_a_keras_round_trip(tmp_path):
    model = tiny_captioner(fused_backward=False, **SIZES)
    path = tmp_path / "model.keras"
    model.save(path)
    assert keras.saving.load_model(path).fused_backward is False
    config = tiny_captioner(**SIZES).get_config()
    assert config["fused_backward"] is True
    config.pop("fused_backward")  # a model saved before the switch existed
    assert type(model).from_config(config).fused_backward is True
