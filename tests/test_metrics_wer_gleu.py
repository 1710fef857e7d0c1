"""WER (jiwer, documented multi-reference rule), the study's WER matrix, and GLEU (NLTK)."""

import random

import jiwer
import numpy as np
import pytest

from keras_captioning.metrics import Gleu, Wer, sentence_gleu, sentence_wer, wer_matrix


def test_wer_one_substitution_in_three_words():
    assert sentence_wer("a b c", "a x c") == pytest.approx(1 / 3)
    corpus, per_image = Wer().compute_score({1: ["a b c"]}, {1: ["a x c"]})
    assert corpus == pytest.approx(1 / 3) and per_image == pytest.approx([1 / 3])


def test_wer_matrix_known_table():
    table = wer_matrix("a b c", "a x c")
    expected = np.array([[0, 1, 2, 3], [1, 0, 1, 2], [2, 1, 1, 2], [3, 2, 2, 1]])
    assert table.shape == (4, 4) and np.issubdtype(table.dtype, np.integer)
    np.testing.assert_array_equal(table, expected)
    assert wer_matrix(["a", "b"], []).tolist() == [[0], [1], [2]]


def test_wer_matrix_corner_equals_jiwer_distance():
    rng = random.Random(0)
    for _ in range(20):
        ref = [rng.choice("abcd") for _ in range(rng.randint(1, 8))]
        hyp = [rng.choice("abcde") for _ in range(rng.randint(0, 8))]
        out = jiwer.process_words(" ".join(ref), " ".join(hyp))
        assert wer_matrix(ref, hyp)[-1, -1] == out.substitutions + out.deletions + out.insertions


def test_wer_takes_the_best_reference_and_pools_the_corpus():
    gts = {1: ["a b c d", "a x c"], 2: ["p q r s t u v w x y"]}
    res = {1: ["a x c"], 2: ["p q r s t"]}
    corpus, per_image = Wer().compute_score(gts, res)
    assert per_image == pytest.approx([0.0, 0.5])  # image 1: the 2nd reference matches exactly
    # corpus: (0 + 5) edits / (3 + 10) words of the chosen references
    assert corpus == pytest.approx(5 / 13)
    # adding a matching reference can only lower (or keep) an image's WER
    assert sentence_wer(["p q r s t u v w x y", "p q r s t"], "p q r s t") == 0.0


def test_wer_edge_cases():
    assert sentence_wer("a dog runs", "") == 1.0  # three deletions / three words
    assert sentence_wer("a dog", "a dog runs fast now") == pytest.approx(1.5)  # can exceed 1
    assert sentence_wer(["!!!", "a dog"], "a dog") == 0.0  # empty (punctuation-only) refs skipped
    corpus, per_image = Wer().compute_score({1: ["..."], 2: ["?"]}, {1: [""], 2: ["a cat"]})
    assert per_image == [0.0, 1.0] and corpus == 1.0  # all references empty: documented convention
    assert Wer(tokenizer=lambda s: s.split("|")).compute_score({1: ["a b|c"]}, {1: ["a b|d"]})[0] == 0.5


def test_gleu_hand_cases():
    # 1..2-grams: hyp {a, b, c, ab, bc}, ref {a, b, d, ab, bd}: 3 shared of max(5, 5)
    assert sentence_gleu("a b d", "a b c", max_len=2) == pytest.approx(3 / 5)
    # 1..4-grams: 6 n-grams each side, 3 shared
    assert sentence_gleu("a b d", "a b c", max_len=4) == pytest.approx(3 / 6)
    assert sentence_gleu("a b c", "a b c") == 1.0
    assert sentence_gleu(["x y z", "a b d"], "a b c", max_len=2) == pytest.approx(3 / 5)  # best ref


def test_corpus_gleu_sums_matches_and_totals():
    gts = {1: ["a b d"], 2: ["p q"]}
    res = {1: ["a b c"], 2: ["p q"]}
    corpus, per_image = Gleu(1, 2).compute_score(gts, res)
    assert per_image == pytest.approx([3 / 5, 1.0])
    assert corpus == pytest.approx((3 + 3) / (5 + 3))
    assert Gleu(1, 2).names == ("GLEU-1-2",) and Gleu().names == ("GLEU-1-4",)
    assert Gleu().compute_score({1: ["a dog"]}, {1: [""]}) == (0.0, [0.0])
