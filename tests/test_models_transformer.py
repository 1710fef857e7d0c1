"""The Transformer captioner: cached decoding equals recomputation, serialization, precision,
the training objective, config validation; slow: CLI train/evaluate/caption and the export."""

import json
import os
import subprocess
import sys
import sysconfig

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_captioning.config import load_config
from keras_captioning.decoding import beam_search, greedy_decode, sample_decode
from keras_captioning.errors import CaptioningError
from keras_captioning.models import (
    TransformerAttention,
    TransformerCaptioner,
    TransformerDecoderLayer,
    TransformerEncoderLayer,
)
from keras_captioning.models.registry import build_model, model_type, model_type_of
from tests.helpers import REPO, SMOKE, smoke_config, smoke_overrides

VOCAB, REGIONS, DIM, BATCH, STEPS, MAX_POSITIONS = 20, 4, 6, 3, 7, 10


def make_model(**overrides):
    kwargs = dict(vocab_size=VOCAB, feature_dim=DIM, num_regions=REGIONS, model_dim=8, num_heads=2, ff_dim=16,
                  num_layers=2, encoder_layers=1, max_positions=MAX_POSITIONS, dropout=0.1)
    kwargs.update(overrides)
    keras.utils.set_random_seed(0)
    return TransformerCaptioner(**kwargs)


def make_inputs(seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(BATCH, REGIONS, DIM)).astype(np.float32)
    tokens = rng.integers(4, VOCAB, size=(BATCH, STEPS)).astype(np.int32)
    tokens[:, 0] = 2
    tokens[0, 4:] = 0  # a padded row
    return {"features": features, "tokens": tokens}


VARIANTS = {
    "pre-learned": {},
    "post-sinusoidal": {"norm": "post", "positions": "sinusoidal"},
    "no-encoder-first-layer-map": {"encoder_layers": 0, "attention_layer": 0, "num_layers": 3},
}


class Recompute:
    """The decode API without a cache: every step runs the whole prefix through ``call``.

    State: the tokens so far in a (B, L) buffer and the step (B,), both gathered by beam
    search like any state; the logits and attention are read at the step's position.
    """

    def __init__(self, model, length):
        self.model, self.length = model, length
        self.pad_id, self.start_id, self.end_id = model.pad_id, model.start_id, model.end_id

    def init_decode(self, features):
        features = tf.convert_to_tensor(features, tf.float32)
        batch = tf.shape(features)[0]
        return features, [tf.zeros((batch, self.length), tf.int32), tf.zeros((batch,), tf.int32)]

    def decode_step(self, tokens, state, context):
        prefix, step = state
        prefix = tf.where(tf.range(self.length)[None, :] == step[:, None], tokens[:, None], prefix)
        logits, attention = self.model({"features": context, "tokens": prefix}, return_attention=True)
        return (tf.gather(logits, step, batch_dims=1), [prefix, step + 1],
                tf.gather(attention, step, batch_dims=1))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cached_steps_equal_the_full_pass(variant):
    """decode_step with the key/value cache gives the teacher-forced logits and attention."""
    model = make_model(**VARIANTS[variant])
    inputs = make_inputs()
    logits, attention = model(inputs, return_attention=True)
    assert logits.dtype == "float32" and logits.shape == (BATCH, STEPS, VOCAB)
    assert attention.shape == (BATCH, STEPS, REGIONS)
    np.testing.assert_allclose(attention.numpy().sum(-1), 1.0, atol=1e-5)
    context, state = model.init_decode(inputs["features"])
    for t in range(STEPS):
        step_logits, state, step_attention = model.decode_step(tf.constant(inputs["tokens"][:, t]), state, context)
        np.testing.assert_allclose(step_logits.numpy(), logits[:, t].numpy(), atol=1e-5)
        np.testing.assert_allclose(step_attention.numpy(), attention[:, t].numpy(), atol=1e-6)
    assert state[0].numpy().tolist() == [STEPS] * BATCH


@pytest.mark.slow  # eight traced searches per variant; each variant's cache, step by step: the test above
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cached_search_equals_recomputation(variant):
    """Greedy, beam and sampling give the same tokens, scores and maps with the cache as when
    every step recomputes the whole prefix (beam search reorders the cache along the batch axis)."""
    model = make_model(**VARIANTS[variant])
    features = make_inputs(1)["features"]
    slow = Recompute(model, MAX_POSITIONS)
    for decode in (lambda m: greedy_decode(m, features, MAX_POSITIONS),
                   lambda m: beam_search(m, features, MAX_POSITIONS, beam_width=3, length_penalty=0.5),
                   lambda m: beam_search(m, features, 6, beam_width=4, num_return=2),
                   lambda m: sample_decode(m, features, MAX_POSITIONS, seed=3)):
        cached, full = decode(model), decode(slow)
        np.testing.assert_array_equal(cached.tokens, full.tokens)
        np.testing.assert_array_equal(cached.lengths, full.lengths)
        np.testing.assert_allclose(cached.scores, full.scores, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cached.attention, full.attention, atol=1e-5)
    assert len({tuple(row) for row in greedy_decode(model, features, MAX_POSITIONS).tokens}) > 1


def test_the_attention_map_is_the_chosen_layer():
    first, last = make_model(attention_layer=0), make_model(attention_layer=-1)
    inputs = make_inputs()
    np.testing.assert_array_equal(first(inputs).numpy(), last(inputs).numpy())  # same weights (seeded)
    _, map_first = first(inputs, return_attention=True)
    _, map_last = last(inputs, return_attention=True)
    assert not np.allclose(map_first.numpy(), map_last.numpy())


def test_keras_round_trip(tmp_path):
    model = make_model(norm="post", positions="sinusoidal")
    inputs = make_inputs()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is TransformerCaptioner
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded(inputs).numpy(), model(inputs).numpy())
    a, b = beam_search(model, inputs["features"], 6), beam_search(loaded, inputs["features"], 6)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    loaded.compile(optimizer=keras.optimizers.Adam(1e-3))
    captions = np.concatenate([inputs["tokens"], np.full((BATCH, 1), 3, np.int32)], axis=1)
    logs = loaded.train_on_batch({"features": inputs["features"], "captions": captions}, return_dict=True)
    assert set(logs) == {"loss", "accuracy", "perplexity"} and np.isfinite(logs["loss"])


@pytest.mark.parametrize("layer", [TransformerEncoderLayer, TransformerDecoderLayer])
def test_layers_round_trip(layer):
    original = layer(8, 2, 16, dropout=0.1, norm="post", name="x")
    clone = layer.from_config(original.get_config())
    assert clone.get_config() == original.get_config()
    attention = TransformerAttention(2, 4, dropout=0.2)
    assert TransformerAttention.from_config(attention.get_config()).get_config() == attention.get_config()
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(original)).norm == "post"


def test_loss_at_real_positions_and_images_encoded_once():
    """compute_loss_logits_and_penalty: the real targets' logits of the full pass, and with
    ``image_index`` the same as repeating each image's features."""
    model = make_model(dropout=0.0)
    inputs = make_inputs()
    targets = np.concatenate([inputs["tokens"][:, 1:], np.full((BATCH, 1), 3, np.int32)], axis=1)
    targets[inputs["tokens"] == 0] = 0
    full = model(inputs).numpy()
    real = targets != 0
    got_targets, got_logits, penalty = model.compute_loss_logits_and_penalty(
        tf.constant(inputs["features"]), tf.constant(inputs["tokens"]), tf.constant(targets))
    np.testing.assert_array_equal(got_targets.numpy(), targets[real])
    np.testing.assert_allclose(got_logits.numpy(), full[real], atol=1e-5)
    assert float(penalty) == 0.0
    index = np.array([0, 1, 1], np.int32)
    _, by_index, _ = model.compute_loss_logits_and_penalty(
        tf.constant(inputs["features"][:2]), tf.constant(inputs["tokens"]), tf.constant(targets),
        image_index=tf.constant(index))
    _, repeated, _ = model.compute_loss_logits_and_penalty(
        tf.constant(inputs["features"][index]), tf.constant(inputs["tokens"]), tf.constant(targets))
    np.testing.assert_allclose(by_index.numpy(), repeated.numpy(), atol=1e-5)


def test_mixed_precision_float32_logits_and_a_finite_step():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = make_model(num_layers=1)  # one layer of each kind: the policy is per layer
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        inputs = make_inputs()
        logits, attention = model(inputs, return_attention=True)
        assert logits.dtype == "float32" and attention.dtype == "float32"
        assert model.decoder_stack[0].ff_inner.compute_dtype == "float16"
        context, state = model.init_decode(inputs["features"])
        assert state[1].dtype == "float16"
        step_logits, _, _ = model.decode_step(tf.constant(inputs["tokens"][:, 0]), state, context)
        assert step_logits.dtype == "float32"
        np.testing.assert_allclose(step_logits.numpy(), logits[:, 0].numpy(), atol=2e-2)
        captions = np.concatenate([inputs["tokens"], np.full((BATCH, 1), 3, np.int32)], axis=1)
        logs = model.train_on_batch({"features": inputs["features"], "captions": captions}, return_dict=True)
        assert np.isfinite(logs["loss"])
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow  # a 40-step fit; one Transformer train step: test_mixed_precision_float32_logits_and_a_finite_step
def test_training_lowers_the_loss():
    model = make_model(dropout=0.0, num_layers=1)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    inputs = make_inputs()
    captions = np.concatenate([inputs["tokens"], np.full((BATCH, 1), 3, np.int32)], axis=1)
    batch = {"features": inputs["features"], "captions": captions}
    first = model.train_on_batch(batch, return_dict=True)["loss"]
    for _ in range(30):
        last = model.train_on_batch(batch, return_dict=True)["loss"]
    assert last < 0.5 * first


@pytest.mark.parametrize("kwargs, message", [
    ({"model_dim": 9, "num_heads": 2}, "multiple of the number of heads"),
    ({"positions": "rotary"}, "positions must be one of"),
    ({"norm": "sandwich"}, "norm must be one of"),
    ({"attention_layer": 2}, "attention_layer 2 is not one of the 2"),
    ({"num_layers": 0}, "num_layers >= 1"),
    ({"dropout": 1.0}, "dropout must be in"),
])
def test_bad_arguments_raise_captioning_error(kwargs, message):
    with pytest.raises(CaptioningError, match=message):
        make_model(**kwargs)


def test_captions_longer_than_the_positions_are_refused():
    model = make_model(max_positions=4)
    with pytest.raises(CaptioningError, match="captions of 7 input tokens exceed max_positions=4"):
        model(make_inputs())


def test_registry_and_config():
    entry = model_type("transformer")
    assert entry.feature == "grid" and entry.has_attention
    cfg = load_config(str(REPO / "configs" / "demo_transformer.yaml"))
    model = build_model(cfg, 30, (16, 12), {"pad_id": 0, "start_id": 2, "end_id": 3})
    assert isinstance(model, TransformerCaptioner)
    assert (model.model_dim, model.num_heads, model.num_layers, model.encoder_layers, model.max_positions) == (
        128, 4, 2, 1, 24)
    for name in ("flickr8k_transformer", "flickr8k_transformer_scst"):
        cfg = load_config(str(REPO / "configs" / f"{name}.yaml"))
        assert cfg.model.type == "transformer"
    with pytest.raises(CaptioningError, match="transformer_max_positions=10 is below the 20"):
        load_config(SMOKE, ["model.type=transformer", "model.transformer_max_positions=10", "eval.max_length=20"])
    with pytest.raises(CaptioningError, match="transformer_dim=30 must be a multiple"):
        load_config(SMOKE, ["model.type=transformer", "model.transformer_dim=30", "model.transformer_heads=4"])
    with pytest.raises(CaptioningError, match="transformer_positions='rope' is not valid"):
        load_config(SMOKE, ["model.transformer_positions=rope"])


# ---------------------------------------------------------------------------- slow: whole runs

TINY = {"model.transformer_dim": 16, "model.transformer_heads": 2, "model.transformer_ff_dim": 32,
        "model.transformer_layers": 2, "model.transformer_encoder_layers": 1, "model.transformer_max_positions": 24}


@pytest.mark.slow  # a CLI training run, evaluate, caption and an SCST stage
def test_cli_train_evaluate_caption_scst(tmp_path, capsys):
    from keras_captioning.cli import main

    config = str(REPO / "configs" / "demo_transformer.yaml")
    sets = smoke_overrides(tmp_path, "transformer", "run", **TINY, **{
        "data.synthetic_images": 60, "data.synthetic_image_size": 64, "features.shard_size": 25,
        "train.batch_size": 16, "eval.beam": 2, "eval.max_length": 12})
    assert main(["train", "--config", config, *[x for s in sets for x in ("--set", s)]]) == 0
    run = tmp_path / "run"
    assert (run / "checkpoints" / "best.keras").exists()
    assert json.loads((run / "run.json").read_text())["model_type"] == "transformer"
    assert main(["evaluate", "--run", str(run)]) == 0
    scores = json.loads(next(run.glob("eval-*/scores.json")).read_text())
    assert {"BLEU-4", "CIDEr-D"} <= set(scores["scores"])
    image = sorted((tmp_path / "data" / "images").iterdir())[0]
    capsys.readouterr()
    out_png = tmp_path / "map.png"
    assert main(["caption", "--run", str(run), str(image), "--attention-map", str(out_png)]) == 0
    assert out_png.exists() and capsys.readouterr().out.strip()
    # SCST starts from the run: the sampled captions and the policy-gradient pass go through the
    # Transformer's decode_step and call.
    scst = smoke_overrides(tmp_path, "transformer", "scst", **TINY, **{
        "data.synthetic_images": 60, "data.synthetic_image_size": 64, "features.shard_size": 25,
        "train.batch_size": 16, "eval.max_length": 12, "train.objective": "scst", "train.init_from": run,
        "train.epochs": 1, "train.steps_per_epoch": 2})
    assert main(["train", "--config", config, *[x for s in scst for x in ("--set", s)]]) == 0
    steps = (tmp_path / "scst" / "steps.csv").read_text().splitlines()
    assert len(steps) == 3 and "reward" in steps[0]
    model = keras.saving.load_model(tmp_path / "scst" / "checkpoints" / "last.keras", compile=False)
    assert isinstance(model, TransformerCaptioner)


@pytest.mark.slow  # a training run, two SavedModels and a LiteRT file, run in an isolated Python
def test_export_matches_captioner(tmp_path_factory):
    from keras_captioning.captioner import Captioner
    from keras_captioning.export.litert import export_litert
    from keras_captioning.export.saved_model import export_saved_model
    from keras_captioning.training.trainer import train
    from tests.test_export import ISOLATED

    root = tmp_path_factory.mktemp("export-transformer")
    train(smoke_config(root, "transformer", "run", **TINY, **{"train.epochs": 3}))
    captioner = Captioner.from_run(str(root / "run"))
    images = [str(p) for p in sorted((root / "data" / "images").iterdir())[:7]]
    job = {"images": images, "saved_models": {}, "litert": {}}
    for beam in (1, 3):
        job["saved_models"][str(beam)] = str(root / f"sm-{beam}")
        export_saved_model(captioner, job["saved_models"][str(beam)], beam=beam, max_length=10)
    job["litert"]["litert"] = str(root / "model.tflite")
    export_litert(captioner, job["litert"]["litert"], max_length=10)
    (root / "job.json").write_text(json.dumps(job))
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(elsewhere), "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", ISOLATED, sysconfig.get_paths()["purelib"],
                           str(root / "job.json"), str(root / "out.json")],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    outputs = json.loads((root / "out.json").read_text())
    for beam in (1, 3):
        got = outputs[str(beam)]
        expected = captioner.caption(images, beam=beam, max_length=10)
        assert got["captions"] == [r["caption"] for r in expected]
        np.testing.assert_allclose(got["scores"], [r["score"] for r in expected], rtol=1e-5, atol=1e-5)
        for row, res in zip(got["attention"], expected):
            np.testing.assert_allclose(np.asarray(row)[: len(res["tokens"])], res["attention"], atol=1e-5)
    assert outputs["litert"]["captions"] == outputs["1"]["captions"]
    assert len(set(np.round(outputs["3"]["scores"], 4))) > 1


def test_a_loaded_model_is_named_by_its_class():
    """Bundles and the captioner name a model by its class, not by the feature it reads (the
    Transformer reads the grid like the attention model; its bundle said "attention")."""
    from tests.helpers import tiny_captioner

    assert model_type_of(make_model()).name == "transformer"
    assert model_type_of(tiny_captioner("attention")).name == "attention"
    assert model_type_of(tiny_captioner("merge")).name == "merge"
    assert model_type_of(make_model()).has_attention

