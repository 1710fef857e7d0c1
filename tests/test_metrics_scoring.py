"""score_all / per_image_all, input validation, odd captions, and the no-TensorFlow rule."""

import math
import subprocess
import sys

import pytest

from keras_captioning.errors import CaptioningError
from keras_captioning.metrics import (
    ALL_METRICS,
    DEFAULT_METRICS,
    Bleu,
    CiderD,
    MetricInputError,
    WordNetNotFoundError,
    compute_all,
    load_wordnet,
    per_image_all,
    score_all,
)

GTS = {
    "img1": ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave."],
    "img2": ["Two dogs play in the snow.", "A pair of dogs playing in snow", "dogs in the snow"],
    "img3": ["A red bus parked on the street."],
}
RES = {"img1": ["a man riding a wave"], "img2": ["two dogs playing in the snow"], "img3": ["a bus on a street"]}


@pytest.fixture
def nltk_cache(tmp_path_factory, monkeypatch):
    # the session-wide folder the METEOR tests use too: WordNet is loaded once per session
    monkeypatch.setenv("KERAS_CAPTIONING_NLTK_DATA", str(tmp_path_factory.getbasetemp() / "kc_nltk_data"))
    try:
        load_wordnet()
    except WordNetNotFoundError as error:  # METEOR is in the default columns; evaluation copes
        pytest.skip(f"no WordNet here: {error}")  # (tests/test_robustness_round2.py), these need it


def test_score_all_default_columns(nltk_cache):
    scores = score_all(GTS, RES)
    assert tuple(scores) == DEFAULT_METRICS
    assert "METEOR-1.5" not in scores and "METEOR-1.5" in ALL_METRICS
    assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values())
    assert scores["BLEU-1"] >= scores["BLEU-4"] > 0
    assert 0 < scores["METEOR"] <= 1 and scores["CIDEr-D"] > 0


def test_per_image_all_and_compute_all_agree(nltk_cache):
    names = ["BLEU-4", "ROUGE-L", "WER", "GLEU-1-2", "METEOR", "CIDEr-D"]
    corpus, rows = compute_all(GTS, RES, metrics=names)
    assert list(corpus) == names
    assert list(rows) == ["img1", "img2", "img3"]
    assert all(list(row) == names for row in rows.values())
    assert per_image_all(GTS, RES, metrics=names) == rows
    assert score_all(GTS, RES, metrics=names) == corpus
    assert corpus["ROUGE-L"] == pytest.approx(sum(r["ROUGE-L"] for r in rows.values()) / 3)


def test_score_all_does_no_per_image_work(monkeypatch):
    corpus = compute_all(GTS, RES, metrics=["bleu", "CIDEr-D"])[0]

    def no_per_image(self, references, hypotheses):
        raise AssertionError("score_all computed per-image BLEU")

    monkeypatch.setattr(Bleu, "score_tokenized", no_per_image)
    assert score_all(GTS, RES, metrics=["bleu", "CIDEr-D"]) == corpus


def test_each_distinct_caption_is_tokenized_once():
    calls = []

    def tokenizer(text):
        calls.append(text)
        return text.lower().split()

    gts = {i: ["a dog runs", "A cat sits"] for i in range(4)}
    res = {i: ["a dog runs"] for i in range(4)}
    corpus, rows = compute_all(gts, res, metrics=["BLEU-1", "CIDEr-D"], tokenizer=tokenizer)
    assert sorted(calls) == ["A cat sits", "a dog runs"]
    assert corpus["BLEU-1"] == 1.0 and rows[0]["BLEU-1"] == 1.0


def test_metric_instances_and_single_names():
    scores = score_all(GTS, RES, metrics=[Bleu(n=2, smoothing=None), "CIDEr-D"])
    assert list(scores) == ["BLEU-1", "BLEU-2", "CIDEr-D"]
    assert list(score_all(GTS, RES, metrics="WER")) == ["WER"]


def test_names_are_case_insensitive_and_families_expand():
    scores = score_all(GTS, RES, metrics=["bleu", "rouge_l", "cider", "gleu", "wer"])
    assert list(scores) == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D", "GLEU-1-4", "GLEU-1-2", "WER"]
    assert list(score_all(GTS, RES, metrics=["cider-d", "Bleu-2"])) == ["CIDEr-D", "BLEU-2"]


def test_extra_reference_ids_are_ignored():
    more = dict(GTS, unused=["something else entirely"])
    assert score_all(more, RES, metrics=["BLEU-4", "CIDEr-D"]) == score_all(GTS, RES, metrics=["BLEU-4", "CIDEr-D"])


@pytest.mark.parametrize(
    "gts, res, message",
    [
        ({}, {1: ["a"]}, "gts: is empty"),
        ({1: ["a"]}, {}, "res: is empty"),
        ({1: ["a"]}, {1: ["a"], 2: ["b"], 3: ["c"]}, r"res: 2 image id\(s\) have no references in gts: 2, 3"),
        ({"1": ["a"]}, {1: ["a"]}, "123 and '123' differ"),
        ({1: ["a"]}, {1: ["a", "b"]}, r"res\[1\]: expected exactly one caption, got 2"),
        ({1: []}, {1: ["a"]}, r"gts\[1\]: has no reference caption"),
        ({1: [["a", "b"]]}, {1: ["a"]}, r"gts\[1\]: captions must be strings"),
        ({1: ["a"]}, {1: 5}, r"res\[1\]: expected a list of caption strings"),
        ([("a",)], {1: ["a"]}, "gts: expected a dict"),
    ],
)
def test_bad_inputs_raise_clear_errors(gts, res, message):
    with pytest.raises(MetricInputError, match=message) as info:
        CiderD().compute_score(gts, res)
    assert isinstance(info.value, ValueError) and isinstance(info.value, CaptioningError)


def test_many_missing_ids_are_abbreviated():
    with pytest.raises(ValueError, match=r"and 5 more"):
        score_all({0: ["a"]}, {i: ["a"] for i in range(16)}, metrics=["WER"])


def test_bad_metric_names_and_tokenizers():
    with pytest.raises(MetricInputError, match="metrics: unknown name 'BLUE'"):
        score_all(GTS, RES, metrics=["BLUE"])
    with pytest.raises(MetricInputError, match="metrics: is empty"):
        score_all(GTS, RES, metrics=[])
    with pytest.raises(MetricInputError, match="tokenizer"):
        score_all(GTS, RES, metrics=["WER"], tokenizer="moses")


def test_bare_strings_are_single_captions():
    assert score_all({1: "a dog runs"}, {1: "a dog runs"}, metrics=["BLEU-1"]) == {"BLEU-1": 1.0}


def test_odd_captions_give_finite_scores(nltk_cache):
    gts = {
        "empty": ["a cat on a mat"],
        "one": ["a dog runs in the park", "dog"],
        "long": ["a bird"],
        "emoji": ["\U0001F355 \U0001F355", "caf\u00e9 na\u00efve \u2014 \u00fcber"],
        "punct": ["!!!", "...", "a tree"],
        "special": ["a man <end>"],
        "cjk": ["\u4e00\u53ea\u72d7"],
    }
    res = {
        "empty": [""],
        "one": ["dog"],
        "long": [" ".join(["a very small bird flying"] * 20)],
        "emoji": ["\U0001F355\u2764\ufe0f caf\u00e9"],
        "punct": ["?!"],
        "special": ["<start> a man <end> <pad>"],
        "cjk": ["\u4e00\u53ea\u732b"],
    }
    corpus, rows = compute_all(gts, res)
    assert all(math.isfinite(v) for v in corpus.values())
    assert all(math.isfinite(v) for row in rows.values() for v in row.values())
    assert rows["empty"]["BLEU-1"] == 0.0 and rows["empty"]["WER"] == 1.0
    assert rows["one"]["BLEU-1"] == 1.0  # "dog" is a whole reference: no brevity penalty


def test_metrics_package_never_imports_tensorflow():
    code = (
        "import sys\n"
        "import keras_captioning.metrics, keras_captioning.metrics.study_compat\n"
        "import keras_captioning.metrics.official_meteor, keras_captioning.metrics.wordnet\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
