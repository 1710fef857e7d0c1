"""BLEU-1..4 (NLTK, all references): hand-checked values and multi-reference behaviour."""

import math

import pytest

from keras_captioning.errors import CaptioningError
from keras_captioning.metrics import Bleu, sentence_bleu


def corpus(gts, res, **kwargs):
    return Bleu(**kwargs).compute_score(gts, res)


def test_identical_hypothesis_scores_one():
    scores, per_image = corpus({1: ["a man riding a wave"]}, {1: ["A man riding a wave."]})
    assert scores == pytest.approx([1.0] * 4)
    assert [column[0] for column in per_image] == pytest.approx([1.0] * 4)


def test_hand_computed_precisions_and_brevity_penalty():
    # ref "a b c d e f" (6 words), hyp "a b c x" (4): p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0/1,
    # brevity penalty exp(1 - 6/4) = exp(-0.5).
    bp = math.exp(-0.5)
    scores, _ = corpus({1: ["a b c d e f"]}, {1: ["a b c x"]})
    assert scores[0] == pytest.approx(0.75 * bp)
    assert scores[1] == pytest.approx(math.sqrt(0.75 * 2 / 3) * bp)
    assert scores[2] == pytest.approx((0.75 * 2 / 3 * 0.5) ** (1 / 3) * bp)
    assert scores[3] == 0.0  # no 4-gram matches, no smoothing at corpus level
    # sentence level, smoothing method1: the zero 4-gram count becomes 0.1 / 1
    smoothed = sentence_bleu("a b c d e f", "a b c x")
    assert smoothed[3] == pytest.approx((0.75 * 2 / 3 * 0.5 * 0.1) ** 0.25 * bp)
    assert sentence_bleu("a b c d e f", "a b c x", smoothing=None)[3] == 0.0


def test_corpus_bleu_pools_counts_not_scores():
    # image 1: p1 = 2/2; image 2: p1 = 0/2 -> corpus p1 = 2/4 (not the mean of sentence scores)
    scores, per_image = corpus({1: ["a b"], 2: ["c d"]}, {1: ["a b"], 2: ["x y"]}, n=1)
    assert scores == pytest.approx([0.5])
    assert per_image[0] == pytest.approx([1.0, 0.0])


def test_closest_reference_length_chooses_the_brevity_penalty():
    # hyp of 4 words, references of 3 and 6 words: closest is 3 (|4-3| < |4-6|) -> no penalty
    scores, _ = corpus({1: ["a b c", "a b c d e f"]}, {1: ["a b c d"]}, n=1)
    assert scores == pytest.approx([1.0])
    # tie |4-2| == |4-6|: the shorter (2) is taken, as NLTK and pycocoevalcap both do
    scores, _ = corpus({1: ["a b", "a b c d e f"]}, {1: ["a b x y"]}, n=1)
    assert scores == pytest.approx([0.5])


def test_adding_a_matching_reference_cannot_lower_bleu():
    gts = {1: ["a dog runs on the beach"], 2: ["two cats sleep on a red sofa"]}
    res = {1: ["a brown dog runs along the beach"], 2: ["two cats are sleeping on a sofa"]}
    before, _ = corpus(gts, res)
    more = {i: refs + [res[i][0]] for i, refs in gts.items()}
    after, _ = corpus(more, res)
    assert all(a >= b for a, b in zip(after, before))
    assert after == pytest.approx([1.0] * 4)
    partial = {1: gts[1] + ["a brown dog runs on the sand"], 2: gts[2]}
    assert all(a >= b for a, b in zip(corpus(partial, res)[0], before))


def test_empty_and_one_word_hypotheses():
    gts = {1: ["a dog runs"]}
    scores, per_image = corpus(gts, {1: [""]})
    assert scores == [0.0] * 4 and [c[0] for c in per_image] == [0.0] * 4
    scores, per_image = corpus(gts, {1: ["dog"]})
    assert scores[0] == pytest.approx(math.exp(1 - 3 / 1))  # p1 = 1, brevity penalty e^-2
    assert scores[1:] == [0.0, 0.0, 0.0]
    assert all(math.isfinite(c[0]) for c in per_image)


def test_hypothesis_longer_than_every_reference_has_no_brevity_penalty():
    scores, _ = corpus({1: ["a dog", "a dog runs"]}, {1: ["a dog runs in the park all day"]}, n=1)
    assert scores == pytest.approx([3 / 8])


def test_different_numbers_of_references_and_shapes():
    gts = {"x": ["a cat"], "y": ["a dog runs", "the dog is running", "dog running", "a running dog"]}
    res = {"y": ["a dog is running"], "x": ["a cat sits"]}
    scores, per_image = corpus(gts, res)
    assert len(scores) == 4 and len(per_image) == 4
    assert all(len(column) == 2 for column in per_image)
    assert per_image[0][0] == pytest.approx(1.0)  # "y" first: res order; all 4 words matched


def test_bleu_names_and_arguments():
    assert Bleu().names == ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")
    assert Bleu(n=2).names == ("BLEU-1", "BLEU-2")
    assert Bleu().method() == "BLEU"
    with pytest.raises(CaptioningError, match="smoothing"):
        Bleu(smoothing="method42")
    with pytest.raises(CaptioningError, match="n: must be a positive integer"):
        Bleu(n=0)
