"""The study's own (wrong) metric calls reproduce the numbers it printed."""

import pytest

from keras_captioning.metrics.study_compat import (
    STUDY_BLEU_WEIGHTS,
    explain_study_bleu,
    old_nltk_sentence_bleu,
    study_bleu,
    study_gleu,
    study_meteor,
    study_wer,
    truncate_like_study,
)
from keras_captioning.metrics.wordnet import load_wordnet

REFERENCE = "a man riding a wave on top of a surfboard"  # longest word: 9 letters


def hypothesis(length: int) -> list:
    """``length`` tokens incl. ``<end>``, exactly one one-letter word ("a")."""
    words = ["surfer", "rides", "big", "waves", "near", "the", "shore", "while", "people", "watch", "from",
             "sand", "today", "again", "there"]
    return ["a"] + words[: length - 2] + ["<end>"]


@pytest.mark.parametrize(
    "length, printed",
    [
        (9, [11.1, 33.3, 48.4, 57.7]),  # "Good" (ResNet) / 5000-6000-10 row
        (10, [10.0, 31.6, 46.7, 56.2]),  # "Fair"
        (14, [7.1, 26.7, 41.8, 51.6]),  # "Bad"
        (6, [16.6, 40.8, 55.3, 63.8]),  # attention + ResNet surfing image / 7000-6000-30 row
        (13, [7.6, 27.7, 42.8, 52.6]),  # vanilla + ResNet surfing image
        (16, [6.2, 25.0, 40.0, 50.0]),  # 7000-10000-50 row
    ],
)
def test_study_bleu_reproduces_the_printed_numbers(length, printed):
    hyp = hypothesis(length)
    assert len(hyp) == length and sum(len(w) == 1 for w in hyp) == 1
    values = study_bleu(REFERENCE, hyp)
    assert [truncate_like_study(v) for v in values] == printed
    assert values[3] > values[2] > values[1] > values[0]  # BLEU rises with n: the bug's signature
    assert values[3] == pytest.approx((1 / length) ** 0.25)


def test_old_rule_drops_orders_from_the_first_zero_on():
    # p1 = 3/4, p2 = 1/3, p3 = 0 -> old NLTK: exp(0.25 ln 3/4 + 0.25 ln 1/3) = 0.25 ** 0.25
    refs = [["the", "cat", "likes", "milk"]]
    value = old_nltk_sentence_bleu(refs, ["the", "cat", "enjoys", "milk"], STUDY_BLEU_WEIGHTS[3])
    assert value == pytest.approx(0.25**0.25)
    assert old_nltk_sentence_bleu(refs, ["dogs", "bark"], STUDY_BLEU_WEIGHTS[3]) == 0.0


def test_explain_study_bleu_side_by_side():
    info = explain_study_bleu(REFERENCE, hypothesis(9))
    assert info["hypothesis_length"] == 9 and info["matches"] == 1
    assert info["p1"] == pytest.approx(1 / 9)
    assert info["closest_reference_length"] == 9 and info["brevity_penalty"] == 1.0
    assert info["study_bleu_x100"] == [11.1, 33.3, 48.4, 57.7]
    assert info["current_nltk_same_call"][0] == pytest.approx(1 / 9)
    assert all(v < 1e-50 for v in info["current_nltk_same_call"][1:])  # today's NLTK: ~0
    # a correct BLEU-4 of this caption is tiny (only "a" matches), not 57.7
    assert info["correct_bleu"][3] < 0.1 and info["correct_bleu_unsmoothed"][3] == 0.0


def test_study_gleu_wer_and_meteor(tmp_path_factory):
    # GLEU 1-4: hypothesis has 6+5+4+3 = 18 n-grams, the reference 5+4+3+2 = 14, all shared
    gleu_14, gleu_12 = study_gleu("a man riding a wave", "a man riding a wave <end>")
    assert gleu_14 == pytest.approx(14 / 18) and gleu_12 == pytest.approx(9 / 11)
    assert study_wer("a man riding a wave", "a man riding big wave <end>") == 2
    try:
        wordnet = load_wordnet(cache_dir=str(tmp_path_factory.getbasetemp() / "kc_nltk_data"))
    except Exception as error:  # WordNetNotFoundError
        pytest.skip(str(error))
    assert study_meteor("A man riding a wave", "a man riding a wave", wordnet=wordnet) == pytest.approx(0.996)
