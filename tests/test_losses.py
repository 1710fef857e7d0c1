"""Masked loss / accuracy against hand computations, and the perplexity metric."""

import numpy as np
import pytest

from keras_captioning.losses import CaptionLoss, Perplexity, masked_accuracy_counts, masked_ce_sum


def masked_sparse_ce(targets, logits, pad_id=0):
    """The training loss of one batch, as CaptionModel computes it from the sums."""
    ce_sum, num_tokens = masked_ce_sum(targets, logits, pad_id)
    return ce_sum / max(float(num_tokens), 1.0)


def masked_accuracy(targets, logits, pad_id=0):
    correct, num_tokens = masked_accuracy_counts(targets, logits, pad_id)
    return correct / max(float(num_tokens), 1.0)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    targets = np.array([[5, 6, 3, 0], [4, 3, 0, 0]], dtype=np.int32)  # 3 + 2 real tokens
    logits = rng.normal(size=(2, 4, 7)).astype(np.float32)
    return targets, logits


def test_masked_ce_matches_numpy(batch):
    targets, logits = batch
    logp = _log_softmax(logits.astype(np.float64))
    nll = -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    real = targets != 0
    expected = nll[real].sum() / real.sum()  # denominator: real tokens, not B * T = 8
    assert float(masked_sparse_ce(targets, logits)) == pytest.approx(expected, rel=1e-5)
    ce_sum, count = masked_ce_sum(targets, logits)
    assert float(ce_sum) == pytest.approx(nll[real].sum(), rel=1e-5)
    assert float(count) == 5.0


def test_extra_padding_does_not_change_loss(batch):
    targets, logits = batch
    rng = np.random.default_rng(1)
    padded_targets = np.concatenate([targets, np.zeros((2, 3), np.int32)], axis=1)
    padded_logits = np.concatenate([logits, rng.normal(size=(2, 3, 7)).astype(np.float32) * 10], axis=1)
    assert float(masked_sparse_ce(padded_targets, padded_logits)) == pytest.approx(
        float(masked_sparse_ce(targets, logits)), rel=1e-6
    )
    assert float(masked_accuracy(padded_targets, padded_logits)) == float(masked_accuracy(targets, logits))


def test_masked_accuracy_matches_numpy(batch):
    targets, logits = batch
    logits[0, 0, 5] = 100.0  # right
    logits[0, 1, 0] = 100.0  # wrong (predicts pad)
    logits[1, 1, 3] = 100.0  # right
    real = targets != 0
    expected = (logits.argmax(-1) == targets)[real].mean()
    assert float(masked_accuracy(targets, logits)) == pytest.approx(expected)


def test_float16_logits_give_float32_loss(batch):
    targets, logits = batch
    loss = masked_sparse_ce(targets, logits.astype(np.float16))
    assert str(loss.dtype) in ("float32", "<dtype: 'float32'>")
    assert float(loss) == pytest.approx(float(masked_sparse_ce(targets, logits)), rel=1e-2)


def test_no_real_token_gives_zero():
    targets = np.zeros((2, 3), np.int32)
    logits = np.ones((2, 3, 5), np.float32)
    assert float(masked_sparse_ce(targets, logits)) == 0.0
    assert float(masked_accuracy(targets, logits)) == 0.0


def test_perplexity_is_token_weighted():
    metric = Perplexity()
    metric.update_state(2.0, 1.0)  # one token with CE 2
    metric.update_state(3.0, 3.0)  # three tokens with CE 1
    assert float(metric.result()) == pytest.approx(np.exp(5.0 / 4.0), rel=1e-6)
    metric.reset_state()
    assert float(metric.result()) == pytest.approx(1.0)


def test_caption_loss_is_token_weighted_ce_plus_image_weighted_penalty():
    metric = CaptionLoss()
    metric.update_state(2.0, 1.0, 0.5, 2)  # one token with CE 2, penalty 0.5 over 2 images
    metric.update_state(3.0, 3.0, 0.0, 2)
    assert float(metric.result()) == pytest.approx(5.0 / 4.0 + 1.0 / 4.0, rel=1e-6)
    assert CaptionLoss.from_config(metric.get_config()).name == "loss"
