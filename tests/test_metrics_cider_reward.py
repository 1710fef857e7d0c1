"""The SCST reward is the package's CIDEr-D: same scores, document frequencies fixed once."""

import random

import numpy as np
import pytest

from keras_captioning.metrics import CiderD
from keras_captioning.metrics.cider_reward import CiderDReward
from keras_captioning.metrics.errors import MetricInputError
from keras_captioning.metrics.tokenizer import get_tokenizer

WORDS = "a the red blue green circle square triangle left right of above below large small near".split()


def _corpus(num_images=40, seed=0):
    rng = random.Random(seed)
    gts = {f"im{i}": [" ".join(rng.choices(WORDS, k=rng.randint(2, 12))) + rng.choice(["", ".", " !"])
                      for _ in range(rng.randint(1, 5))] for i in range(num_images)}
    res = {k: " ".join(rng.choices(WORDS + ["zebra"], k=rng.randint(1, 14))) for k in gts}
    res["im1"] = gts["im1"][0]  # a reference itself
    res["im2"] = "Red, RED red (red)"  # tokenizer: case, punctuation, brackets
    return gts, res


def test_reward_equals_package_cider_d_on_the_same_captions():
    gts, res = _corpus()
    ids = list(res)
    expected = CiderD().compute_score(gts, {k: [res[k]] for k in ids})[1]
    got = CiderDReward(gts).score_captions(ids, [res[k] for k in ids])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert got[ids.index("im1")] > 1.0


def test_document_frequencies_stay_those_of_the_reference_set():
    # Scoring a few images (in any order, repeated) gives their scores within the whole set,
    # not the CIDEr-D of the few alone (which would use the few images' df).
    gts, res = _corpus()
    ids = list(res)
    full = dict(zip(ids, CiderD().compute_score(gts, {k: [res[k]] for k in ids})[1]))
    reward = CiderDReward(gts)
    picked = ["im7", "im3", "im7", "im30"]
    np.testing.assert_allclose(reward.score_captions(picked, [res[k] for k in picked]),
                               [full[k] for k in picked], rtol=1e-9)


def test_score_ids_equals_scoring_the_decoded_text():
    gts, _ = _corpus()
    words = ["<pad>", "<unk>", "<start>", "<end>"] + WORDS
    table = ["", "<unk>", "", ""] + WORDS
    reward = CiderDReward(gts, words=table, end_id=3)
    rng = np.random.default_rng(1)
    rows = rng.integers(4, len(words), size=(12, 9))
    rows[0, 4:] = 0  # PAD after the caption
    rows[1, 3] = 3  # END: the rest of the row is ignored
    rows[2, :] = 0  # the empty caption
    rows[3, 2] = 1  # <unk> is scored as the text the vocabulary writes
    ids = [f"im{i}" for i in range(12)]

    def text(row):
        out = []
        for t in row.tolist():
            if t == 3:
                break
            out.append(table[t])
        return " ".join(w for w in out if w)

    expected = reward.score_captions(ids, [text(r) for r in rows])
    np.testing.assert_allclose(reward.score_ids(ids, rows), expected, rtol=1e-12)
    assert reward.score_ids(ids[2:3], rows[2:3])[0] == 0.0  # empty caption: exactly 0
    bytes_ids = np.array([i.encode() for i in ids], dtype=object)  # what tf.numpy_function passes
    np.testing.assert_allclose(reward.score_ids(bytes_ids, rows), expected, rtol=1e-12)


def test_unknown_image_and_empty_references_are_errors():
    with pytest.raises(MetricInputError, match="has no reference"):
        CiderDReward({"a": ["", ""]})
    with pytest.raises(MetricInputError, match="not in the reward's reference set"):
        CiderDReward({"a": ["a red circle"], "b": ["a blue square"]}).score_captions(["c"], ["a red circle"])


# --- the END token as a word of the reward (train.scst_reward_end) -------------------------

END = "zzend"  # a word the corpus never uses: CiderD on "<caption> zzend" is the expected score


def _end(text):
    """The caption's words with END appended ("" stays ""), tokenized first: "near. zzend" would
    keep the full stop inside a word."""
    words = get_tokenizer("ptb")(text)
    return " ".join(words + [END]) if words else ""


def test_end_token_reward_equals_cider_d_with_the_end_written_as_a_word():
    gts, res = _corpus()
    ids = list(res)
    res["im3"] = ""  # the empty caption: no end word appended, exactly 0
    ended_gts = {k: [_end(r) for r in refs] for k, refs in gts.items()}
    ended_res = {k: [_end(res[k])] for k in ids}
    expected = CiderD().compute_score(ended_gts, ended_res)[1]
    got = CiderDReward(gts, end_token=END).score_captions(ids, [res[k] for k in ids])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert got[ids.index("im3")] == 0.0
    plain = CiderDReward(gts).score_captions(ids, [res[k] for k in ids])
    assert not np.allclose(got, plain)  # the option changes the scores


def test_end_token_in_score_ids_only_for_rows_that_reach_end():
    gts, _ = _corpus()
    table = ["", "<unk>", "", ""] + WORDS
    reward = CiderDReward(gts, words=table, end_id=3, end_token=END)
    rng = np.random.default_rng(2)
    rows = rng.integers(4, len(table), size=(6, 8))
    rows[0, 5] = 3  # finished: END, then whatever
    rows[1, 0] = 3  # END first: the empty caption
    ids = [f"im{i}" for i in range(6)]  # rows 2..5 never reach END (cut off by the length bound)
    texts = [" ".join(table[t] for t in r.tolist()) for r in rows]
    texts[0] = " ".join(table[t] for t in rows[0, :5].tolist())
    ended_gts = {k: [_end(r) for r in refs] for k in ids for refs in [gts[k]]}
    expected = CiderD().compute_score(
        ended_gts, {ids[0]: [_end(texts[0])], ids[1]: [""], **{i: [t] for i, t in zip(ids[2:], texts[2:])}}
    )[1]
    # CiderD's df come from the images it scores; the reward's from its whole reference set:
    # compare against a reward over exactly the scored images.
    sub = {k: gts[k] for k in ids}
    sub_reward = CiderDReward(sub, words=table, end_id=3, end_token=END)
    np.testing.assert_allclose(sub_reward.score_ids(ids, rows), expected, rtol=1e-9, atol=1e-12)
    assert reward.score_ids(ids[1:2], rows[1:2])[0] == 0.0


def test_end_token_punishes_a_caption_that_stops_mid_phrase():
    refs = {"a": ["a dog runs on the grass", "a brown dog is running on grass", "the dog runs outside"],
            "b": ["two people sit on a bench", "a man and a woman sitting on a bench"],
            "c": ["a child plays in the water", "a little girl splashing in water"]}
    cut, whole = "a dog runs on the", "a dog runs on the grass"
    plain = CiderDReward(refs).score_captions(["a", "a"], [cut, whole])
    ended = CiderDReward(refs, end_token=END).score_captions(["a", "a"], [cut, whole])
    assert ended[0] / ended[1] < plain[0] / plain[1]


def test_end_token_that_a_reference_uses_is_an_error():
    with pytest.raises(MetricInputError, match=r"references\['a'\].*end token"):
        CiderDReward({"a": ["a zzend dog"]}, end_token=END)
    with pytest.raises(MetricInputError, match="end_token"):
        CiderDReward({"a": ["a dog"]}, end_token="")
