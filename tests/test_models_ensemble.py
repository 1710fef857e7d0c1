"""CaptionEnsemble (several runs decoding as one) and ``evaluate --ensemble``."""

import json
import os
import shutil

import numpy as np
import pytest

from keras_captioning.cli import main
from keras_captioning.decoding import beam_search, greedy_decode
from keras_captioning.errors import CaptioningError
from keras_captioning.evaluate import evaluate_run
from keras_captioning.models.caption_ensemble import CaptionEnsemble
from tests.helpers import TINY, tiny_captioner, tiny_inputs


def _members():
    """An attention model (grid of 4 regions), a merge model (pooled vector) and a transformer
    reading a grid of 6 regions of another width: three different feature inputs."""
    import keras

    keras.utils.set_random_seed(1)
    members = [tiny_captioner("attention"), tiny_captioner("merge"),
               tiny_captioner("transformer", num_regions=6, feature_dim=5)]
    rng = np.random.default_rng(3)
    features = [rng.normal(size=(3, 4, TINY["feature_dim"])).astype(np.float32),
                rng.normal(size=(3, TINY["feature_dim"])).astype(np.float32),
                rng.normal(size=(3, 6, 5)).astype(np.float32)]
    for member, kind, f in zip(members, ("attention", "merge", "transformer"), features):
        inputs = tiny_inputs(kind)
        member({"features": f, "tokens": inputs["tokens"][: len(f)]})  # build
        for w in member.weights:  # a peaked distribution: no near-ties between words
            w.assign(np.random.default_rng(len(w.path)).normal(0, 0.6, w.shape).astype(w.dtype))
    return members, features


def _replayed(members, features, tokens):
    """Per step, the mean of the members' probabilities along ``tokens`` (B, L), computed
    member by member through their own decode API: (B, L, V)."""
    import tensorflow as tf

    states = [m.init_decode(f) for m, f in zip(members, features)]
    prev = np.full(len(tokens), members[0].start_id, np.int32)
    out = []
    for step in range(tokens.shape[1]):
        probs = []
        for i, member in enumerate(members):
            context, state = states[i]
            logits, state, _ = member.decode_step(tf.constant(prev), state, context)
            states[i] = (context, state)
            logits = np.array(logits, np.float64)
            logits[:, [member.pad_id, member.start_id]] = -np.inf
            p = np.exp(logits - logits.max(-1, keepdims=True))
            probs.append(p / p.sum(-1, keepdims=True))
        out.append(np.mean(probs, axis=0))
        prev = tokens[:, step]
    return np.stack(out, axis=1)


def test_greedy_follows_the_mean_of_the_members_probabilities():
    members, features = _members()
    ensemble = CaptionEnsemble(members, [f.shape[1:] for f in features])
    result = greedy_decode(ensemble, ensemble.pack(features), max_length=6)
    # Replay along the chosen tokens (PAD after END stands for END: the loop stops feeding then).
    tokens = np.where(result.tokens == 0, ensemble.end_id, result.tokens)
    mean = _replayed(members, features, tokens)
    for b in range(len(tokens)):
        n = int(result.lengths[b]) + (1 if result.lengths[b] < 6 else 0)  # words, then END if it ended
        chosen = tokens[b, :n]
        np.testing.assert_array_equal(mean[b, :n].argmax(-1), chosen)
        np.testing.assert_allclose(result.scores[b], np.log(mean[b, np.arange(n), chosen]).sum(), rtol=1e-4)
    attention = result.attention  # the first member with attention (the attention model's 4 regions)
    assert attention is not None and attention.shape[-1] == 4


def test_copies_of_one_model_decode_as_the_model():
    members, features = _members()
    model, f = members[0], features[0]
    ensemble = CaptionEnsemble([model, model], [f.shape[1:]] * 2)
    packed = ensemble.pack([f, f])
    for search in (lambda m, x: greedy_decode(m, x, 6), lambda m, x: beam_search(m, x, 6, beam_width=3)):
        alone, both = search(model, f), search(ensemble, packed)
        np.testing.assert_array_equal(both.tokens, alone.tokens)
        np.testing.assert_allclose(both.scores, alone.scores, rtol=1e-4)


def test_bad_members_and_features_are_one_line():
    members, features = _members()
    with pytest.raises(CaptioningError, match="at least 2 models"):
        CaptionEnsemble(members[:1], [features[0].shape[1:]])
    ensemble = CaptionEnsemble(members, [f.shape[1:] for f in features], names=["a", "b", "c"])
    with pytest.raises(CaptioningError, match=r"b reads features of shape \(8,\), got \(4, 8\)"):
        ensemble.pack([features[0], features[0], features[2]])
    with pytest.raises(CaptioningError, match="feature batches of different sizes"):
        ensemble.pack([features[0], features[1][:2], features[2]])
    other = tiny_captioner("attention")
    other.end_id = 7
    with pytest.raises(CaptioningError, match="not the same vocabulary"):
        CaptionEnsemble([members[0], other], [features[0].shape[1:]] * 2)


@pytest.mark.slow  # evaluate end to end; the decoding rule: the two tests above
def test_evaluate_an_ensemble_of_a_run_and_its_copy_equals_the_run(tiny_run, copy_run, tmp_path, capsys):
    alone = evaluate_run(tiny_run.run_dir, split="val", beam=2, out_dir=str(tmp_path / "alone"),
                         metrics=["BLEU-4"])
    assert main(["evaluate", "--run", tiny_run.run_dir, "--split", "val", "--beam", "2",
                 "--ensemble", copy_run]) == 0
    report = [d for d in os.listdir(tiny_run.run_dir) if "ensemble2-" in d]
    assert len(report) == 1
    folder = os.path.join(tiny_run.run_dir, report[0])
    try:
        predictions = json.loads(open(os.path.join(folder, "predictions.json")).read())
        assert [p["caption"] for p in predictions] == [d["caption"] for d in alone["decoded"]]
        meta = json.loads(open(os.path.join(folder, "scores.json")).read())["meta"]
        assert meta["ensemble"] == [tiny_run.run_dir, copy_run]
        assert "report in " + folder in capsys.readouterr().out
    finally:
        shutil.rmtree(folder)  # the shared run stays as it was


def test_evaluate_refuses_a_bad_ensemble_in_one_line(tiny_run, copy_run, tmp_path):
    with pytest.raises(CaptioningError, match="already in the ensemble"):
        evaluate_run(tiny_run.run_dir, split="val", ensemble=[tiny_run.run_dir], out_dir=str(tmp_path / "a"))
    with pytest.raises(CaptioningError, match="not a run directory"):
        evaluate_run(tiny_run.run_dir, split="val", ensemble=[str(tmp_path)], out_dir=str(tmp_path / "b"))
    from keras_captioning.data.vocab import Vocabulary

    path = os.path.join(copy_run, "vocab.json")
    words = list(Vocabulary.load(path).id_to_word)
    words[-1], words[-2] = words[-2], words[-1]
    Vocabulary(words).save(path)
    with pytest.raises(CaptioningError, match="vocabulary differs"):
        evaluate_run(tiny_run.run_dir, split="val", ensemble=[copy_run], out_dir=str(tmp_path / "c"))


def test_feature_folders_listing_other_images_are_one_line(tmp_path):
    """Two feature folders of the same photos written in another order: refused before a caption is scored."""
    from PIL import Image

    from keras_captioning.data.pipeline import make_eval_dataset
    from keras_captioning.data.records import CaptionRecord
    from keras_captioning.data.vocab import Vocabulary
    from keras_captioning.evaluate import decode_split_ensemble
    from keras_captioning.features.extract import extract_features
    from keras_captioning.features.feature_folder import FeatureFolder

    records = []
    for i in range(6):
        path = str(tmp_path / f"{i}.png")
        Image.new("RGB", (16, 16), (30 * i, 90, 200 - 20 * i)).save(path)
        records.append(CaptionRecord(str(i), path, ["a red ball", "a blue dog"], "val"))
    vocab = Vocabulary.build([c for r in records for c in r.captions])
    dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
    extract_features(records, vocab, dirs[0], backbone="patches", weights=None, shard_size=3)
    extract_features(records[::-1], vocab, dirs[1], backbone="patches", weights=None, shard_size=3)
    grid = next(iter(make_eval_dataset(FeatureFolder(dirs[0]).shard_pattern("val"), 2)))["features"].shape[1:]
    members = [tiny_captioner("attention", vocab_size=len(vocab), num_regions=grid[0], feature_dim=grid[1])
               for _ in range(2)]
    with pytest.raises(CaptioningError, match="do not list the same images of split 'val' in the same order"):
        decode_split_ensemble(members, ["a", "b"], vocab, dirs, ["grid", "grid"], "val", beam=1, max_length=4)
    same = decode_split_ensemble(members, ["a", "b"], vocab, [dirs[0], dirs[0]], ["grid", "grid"], "val",
                                 beam=1, max_length=4)
    assert [d["image_id"] for d in same] == [r.image_id for r in records]
