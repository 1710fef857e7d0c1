"""Greedy, sampling and beam search through the decode API (real tiny models and a scripted one)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_captioning.decoding import DecodeResult, _common, beam_search, greedy_decode, sample_decode
from keras_captioning.errors import CaptioningError
from keras_captioning.models import AttentionCaptioner
from tests.helpers import tiny_captioner

VOCAB, REGIONS, DIM, MAX_LEN = 20, 4, 8, 8
PAD, START, END = 0, 2, 3


class ScriptedModel:
    """Duck-typed model: emits words 4, 5, ... then END after ``3 + image index`` words.

    PAD and START get the *highest* logits, so a decoder that forgot to ban them
    would emit them. Attention = softmax of the image's features.
    """

    pad_id, start_id, end_id = PAD, START, END

    def init_decode(self, features):
        features = tf.convert_to_tensor(features)
        batch = tf.shape(features)[0]
        return features, [tf.zeros([batch], tf.int32), tf.range(batch, dtype=tf.int32)]

    def decode_step(self, tokens, state, context):
        step, image = state
        word = tf.where(step < 3 + image, 4 + step, END)
        logits = (
            tf.one_hot(word, VOCAB) * 5.0 + tf.one_hot(PAD, VOCAB) * 50.0 + tf.one_hot(START, VOCAB) * 50.0
        )
        return logits, [step + 1, image], tf.nn.softmax(context, axis=-1)


def score_caption(model, features, words, finished=True):
    """Total log-prob of ``words`` (+ END if finished) under the model, via decode_step (PAD/START banned)."""
    context, state = model.init_decode(features[None])
    previous, total = START, 0.0
    for token in [*words, END] if finished else words:
        logits, state, _ = model.decode_step(tf.constant([previous]), state, context)
        total += float(_common.log_probs(logits, model)[0, token])
        previous = token
    return total


def make(kind, seed=0):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    if kind == "merge":
        model = tiny_captioner("merge", vocab_size=VOCAB, feature_dim=DIM)
        return model, rng.normal(size=(4, DIM)).astype(np.float32) * 3
    model = tiny_captioner(vocab_size=VOCAB, feature_dim=DIM, num_regions=None)
    return model, rng.normal(size=(4, REGIONS, DIM)).astype(np.float32) * 3


@pytest.fixture(scope="module", params=["merge", "attention"])
def model_and_features(request):
    return make(request.param)


def test_greedy_result_layout(model_and_features):
    model, features = model_and_features
    result = greedy_decode(model, features, MAX_LEN)
    assert isinstance(result, DecodeResult)
    assert result.tokens.shape == (4, MAX_LEN) and result.tokens.dtype == np.int32
    assert result.scores.shape == (4,) and result.lengths.shape == (4,)
    for row, length in zip(result.tokens, result.lengths):
        assert (row[length:] == 0).all() and (row[:length] > END).all()
    if isinstance(model, AttentionCaptioner):
        assert result.attention.shape == (4, MAX_LEN, REGIONS)
    else:
        assert result.attention is None


@pytest.mark.parametrize("beam", [1, 3])
def test_decode_best_is_greedy_or_the_top_beam_and_decode_captions_reads_it(model_and_features, beam):
    from keras_captioning.data.vocab import Vocabulary
    from keras_captioning.decoding import decode_best, decode_captions

    model, features = model_and_features
    got = decode_best(model, features, MAX_LEN, beam)
    want = greedy_decode(model, features, MAX_LEN) if beam == 1 else beam_search(model, features, MAX_LEN, beam)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
    vocab = Vocabulary(["<pad>", "<unk>", "<start>", "<end>"] + [f"w{i}" for i in range(4, VOCAB)])
    expected = [" ".join(f"w{t}" for t in row if t) for row in want.tokens]
    assert decode_captions(got, vocab) == expected and any(expected)


def test_beam_width_one_equals_greedy(model_and_features):
    model, features = model_and_features
    greedy = greedy_decode(model, features, MAX_LEN)
    beam = beam_search(model, features, MAX_LEN, beam_width=1)
    np.testing.assert_array_equal(beam.tokens, greedy.tokens)
    np.testing.assert_array_equal(beam.lengths, greedy.lengths)
    np.testing.assert_allclose(beam.scores, greedy.scores, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind", ["merge", "attention"])
def test_beam_scores_at_least_greedy(kind, seed):
    model, features = make(kind, seed)
    greedy = greedy_decode(model, features, MAX_LEN)
    beam = beam_search(model, features, MAX_LEN, beam_width=4)
    for i in range(len(features)):
        assert beam.scores[i] >= greedy.scores[i] - 1e-5
        # Both reported scores agree with an independent step-by-step rescoring
        # (a caption of MAX_LEN words never produced END).
        for result in (greedy, beam):
            words = result.tokens[i, : result.lengths[i]].tolist()
            rescored = score_caption(model, features[i], words, finished=result.lengths[i] < MAX_LEN)
            assert rescored == pytest.approx(result.scores[i], abs=1e-4)


def test_batched_equals_one_at_a_time(model_and_features):
    model, features = model_and_features
    for decode in (
        lambda f: greedy_decode(model, f, MAX_LEN),
        lambda f: beam_search(model, f, MAX_LEN, beam_width=3, num_return=2, length_penalty=0.6),
    ):
        batched = decode(features)
        for i in range(len(features)):
            single = decode(features[i : i + 1])
            np.testing.assert_array_equal(single.tokens[0], batched.tokens[i])
            np.testing.assert_allclose(single.scores[0], batched.scores[i], atol=1e-5)
            if batched.attention is not None:
                np.testing.assert_allclose(single.attention[0], batched.attention[i], atol=1e-5)


def test_sampling_is_reproducible_and_cold_sampling_is_greedy(model_and_features):
    model, features = model_and_features
    first = sample_decode(model, features, MAX_LEN, seed=7)
    again = sample_decode(model, features, MAX_LEN, seed=7)
    np.testing.assert_array_equal(first.tokens, again.tokens)
    np.testing.assert_array_equal(first.scores, again.scores)
    others = [sample_decode(model, features, MAX_LEN, temperature=2.0, seed=s).tokens for s in range(3)]
    assert any((o != first.tokens).any() for o in others)  # the seed matters
    greedy = greedy_decode(model, features, MAX_LEN)
    for temperature in (1e-6, 0.0):
        cold = sample_decode(model, features, MAX_LEN, temperature=temperature, seed=3)
        np.testing.assert_array_equal(cold.tokens, greedy.tokens)


def test_repeated_calls_do_not_retrace(model_and_features):
    model, features = model_and_features
    greedy_decode(model, features, MAX_LEN)
    function = _common._CACHE[model][("greedy", features.shape[1:], MAX_LEN)]
    count = function.experimental_get_tracing_count()
    greedy_decode(model, features, MAX_LEN)
    greedy_decode(model, features[:2], MAX_LEN)  # another batch size
    assert function.experimental_get_tracing_count() == count == 1


def test_stops_at_end_and_never_emits_pad_or_start():
    model = ScriptedModel()
    features = np.random.default_rng(0).normal(size=(3, REGIONS)).astype(np.float32)
    expected = np.zeros((3, MAX_LEN), np.int32)
    for i in range(3):
        expected[i, : 3 + i] = 4 + np.arange(3 + i)
    for result in (
        greedy_decode(model, features, MAX_LEN),
        sample_decode(model, features, MAX_LEN, temperature=0.01, seed=0),
        beam_search(model, features, MAX_LEN, beam_width=3),
    ):
        np.testing.assert_array_equal(result.tokens, expected)
        np.testing.assert_array_equal(result.lengths, [3, 4, 5])
        # One attention map per generated word, each a distribution; none after the caption.
        np.testing.assert_allclose(result.attention.sum(-1), (expected > 0).astype(np.float32), atol=1e-6)
        softmax = np.exp(features) / np.exp(features).sum(-1, keepdims=True)
        np.testing.assert_allclose(result.attention[:, 0], softmax, atol=1e-6)


def test_max_length_cuts_unfinished_captions():
    result = greedy_decode(ScriptedModel(), np.zeros((3, REGIONS), np.float32), 4)
    np.testing.assert_array_equal(result.lengths, [3, 4, 4])  # images 1, 2 never reach END
    assert result.tokens.shape == (3, 4)


def test_attention_maps_for_real_model():
    model, features = make("attention")
    for result in (greedy_decode(model, features, MAX_LEN), beam_search(model, features, MAX_LEN, 3)):
        sums = result.attention.sum(-1)  # (B, L)
        for row, length in zip(sums, result.lengths):
            np.testing.assert_allclose(row[:length], 1.0, atol=1e-5)
            np.testing.assert_allclose(row[length:], 0.0)


def test_beam_returns_n_best_sorted():
    model, features = make("attention")
    result = beam_search(model, features, MAX_LEN, beam_width=4, num_return=3)
    assert result.tokens.shape == (4, 3, MAX_LEN) and result.scores.shape == (4, 3)
    assert result.attention.shape == (4, 3, MAX_LEN, REGIONS)
    assert (np.diff(result.scores, axis=1) <= 1e-6).all()  # alpha = 0: ranked by total log-prob
    assert not np.isin(result.tokens, [START, END]).any()
    best = result.best()
    assert best.tokens.shape == (4, MAX_LEN)
    assert result.token_lists() == [row[:n].tolist() for row, n in zip(best.tokens, best.lengths)]


def test_bad_arguments():
    model = ScriptedModel()
    features = np.zeros((2, REGIONS), np.float32)
    with pytest.raises(CaptioningError, match="num_return"):
        beam_search(model, features, MAX_LEN, beam_width=2, num_return=3)
    with pytest.raises(CaptioningError, match="temperature"):
        sample_decode(model, features, MAX_LEN, temperature=-1.0)
    with pytest.raises(CaptioningError, match="max_length"):
        greedy_decode(model, features, 0)
    with pytest.raises(CaptioningError, match="decode API"):
        greedy_decode(object(), features, MAX_LEN)
