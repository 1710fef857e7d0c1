"""CIDEr-D and ROUGE-L (pure Python, pycocoevalcap's definitions): hand-checked values."""

import math

import pytest

from keras_captioning.metrics import CiderD, RougeL, sentence_rouge_l
from keras_captioning.metrics.cider_d import ngram_counts
from keras_captioning.metrics.rouge_l import lcs_length


def test_cider_d_is_zero_for_a_single_image():
    corpus, per_image = CiderD().compute_score({1: ["a man riding a wave"]}, {1: ["a man riding a wave"]})
    assert corpus == 0.0 and per_image == [0.0]  # idf = log(1/1) = 0 for every n-gram


def test_cider_d_hand_computed_two_images():
    # every n-gram occurs in one image's references: weight log(2) each. Orders 1 and 2 give
    # cosine 1, orders 3 and 4 have no n-grams (similarity 0): 10 * mean(1, 1, 0, 0) = 5.
    gts = {1: ["a b"], 2: ["c d"]}
    res = {1: ["a b"], 2: ["c d"]}
    corpus, per_image = CiderD().compute_score(gts, res)
    assert per_image == pytest.approx([5.0, 5.0]) and corpus == pytest.approx(5.0)


def test_cider_d_length_penalty_and_clipping():
    gts = {1: ["a b"], 2: ["c d"]}
    # hypothesis "a b a b": tf 2 for a, b, "a b"; clipped by the reference's weight, cosine
    # min(2w, w) * w / (|h| * |r|). Length gap 3 - 1 bigrams = 2 -> penalty exp(-4 / 72).
    corpus, per_image = CiderD().compute_score(gts, {1: ["a b a b"], 2: ["c d"]})
    w = math.log(2)
    unigram = (w * w + w * w) / (math.sqrt(8 * w * w) * math.sqrt(2 * w * w))
    bigram = (w * w) / (math.sqrt(4 * w * w + w * w) * w)  # "a b" x2, "b a" x1 (df 0 -> log 2)
    expected = 10 * (unigram + bigram) / 4 * math.exp(-4 / 72)
    assert per_image[0] == pytest.approx(expected)


def test_cider_d_empty_hypothesis_and_multiple_references():
    gts = {1: ["a dog runs", "the dog is running"], 2: ["a cat sleeps"], 3: ["two birds fly"]}
    corpus, per_image = CiderD().compute_score(gts, {1: [""], 2: ["a cat sleeps"], 3: ["birds"]})
    assert per_image[0] == 0.0 and per_image[1] > 0 and all(math.isfinite(v) for v in per_image)


def test_ngram_counts():
    counts = ngram_counts(["a", "b", "a"], 2)
    assert counts[("a",)] == 2 and counts[("a", "b")] == 1 and counts[("b", "a")] == 1 and len(counts) == 4


def test_rouge_l_identical_and_hand_case():
    assert sentence_rouge_l("a man riding a wave", "A man riding a wave.") == 1.0
    # lcs("a b c d", "a c e") = 2: P = 2/3, R = 2/4; F = (1 + 1.44) P R / (R + 1.44 P)
    p, r = 2 / 3, 1 / 2
    assert sentence_rouge_l("a b c d", "a c e") == pytest.approx(2.44 * p * r / (r + 1.44 * p))
    assert lcs_length(list("abcbdab"), list("bdcaba")) == 4


def test_rouge_l_maximizes_precision_and_recall_separately():
    # ref 1: lcs 2 -> P 2/3, R 1; ref 2: lcs 3 -> P 1, R 1/2. pycocoevalcap takes P = max = 1 and
    # R = max = 1 (from different references), so F = 1 though no single reference gives it.
    assert sentence_rouge_l(["a b", "a b c d e f"], "a b c") == pytest.approx(1.0)


def test_rouge_l_corpus_is_the_mean_and_empty_is_zero():
    corpus, per_image = RougeL().compute_score({1: ["a b"], 2: ["c d"]}, {1: ["a b"], 2: [""]})
    assert per_image == [1.0, 0.0] and corpus == 0.5
