"""The official METEOR 1.5 jar ("METEOR-1.5"): same numbers as pycocoevalcap, never a hang."""

import logging
import math
import shutil

import pytest

from keras_captioning.metrics import OfficialMeteor, score_all, tokenize_ptb
from keras_captioning.metrics.official_meteor import find_meteor_jar, sanitize_for_meteor

needs_java = pytest.mark.skipif(
    shutil.which("java") is None or find_meteor_jar() is None,
    reason="needs java on PATH and pycocoevalcap's meteor-1.5.jar",
)

GTS = {
    1: ["A man riding a wave on top of a surfboard.", "A surfer rides a big wave"],
    2: ["a dog runs in the park"],
}
RES = {1: ["a man riding a wave"], 2: ["a dog sprints"]}
# pycocoevalcap 1.2's Meteor().compute_score on the same (PTB-tokenized) captions.
COCO_PER_IMAGE = [0.333321942076526, 0.1698381020523824]
COCO_CORPUS = 0.26738010454981487


def test_sanitize_for_meteor():
    assert sanitize_for_meteor("a|||b \n c\r\td\u2028e\u200bf\ud800  g") == "a b c d e f g"
    assert sanitize_for_meteor("") == ""


def _ptb_then_raw(gts, res):
    """PTB tokens for the ordinary captions, raw whitespace split for the hostile ones."""
    hostile = {c for i in (3, 4) for c in gts[i] + res[i]}

    def tokenize(text):
        return [text] if text in hostile else tokenize_ptb(text)

    return tokenize


@pytest.mark.slow  # a JVM start; the sanitising: test_sanitize_for_meteor, the jar's failures: the tests below
@needs_java
def test_matches_pycocoevalcap_and_survives_hostile_text():
    gts = dict(GTS)
    res = dict(RES)
    gts[3] = ["two cats\nsleep ||| on a sofa \u2028 now"]
    res[3] = [""]  # empty hypothesis
    gts[4] = ["caf\u00e9 na\u00efve \U0001F355"]
    res[4] = ["a\r\nb ||| c \ud800"]
    # one JVM start (~8 s): hostile text must not desynchronize the per-image answers
    corpus, per_image = OfficialMeteor(tokenizer=_ptb_then_raw(gts, res)).compute_score(gts, res)
    assert all(math.isfinite(v) for v in per_image) and 0 < corpus < 1
    assert per_image[:2] == pytest.approx(COCO_PER_IMAGE, abs=1e-9)  # pycocoevalcap's values
    assert per_image[2] == 0.0


@pytest.mark.slow  # a second JVM start (~8 s); the jar's values: the test above, its prestart: the one below
@needs_java
def test_score_all_prestarts_the_jar_and_matches_pycocoevalcap():
    metric = OfficialMeteor()
    scores = score_all(GTS, RES, metrics=["BLEU-1", metric, "ROUGE-L"])
    assert list(scores) == ["BLEU-1", "METEOR-1.5", "ROUGE-L"]
    assert scores["METEOR-1.5"] == pytest.approx(COCO_CORPUS, abs=1e-9)
    assert metric._session is None  # the prestarted JVM was used and stopped


@needs_java
def test_release_stops_an_unused_prestarted_jar():
    metric = OfficialMeteor()
    metric.prepare()
    process = metric._session.process
    metric.release()
    assert metric._session is None and process.poll() is not None
    metric.release()  # idempotent


@needs_java
def test_timeout_gives_nan_and_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        corpus, per_image = OfficialMeteor(timeout=0.2).compute_score(GTS, RES)
    assert math.isnan(corpus) and all(math.isnan(v) for v in per_image)
    assert "no answer from the jar within" in caplog.text


def test_missing_java_gives_nan_and_a_warning(caplog):
    metric = OfficialMeteor(java="no-such-java-binary")
    assert "no-such-java-binary" in metric.unavailable_reason()
    with caplog.at_level(logging.WARNING):
        scores = score_all(GTS, RES, metrics=[metric, "BLEU-1"])
    assert math.isnan(scores["METEOR-1.5"]) and scores["BLEU-1"] > 0
    assert "METEOR-1.5 is NaN" in caplog.text
    metric.prepare()  # no java: nothing to start
    metric.release()


@pytest.mark.slow
@needs_java
def test_live_agreement_with_pycocoevalcap_meteor():
    from pycocoevalcap.meteor.meteor import Meteor

    gts = {k: [" ".join(tokenize_ptb(c)) for c in v] for k, v in GTS.items()}
    res = {k: [" ".join(tokenize_ptb(c)) for c in v] for k, v in RES.items()}
    coco = Meteor()
    try:
        theirs = coco.compute_score(gts, res)
    finally:
        coco.meteor_p.kill()
        coco.meteor_p.wait()
    ours = OfficialMeteor(tokenizer="whitespace").compute_score(gts, res)
    assert theirs[0] == pytest.approx(COCO_CORPUS, abs=1e-9)
    assert ours[0] == pytest.approx(theirs[0], abs=1e-9)
    assert ours[1] == pytest.approx(theirs[1], abs=1e-9)
