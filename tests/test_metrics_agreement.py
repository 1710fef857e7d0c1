"""Our BLEU-1..4, ROUGE-L and CIDEr-D against pycocoevalcap's own (pure Python) scorers.

Inputs: 30 images x 5 references from a small deterministic sentence generator, hypotheses
perturbed from a reference (or unrelated), all already lower-case and space-tokenized, so
both sides see identical tokens.
"""

import random

import pytest

from keras_captioning.metrics import Bleu, CiderD, RougeL, score_all

pytest.importorskip("pycocoevalcap", reason="pycocoevalcap is not installed (pip install pycocoevalcap)")
from pycocoevalcap.bleu.bleu import Bleu as CocoBleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider as CocoCider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge as CocoRouge  # noqa: E402

TOLERANCE = 1e-3

SUBJECTS = ["man", "woman", "dog", "cat", "boy", "girl", "group of people", "surfer", "child", "bird"]
ADJECTIVES = ["small", "large", "black", "white", "young", "red", "old", "brown"]
VERBS = ["riding", "sitting on", "standing next to", "holding", "walking along", "looking at", "playing with"]
OBJECTS = ["a wave", "a bench", "the street", "a frisbee", "a table", "the beach", "a horse", "a kite"]
PLACES = ["in a park", "on the grass", "near the water", "at night", "in the city", "", "", ""]


def _sentence(rng: random.Random) -> str:
    adjective = rng.choice(ADJECTIVES) + " " if rng.random() < 0.5 else ""
    text = f"a {adjective}{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(PLACES)}"
    return " ".join(text.split())


def _perturb(rng: random.Random, text: str) -> str:
    words = text.split()
    for _ in range(rng.randint(0, 3)):
        i = rng.randrange(len(words))
        draw = rng.random()
        if draw < 0.4:
            words[i] = rng.choice(ADJECTIVES + ["thing", "person", "a", "the"])
        elif draw < 0.7 and len(words) > 5:
            del words[i]
        else:
            words.insert(i, rng.choice(ADJECTIVES + ["very", "the"]))
    return " ".join(words)


def make_corpus(seed: int = 0, num_images: int = 30, num_refs: int = 5):
    """``(gts, res)``: deterministic, tokenized, realistic lengths (5-12 words)."""
    rng = random.Random(seed)
    gts, res = {}, {}
    for image_id in range(num_images):
        refs = [_sentence(rng) for _ in range(num_refs)]
        gts[image_id] = refs
        hyp = _perturb(rng, rng.choice(refs)) if rng.random() < 0.7 else _sentence(rng)
        res[image_id] = [hyp]
    return gts, res


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bleu_agrees_with_pycocoevalcap(seed):
    gts, res = make_corpus(seed)
    ours, ours_per_image = Bleu(smoothing=None).compute_score(gts, res)
    theirs, theirs_per_image = CocoBleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        assert ours[k] == pytest.approx(theirs[k], abs=1e-9)  # measured: ~3e-12
        for a, b in zip(ours_per_image[k], theirs_per_image[k]):
            # per image pycocoevalcap's 1e-15 turns a zero 4-gram precision into ~1e-4, not 0
            assert a == pytest.approx(b, abs=TOLERANCE)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rouge_l_and_cider_d_agree_with_pycocoevalcap(seed):
    gts, res = make_corpus(seed)
    ours, ours_per_image = RougeL().compute_score(gts, res)
    theirs, theirs_per_image = CocoRouge().compute_score(gts, res)
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert list(ours_per_image) == pytest.approx(list(theirs_per_image), abs=1e-12)
    ours, ours_per_image = CiderD().compute_score(gts, res)
    theirs, theirs_per_image = CocoCider().compute_score(gts, res)
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert list(ours_per_image) == pytest.approx(list(theirs_per_image), abs=1e-12)
    assert ours > 0.1  # a real, non-degenerate value


def test_score_all_uses_the_same_numbers():
    gts, res = make_corpus(0)
    scores = score_all(gts, res, metrics=["BLEU-1", "BLEU-4", "CIDEr-D", "ROUGE-L"])
    bleu, _ = CocoBleu(4).compute_score(gts, res, verbose=0)
    cider, _ = CocoCider().compute_score(gts, res)
    rouge, _ = CocoRouge().compute_score(gts, res)
    assert scores["BLEU-1"] == pytest.approx(bleu[0], abs=TOLERANCE)
    assert scores["BLEU-4"] == pytest.approx(bleu[3], abs=TOLERANCE)
    assert scores["CIDEr-D"] == pytest.approx(cider, abs=TOLERANCE)
    assert scores["ROUGE-L"] == pytest.approx(rouge, abs=TOLERANCE)


def test_different_numbers_of_references_agree():
    gts, res = make_corpus(3, num_images=12)
    gts = {i: refs[: 1 + i % 5] for i, refs in gts.items()}  # 1..5 references
    assert Bleu(smoothing=None).compute_score(gts, res)[0] == pytest.approx(
        CocoBleu(4).compute_score(gts, res, verbose=0)[0], abs=1e-9
    )
    assert CiderD().compute_score(gts, res)[0] == pytest.approx(CocoCider().compute_score(gts, res)[0], abs=1e-12)
    assert RougeL().compute_score(gts, res)[0] == pytest.approx(CocoRouge().compute_score(gts, res)[0], abs=1e-12)


def test_documented_bleu_difference_for_hypotheses_shorter_than_n():
    # NLTK: a 2-word hypothesis has max(1, 0) = 1 trigram in the denominator and 0 matches -> 0;
    # pycocoevalcap: (0 + 1e-15) / (0 + 1e-9) = 1e-6 -> BLEU-3 = (1 * 1 * 1e-6) ** (1/3) = 0.01.
    gts, res = {1: ["a dog"]}, {1: ["a dog"]}
    ours, _ = Bleu(smoothing=None).compute_score(gts, res)
    theirs, _ = CocoBleu(4).compute_score(gts, res, verbose=0)
    assert ours[:2] == pytest.approx([1.0, 1.0])
    assert ours[2] == 0.0 and theirs[2] == pytest.approx(0.01, rel=1e-3)
