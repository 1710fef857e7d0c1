"""Diversity columns on hand-computed cases, and their place in reports and ``compare``."""

import json
import math

import pytest

from keras_captioning.evaluate import compare_runs, format_table
from keras_captioning.metrics import DIVERSITY_COLUMNS, diversity_scores
from keras_captioning.metrics.diversity import distinct_ngram_ratio

RES = {1: ["A dog runs."], 2: ["a dog runs"], 3: ["A cat sits on a mat."]}
GTS = {1: ["A dog is running.", "Dog."], 2: ["Two dogs."], 3: ["A cat on a mat."]}
TRAIN = ["A dog runs!", "A bird flies."]


def test_hand_computed_case():
    # tokens: [a dog runs] [a dog runs] [a cat sits on a mat]
    scores = diversity_scores(RES, GTS, TRAIN)
    assert list(scores) == list(DIVERSITY_COLUMNS)
    assert scores["distinct"] == 2  # the first two are one caption once tokenized
    assert scores["vocab used"] == 7  # a dog runs cat sits on mat
    assert scores["Div-1"] == pytest.approx(7 / 12)  # 12 words, 7 different
    # bigrams: a-dog dog-runs (x2), a-cat cat-sits sits-on on-a a-mat: 9, 7 different
    assert scores["Div-2"] == pytest.approx(7 / 9)
    assert scores["novel"] == pytest.approx(1 / 3)  # "a dog runs" is a training caption
    assert scores["length"] == pytest.approx(4.0)  # (3 + 3 + 6) / 3
    assert scores["ref length"] == pytest.approx(3.0)  # (4 + 1 + 2 + 5) / 4


def test_identical_captions_for_every_image():
    res = {i: ["a man is standing"] for i in range(5)}
    scores = diversity_scores(res, train_captions=["A man is standing."])
    assert scores["distinct"] == 1 and scores["vocab used"] == 4
    assert scores["Div-1"] == pytest.approx(4 / 20) and scores["Div-2"] == pytest.approx(3 / 15)
    assert scores["novel"] == 0.0


def test_without_training_captions_or_references_those_columns_are_nan():
    scores = diversity_scores(RES)
    assert math.isnan(scores["novel"]) and math.isnan(scores["ref length"])
    assert scores["distinct"] == 2


def test_every_caption_of_a_list_counts_and_whitespace_tokenizer_keeps_case():
    scores = diversity_scores({1: ["A dog", "a dog"]}, tokenizer="whitespace")
    assert scores["distinct"] == 2 and scores["vocab used"] == 3 and scores["length"] == 2.0


def test_edge_cases_empty_and_one_word_captions():
    assert distinct_ngram_ratio([("dog",), ()], 2) == 0.0  # no bigram at all
    assert distinct_ngram_ratio([], 1) == 0.0
    scores = diversity_scores({1: [""], 2: ["dog"]}, train_captions=[])
    assert scores["distinct"] == 2 and scores["Div-1"] == 1.0 and scores["Div-2"] == 0.0
    assert scores["novel"] == 1.0 and scores["length"] == 0.5
    empty = diversity_scores({})
    assert empty["distinct"] == 0 and math.isnan(empty["length"]) and math.isnan(empty["novel"])


def test_report_table_shows_counts_percentages_and_word_lengths():
    row = {**diversity_scores(RES, GTS, TRAIN), "CIDEr-D": 0.5}
    table = format_table([row], ["CIDEr-D", *DIVERSITY_COLUMNS])
    assert table.splitlines()[0] == "| CIDEr-D | distinct | vocab used | novel | Div-1 | Div-2 | length | ref length |"
    assert table.splitlines()[2] == "| 50.0 | 2 | 7 | 33.3 | 58.3 | 77.8 | 4.0 | 3.0 |"


def test_compare_gathers_the_diversity_columns(tmp_path):
    for name, distinct in (("vanilla", 549), ("attention", 814)):
        folder = tmp_path / name / "eval-test"
        folder.mkdir(parents=True)
        scores = {"CIDEr-D": 0.4, "distinct": distinct, "vocab used": 300, "novel": float("nan"), "Div-1": 0.1,
                  "Div-2": 0.2, "length": 9.25, "ref length": 11.0}
        (folder / "scores.json").write_text(json.dumps({"meta": {"run": name, "split": "test"}, "scores": scores}))
    table, md_path, csv_path = compare_runs([str(tmp_path)], out_dir=str(tmp_path / "compare"))
    header, _, *rows = table.splitlines()
    assert header.endswith("| CIDEr-D | distinct | vocab used | novel | Div-1 | Div-2 | length | ref length |")
    assert sorted(row.split(" | ")[0] for row in rows) == ["| attention", "| vanilla"]
    assert any(row.endswith("| 40.0 | 814 | 300 | n/a | 10.0 | 20.0 | 9.2 | 11.0 |") for row in rows)
    assert "distinct" in open(csv_path).readline()
