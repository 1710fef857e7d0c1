"""Both captioners: shapes, dtypes, step/sequence agreement, serialization, config."""

import keras
import numpy as np
import pytest

from keras_captioning.errors import CaptioningError
from keras_captioning.models import (
    AttentionCaptioner,
    BahdanauAttention,
    CaptionModel,
    CNNEncoder,
    MergeCaptioner,
    RNNDecoder,
)
from tests.helpers import (
    TINY,
    run_layer_test,
    run_model_saving_test,
    run_precision_test,
    tiny_captioner,
    tiny_inputs,
)

VOCAB, REGIONS, DIM, BATCH, STEPS = TINY["vocab_size"], TINY["num_regions"], TINY["feature_dim"], 3, 5


def make_attention(**overrides):
    return tiny_captioner("attention", **overrides)


def make_merge(**overrides):
    return tiny_captioner("merge", **dict({"dropout": 0.2}, **overrides))


make_inputs = tiny_inputs


MODELS = {
    "merge": make_merge,
    "attention-gru": make_attention,
    "attention-lstm-vector": lambda: make_attention(rnn="lstm", attention_vector=True, attention_reg=0.5),
    "attention-gru-init": lambda: make_attention(init_state="features", dropout=0.3),
    "attention-lstm-init": lambda: make_attention(rnn="lstm", init_state="features"),
    "transformer": lambda: tiny_captioner("transformer", dropout=0.2),
    "transformer-post-sinusoidal": lambda: tiny_captioner("transformer", norm="post", positions="sinusoidal"),
}


@pytest.fixture(params=sorted(MODELS))
def model_and_inputs(request):
    keras.utils.set_random_seed(0)
    model = MODELS[request.param]()
    return model, make_inputs("merge" if request.param == "merge" else "attention")


def test_logits_shape_and_dtype(model_and_inputs):
    model, inputs = model_and_inputs
    logits = model(inputs)
    assert tuple(logits.shape) == (BATCH, STEPS, VOCAB)
    assert logits.dtype.name == "float32"
    assert isinstance(model, CaptionModel)
    model.summary(print_fn=lambda *args, **kwargs: None)  # shape inference of every sublayer works
    assert (model.vocab_size, model.pad_id, model.start_id, model.end_id) == (VOCAB, 0, 2, 3)


def test_decode_steps_reproduce_teacher_forced_logits(model_and_inputs):
    """decode_step, fed the same tokens, gives the sequence model's logits step by step."""
    model, inputs = model_and_inputs
    logits = model(inputs).numpy()
    context, state = model.init_decode(inputs["features"])
    for t in range(STEPS):
        step_logits, state, attention = model.decode_step(inputs["tokens"][:, t], state, context)
        assert step_logits.dtype.name == "float32"
        np.testing.assert_allclose(step_logits.numpy()[1:], logits[1:, t], atol=1e-5)
        if t < 3:  # row 0 is padded from t = 3 on (the merge LSTM masks those steps)
            np.testing.assert_allclose(step_logits.numpy()[0], logits[0, t], atol=1e-5)
        assert (attention is None) == isinstance(model, MergeCaptioner)


#: Round trips left to the slow suite (each ~2-19 s): the Transformer's is
#: test_models_transformer.py::test_keras_round_trip (two layers, post-norm, sinusoidal, with beam
#: search and a training step); [attention-gru-init] saves an initial-state layer as
#: [attention-lstm-init] does, and the LSTM's layers are those of [attention-lstm-vector].
SLOW_ROUND_TRIP = {"transformer", "transformer-post-sinusoidal", "attention-lstm-init", "attention-lstm-vector"}


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW_ROUND_TRIP else k
                                  for k in sorted(MODELS)])
def test_keras_round_trip(kind, tmp_path):
    keras.utils.set_random_seed(0)
    model = MODELS[kind]()
    run_model_saving_test(model, make_inputs("merge" if kind == "merge" else "attention"), tmp_path / "model.keras")


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_mixed_float16_policy_survives_config_and_keras_file(kind, tmp_path):
    inputs = make_inputs("merge" if kind == "merge" else "attention")
    run_precision_test(MODELS[kind], inputs, tmp_path / "mixed.keras")


def test_attention_weights_sum_to_one():
    keras.utils.set_random_seed(0)
    model = make_attention()
    logits, attention = model(make_inputs("attention"), return_attention=True)
    assert tuple(attention.shape) == (BATCH, STEPS, REGIONS)
    assert attention.dtype.name == "float32" and logits.dtype.name == "float32"
    np.testing.assert_allclose(attention.numpy().sum(-1), 1.0, atol=1e-5)
    assert (attention.numpy() >= 0).all()


def test_keys_projected_once_per_call(monkeypatch):
    """W1 . features is computed once per image, not once per time step."""
    model = make_attention()
    calls = []
    original = model.attention.project_keys
    monkeypatch.setattr(model.attention, "project_keys", lambda f: calls.append(1) or original(f))
    model(make_inputs("attention"))  # eager: a per-step projection would be called STEPS times
    assert len(calls) == 1
    context, state = model.init_decode(make_inputs("attention")["features"])
    for _ in range(3):
        model.decode_step(np.full((BATCH,), 2, np.int32), state, context)
    assert len(calls) == 2


def test_attention_penalty_matches_numpy():
    keras.utils.set_random_seed(0)
    model = make_attention(attention_reg=0.7)
    inputs = make_inputs("attention")
    targets = inputs["tokens"].copy()
    targets[1, 4] = 0  # one more padded target
    _, attention = model(inputs, return_attention=True)
    _, penalty = model.compute_logits_and_penalty(inputs["features"], inputs["tokens"], targets)
    real = (targets != 0).astype(np.float32)[..., None]
    coverage = (attention.numpy() * real).sum(axis=1)  # (B, R)
    expected = 0.7 * ((1.0 - coverage) ** 2).sum(-1).mean()
    assert float(penalty) == pytest.approx(expected, rel=1e-5)
    _, no_penalty = make_attention().compute_logits_and_penalty(inputs["features"], inputs["tokens"], targets)
    assert float(no_penalty) == 0.0


def test_encoder_accepts_grid():
    encoder = CNNEncoder(8)
    grid = np.random.default_rng(0).normal(size=(2, 2, 2, DIM)).astype(np.float32)
    out = encoder(grid)
    assert tuple(out.shape) == (2, 4, 8)
    np.testing.assert_allclose(out.numpy(), encoder(grid.reshape(2, 4, DIM)).numpy(), atol=1e-6)
    assert (out.numpy() >= 0).all()  # ReLU


def test_layers():
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(2, REGIONS, DIM)).astype(np.float32)
    run_layer_test(CNNEncoder, {"embedding_dim": 8}, (grid,), [(2, REGIONS, 8)])
    keys = rng.normal(size=(2, REGIONS, 8)).astype(np.float32)
    hidden = rng.normal(size=(2, 16)).astype(np.float32)
    run_layer_test(BahdanauAttention, {"units": 8}, (keys, grid, hidden), [(2, DIM), (2, REGIONS)])
    tokens = np.array([2, 5], np.int32)
    context = rng.normal(size=(2, DIM)).astype(np.float32)
    for rnn, states in (("gru", 1), ("lstm", 2)):
        state = [np.zeros((2, 16), np.float32)] * states
        run_layer_test(
            RNNDecoder,
            {"vocab_size": VOCAB, "embedding_dim": 8, "units": 16, "rnn": rnn, "attention_vector": rnn == "lstm"},
            (tokens, context, state),
            [(2, VOCAB)] + [(2, 16)] * states,
        )


def test_bad_arguments_raise_captioning_error():
    with pytest.raises(CaptioningError, match="rnn"):
        make_attention(rnn="transformer")
    with pytest.raises(CaptioningError, match="pad_id"):
        make_merge(pad_id=1)
    with pytest.raises(CaptioningError, match="attention_reg"):
        make_attention(attention_reg=-1.0)
    model = make_merge()
    model.compile(optimizer="adam")
    with pytest.raises(CaptioningError, match="captions"):
        model.train_on_batch({"features": np.zeros((2, DIM), np.float32)})


@pytest.mark.parametrize("overrides", [{}, {"rnn": "lstm", "attention_vector": True}])
def test_unrolled_loop_matches_scan(overrides):
    """unroll=True (loop built at trace time) and the tf.scan loop give the same logits and attention."""
    keras.utils.set_random_seed(0)
    scan_model = make_attention(**overrides)
    config = scan_model.get_config()
    assert config["unroll"] is False
    unrolled = AttentionCaptioner.from_config(dict(config, unroll=True))
    unrolled.set_weights(scan_model.get_weights())
    inputs = make_inputs("attention")
    logits, attention = scan_model(inputs, return_attention=True)
    logits_u, attention_u = unrolled(inputs, return_attention=True)
    np.testing.assert_allclose(logits_u.numpy(), logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(attention_u.numpy(), attention.numpy(), atol=1e-6)


def test_loss_logits_at_real_positions_match_full_logits():
    """The training objective's logits at real targets only give the full-logit loss and accuracy."""
    from keras_captioning.losses import masked_accuracy_counts, masked_ce_sum

    keras.utils.set_random_seed(0)
    model = make_attention(attention_reg=0.5)
    inputs = make_inputs("attention")
    targets = np.roll(inputs["tokens"], -1, axis=1)
    targets[:, -1] = 0
    logits, penalty = model.compute_logits_and_penalty(inputs["features"], inputs["tokens"], targets)
    real_targets, real_logits, real_penalty = model.compute_loss_logits_and_penalty(
        inputs["features"], inputs["tokens"], targets
    )
    assert real_logits.shape == (int((targets != 0).sum()), VOCAB)
    for fn in (masked_ce_sum, masked_accuracy_counts):
        np.testing.assert_allclose(fn(real_targets, real_logits), fn(targets, logits), rtol=1e-6)
    np.testing.assert_allclose(real_penalty, penalty, rtol=1e-6)


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_initial_state_from_features(rnn):
    """init_state="features": h0 (and c0) = tanh(W mean_r encoded_r + b), different per image."""
    keras.utils.set_random_seed(0)
    model = make_attention(rnn=rnn, init_state="features")
    features = make_inputs("attention")["features"]
    (encoded, _), state = model.init_decode(features)
    assert len(state) == (2 if rnn == "lstm" else 1)
    kernel, bias = (w.numpy() for w in model.init_dense.weights)
    expected = np.tanh(encoded.numpy().mean(axis=1) @ kernel + bias)
    np.testing.assert_allclose(np.concatenate([s.numpy() for s in state], axis=-1), expected, atol=1e-6)
    assert not np.allclose(state[0].numpy()[0], state[0].numpy()[1])
    zeros = make_attention(rnn=rnn)
    assert zeros.init_dense is None and not np.any(zeros.init_decode(features)[1][0].numpy())
    with pytest.raises(CaptioningError, match="init_state"):
        make_attention(init_state="mean")
