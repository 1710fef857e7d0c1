"""CNN fine-tuning: ``EncoderCaptioner`` (the model), ``ImageCaptionSet`` (its data) and the
``finetune`` stage end to end on the smoke dataset, with a Lite0 whose random weights keep the
signal alive (``live_random_weights``), given as a local weights file as a user gives theirs.

Under ``-n 2`` the whole module runs in one worker (``ONE_WORKER_MODULES`` in conftest.py): its
module fixtures (the fine-tuned run, the traced model) are built once."""

import glob
import json
import os
import types

import keras
import numpy as np
import pytest

from keras_captioning.errors import CaptioningError
from keras_captioning.features.backbones import build_backbone
from keras_captioning.models.encoder_captioner import EncoderCaptioner, set_trainable_from
from tests.helpers import live_random_weights, smoke_config, tiny_captioner

SIZE = 64  # Lite0 at 64 px: a 2 x 2 x 1280 grid
FIRST = "blocks_15_expand_conv"  # the last block and the head learn


def _encoder(seed=0):
    encoder = build_backbone("efficientnet_lite0", weights=None, image_size=SIZE)
    for layer in encoder.layers:
        if isinstance(layer, keras.Model):
            live_random_weights(layer, seed)
    return encoder


def _model(encoder_lr=1e-3, first=FIRST, kind="attention"):
    keras.utils.set_random_seed(0)
    encoder = _encoder()
    set_trainable_from(encoder, first)
    captioner = tiny_captioner(kind, feature_dim=1280, num_regions=None if kind == "merge" else 4)
    model = EncoderCaptioner(encoder, captioner, feature="pooled" if kind == "merge" else "grid",
                             encoder_learning_rate=encoder_lr)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.build()
    model.optimizer.build(model.captioner_variables())
    return model


@pytest.fixture(scope="module")
def _built():
    """``_model()`` built, compiled and its train step traced once per module, with its initial
    weights and optimizer states (tracing Lite0's train step costs seconds; restoring, nothing)."""
    model = _model()
    initial = [v.numpy().copy() for v in model.weights]
    states = [v.numpy().copy() for opt in (model.optimizer, model.encoder_optimizer) for v in opt.variables]
    model.train_on_batch(_batch())  # traces the train step
    return model, initial, states


@pytest.fixture
def fresh(_built):
    """``_model()`` as just built (weights, both optimizers' steps, moments and rates): a factory
    ``fresh(encoder_lr=1e-3)`` that resets the module's traced model and returns it."""

    def reset(encoder_lr=1e-3):
        model, initial, states = _built
        for variable, value in zip(model.weights, initial):
            variable.assign(value)
        for variable, value in zip([v for opt in (model.optimizer, model.encoder_optimizer) for v in opt.variables],
                                   states):
            variable.assign(value)
        model.encoder_optimizer.learning_rate.assign(encoder_lr)
        assert int(model.optimizer.iterations.numpy()) == int(model.encoder_optimizer.iterations.numpy()) == 0
        return model

    return reset


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    captions = np.array([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0], [2, 8, 9, 10, 3]], np.int32)
    return {"features": pixels, "captions": captions, "image_index": np.array([0, 0, 1], np.int32)}


def _by_layer(encoder):
    from keras_captioning.models.encoder_captioner import _layers

    return {layer.name: [w.numpy().copy() for w in layer.weights] for layer in _layers(encoder)
            if layer.weights and not isinstance(layer, keras.Model)}


def test_only_the_upper_layers_learn_and_batchnorm_stays_frozen(fresh):
    model = fresh()
    before = _by_layer(model.encoder)
    learned = {v.path.split("/")[-2] for v in model.encoder_variables()}
    assert learned == {"blocks_15_expand_conv", "blocks_15_depthwise_conv", "blocks_15_project_conv", "head_conv"}
    for _ in range(2):
        model.train_on_batch(_batch())
    after = _by_layer(model.encoder)
    for name, weights in before.items():
        changed = any(not np.array_equal(a, b) for a, b in zip(weights, after[name]))
        assert changed == (name in learned), name  # BatchNorm (statistics and scale) never moves
    assert int(model.encoder_optimizer.iterations.numpy()) == 2 and int(model.optimizer.iterations.numpy()) == 2


def test_the_encoder_has_its_own_learning_rate(fresh):
    """Adam's step is the rate whatever the gradient's scale: the encoder's rate alone sets how far it moves."""
    moved = {}
    for lr in (1e-3, 1e-6):
        model = fresh(encoder_lr=lr)
        head = model.encoder.get_layer("efficientnet_lite0").get_layer("head_conv").kernel
        start = head.numpy().copy()
        model.train_on_batch(_batch())
        moved[lr] = float(np.abs(head.numpy() - start).max())
    assert moved[1e-3] == pytest.approx(1e-3, rel=0.05) and moved[1e-6] == pytest.approx(1e-6, rel=0.05)


def test_no_trainable_layer_trains_the_captioner_only():
    model = _model(first=None)
    assert model.encoder_variables() == []
    before = _by_layer(model.encoder)
    model.train_on_batch(_batch())
    assert all(all(np.array_equal(a, b) for a, b in zip(w, _by_layer(model.encoder)[n])) for n, w in before.items())


def test_unknown_first_layer_is_one_line():
    with pytest.raises(CaptioningError, match="finetune_from='blocks_99'.*no such layer"):
        set_trainable_from(_encoder(), "blocks_99")


@pytest.mark.slow  # a fine-tuned model's save and load (~5 s each); the encoder's own layers: the tests above
@pytest.mark.parametrize("kind", ["attention", "merge"])
def test_keras_round_trip_keeps_weights_trainable_layers_and_both_optimizers(kind, tmp_path, fresh):
    from keras_captioning.decoding import greedy_decode

    model = fresh() if kind == "attention" else _model(kind=kind)
    model.train_on_batch(_batch())
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is EncoderCaptioner
    assert json.loads(json.dumps(loaded.get_config())) == json.loads(json.dumps(model.get_config()))  # tuples -> lists
    assert [v.path for v in loaded.encoder_variables()] == [v.path for v in model.encoder_variables()]
    for opt in ("optimizer", "encoder_optimizer"):
        a, b = getattr(model, opt).variables, getattr(loaded, opt).variables
        assert len(a) == len(b) > 2 and all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a, b)), opt
    pixels = _batch()["features"]
    np.testing.assert_array_equal(greedy_decode(model, pixels, 6).tokens, greedy_decode(loaded, pixels, 6).tokens)
    # Decoding from pixels equals decoding the captioner from the encoder's features.
    np.testing.assert_array_equal(greedy_decode(model, pixels, 6).tokens,
                                  greedy_decode(model.captioner, model.encode(pixels).numpy(), 6).tokens)
    before, after = model.train_on_batch(_batch(1), return_dict=True), loaded.train_on_batch(_batch(1), return_dict=True)
    assert before == pytest.approx(after, rel=1e-5)  # the same next step: optimizer states carried over


def test_mixed_float16_trains_the_encoder_with_the_unscaled_gradient():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = _model()
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        head = model.encoder.get_layer("efficientnet_lite0").get_layer("head_conv").kernel
        start = head.numpy().copy()
        logs = model.train_on_batch(_batch(), return_dict=True)
    finally:
        keras.config.set_dtype_policy(previous)
    assert np.isfinite(logs["loss"])
    moved = float(np.abs(head.numpy() - start).max())
    assert moved == pytest.approx(1e-3, rel=0.05)  # one Adam step of the encoder's rate, not a scaled one


# ---------------------------------------------------------------- the data


def _records(tmp_path, n=5):
    from PIL import Image

    from keras_captioning.data.records import CaptionRecord

    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)).save(path)
        records.append(CaptionRecord(f"img{i}", str(path), ["a red ball"] * (i % 3 + 1) + [""], "train"))
    (tmp_path / "bad.jpg").write_text("not an image")
    records.append(CaptionRecord("bad", str(tmp_path / "bad.jpg"), ["a red ball"], "train"))
    records.append(CaptionRecord("missing", str(tmp_path / "nope.jpg"), ["a red ball"], "train"))
    return records


def test_image_caption_set_batches_images_once_with_all_their_captions(tmp_path, caplog):
    from keras_captioning.data.vocab import Vocabulary
    from keras_captioning.features.image_caption_set import ImageCaptionSet
    from keras_captioning.features.images import read_image, resize_image

    vocab = Vocabulary.build(["a red ball"], max_words=10)
    with caplog.at_level("WARNING"):
        data = ImageCaptionSet.from_records(_records(tmp_path), vocab, image_size=SIZE, name="train")
    assert len(data) == 5 and "bad.jpg" in caplog.text and "nope.jpg" in caplog.text  # logged skips
    assert [len(c) for c in data.captions] == [1, 2, 3, 1, 2]  # the empty caption (no word) left out
    seen = {}
    for batch in data.train_batches(2, seed=3):
        pixels, captions, index = (batch[k].numpy() for k in ("features", "captions", "image_index"))
        assert sorted(set(index.tolist())) == list(range(len(pixels)))  # each image once per batch
        assert captions.shape[1] == 5  # <start> a red ball <end>, trimmed to the batch's longest
        for row in range(len(pixels)):
            key = pixels[row].tobytes()
            assert key not in seen
            seen[key] = int((index == row).sum())
    assert sorted(seen.values()) == [1, 1, 2, 2, 3]  # every image, with every caption
    # The same pixels as the one image decoder (extraction, Captioner).
    first = next(iter(data.eval_batches(5)))
    expected = resize_image(read_image(data.paths[0], SIZE), SIZE).numpy()
    np.testing.assert_array_equal(first["features"].numpy()[0], expected)
    assert first["image_id"].numpy()[0] == b"img0" and list(first["references"].numpy()[1][:3]) == [b"a red ball"] * 2 + [b""]
    a = [b["features"].numpy().sum() for b in data.train_batches(2, seed=1)]
    assert a == [b["features"].numpy().sum() for b in data.train_batches(2, seed=1)]  # seeded order


# ---------------------------------------------------------------- the stage, end to end

@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    from keras_captioning.features.efficientnet_lite import efficientnet_lite
    from keras_captioning.training.trainer import train

    root = tmp_path_factory.mktemp("finetune")
    base = efficientnet_lite("lite0", (SIZE, SIZE, 3))
    live_random_weights(base)
    weights = str(root / "lite0.weights.h5")
    base.save_weights(weights)
    feats = {"features.backbone": "efficientnet_lite0", "features.weights": weights, "features.image_size": SIZE,
             "features.alpha": "null", "train.epochs": 1, "data.synthetic_images": 30}
    cfg = smoke_config(root, "attention", "ce", **feats)
    ce = train(cfg)
    ft_cfg = smoke_config(root, "attention", "ft", **{**feats, **{
        "train.objective": "finetune", "train.init_from": ce, "train.finetune_from": FIRST,
        "train.batch_size": 8, "train.encoder_learning_rate": 1e-3, "train.epochs": 2}})
    ft = train(ft_cfg)
    return types.SimpleNamespace(root=root, ce=ce, ft=ft, cfg=ft_cfg, weights=weights)


@pytest.fixture(scope="module")
def evaluated(finetuned):
    """``evaluate_run`` of the fine-tuned run's last checkpoint on test, greedy, made once: it
    encodes the split with the checkpoint's encoder (BLEU-4 only: no METEOR jar to start)."""
    from keras_captioning.evaluate import evaluate_run

    return evaluate_run(finetuned.ft, split="test", checkpoint="last", beam=1, metrics=["BLEU-4"])


@pytest.mark.slow  # the stage end to end (a CE run, then 2 fine-tuning epochs); its parts: the unit tests above
def test_finetune_run_holds_its_encoder_and_evaluate_uses_it(finetuned, evaluated):
    from keras_captioning.data.pipeline import make_eval_dataset
    from keras_captioning.evaluate import evaluate_run, load_model
    from keras_captioning.features.build import load_records
    from keras_captioning.features.images import read_image, resize_image
    from keras_captioning.run_directory import RunDirectory

    run = RunDirectory(finetuned.ft)
    info = run.info()
    assert info["objective"] == "finetune" and info["init_from"] == finetuned.ce
    last = load_model(finetuned.ft, "last")
    assert isinstance(last, EncoderCaptioner)
    base = last.encoder.get_layer("efficientnet_lite0")
    fresh = build_backbone("efficientnet_lite0", weights=finetuned.weights, image_size=SIZE)
    init = fresh.get_layer("efficientnet_lite0")
    assert not np.array_equal(base.get_layer("head_conv").kernel.numpy(), init.get_layer("head_conv").kernel.numpy())
    np.testing.assert_array_equal(base.get_layer("stem_conv").kernel.numpy(), init.get_layer("stem_conv").kernel.numpy())
    assert int(last.encoder_optimizer.iterations.numpy()) > 0

    encoded = run.encoded_dir("last")
    assert evaluated["meta"]["num_images"] > 0
    # The features it scored were made by the checkpoint's encoder, not by the weights file it started from.
    shards = sorted(glob.glob(f"{encoded}/test/test-*.tfrecord"))
    batch = next(iter(make_eval_dataset(shards, 4, feature="grid")))
    paths = {r.image_id: r.image_path for r in load_records(finetuned.cfg)}
    pixels = resize_image(read_image(paths[batch["image_id"].numpy()[0].decode()], SIZE), SIZE).numpy()[None]
    np.testing.assert_allclose(batch["features"].numpy()[0], last.encode(pixels).numpy()[0], rtol=2e-3, atol=2e-3)
    assert np.abs(batch["features"].numpy()[0] - fresh(pixels)["grid"].numpy()[0]).max() > 1e-2
    # Reused while the checkpoint is unchanged.
    mtimes = [os.path.getmtime(p) for p in shards]
    evaluate_run(finetuned.ft, split="test", checkpoint="last", beam=1, overwrite=True, metrics=["BLEU-4"])
    assert mtimes == [os.path.getmtime(p) for p in shards]


@pytest.mark.slow  # reads the end-to-end fine-tuned run
def test_captioner_and_bundle_use_the_fine_tuned_encoder(finetuned, evaluated, tmp_path):
    from keras_captioning.captioner import Captioner
    from keras_captioning.evaluate import load_model
    from keras_captioning.features.build import load_records

    captioner = Captioner.from_run(finetuned.ft, checkpoint="last")
    last = load_model(finetuned.ft, "last")
    for a, b in zip(captioner.backbone.weights, last.encoder.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    paths = {r.image_id: r.image_path for r in load_records(finetuned.cfg)}
    decoded = evaluated["decoded"][:4]
    captions = captioner.caption([paths[d["image_id"]] for d in decoded], beam=1)
    assert [c["caption"] for c in captions] == [d["caption"] for d in decoded]
    bundle = Captioner.load(captioner.save(str(tmp_path / "bundle")))
    assert [c["caption"] for c in bundle.caption([paths[d["image_id"]] for d in decoded], beam=1)] == \
        [d["caption"] for d in decoded]


@pytest.mark.slow  # a third fine-tuning epoch; the stage itself: the two tests above
def test_resume_continues_both_optimizers(finetuned, tmp_path):
    import shutil

    from keras_captioning.config import load_config
    from keras_captioning.evaluate import load_model
    from keras_captioning.run_directory import RunDirectory
    from keras_captioning.training.callbacks import read_checkpoint
    from keras_captioning.training.trainer import train

    run_dir = tmp_path / "ft"
    shutil.copytree(finetuned.ft, run_dir)
    steps = int(load_model(str(run_dir), "last").encoder_optimizer.iterations.numpy())
    cfg = load_config(RunDirectory(str(run_dir)).config_path,
                      [f"train.run_dir={run_dir}", "train.epochs=3", "train.early_stopping_patience=null"])
    train(cfg, resume=True)
    last = read_checkpoint(RunDirectory(str(run_dir)).checkpoint("last"))  # compiled: both optimizers
    assert int(last.encoder_optimizer.iterations.numpy()) == int(last.optimizer.iterations.numpy()) == steps * 3 // 2


@pytest.mark.slow  # trains on the end-to-end fine-tuned run
def test_finetune_settings_are_checked(finetuned, tmp_path):
    from keras_captioning.training.trainer import train

    with pytest.raises(CaptioningError, match="finetune_from"):
        smoke_config(tmp_path, **{"train.objective": "finetune", "train.init_from": finetuned.ce})
    cfg = smoke_config(finetuned.root, "attention", "ft2", **{
        "features.backbone": "efficientnet_lite0", "features.weights": finetuned.weights, "features.image_size": SIZE,
        "features.alpha": "null", "train.objective": "finetune", "train.init_from": finetuned.ft,
        "train.finetune_from": FIRST, "data.synthetic_images": 30})
    with pytest.raises(CaptioningError, match="is a fine-tuning run"):
        train(cfg)
    with pytest.raises(CaptioningError, match="no such layer"):
        train(smoke_config(finetuned.root, "attention", "ft3", **{
            "features.backbone": "efficientnet_lite0", "features.weights": finetuned.weights,
            "features.image_size": SIZE, "features.alpha": "null", "train.objective": "finetune",
            "train.init_from": finetuned.ce, "train.finetune_from": "blocks_99", "data.synthetic_images": 30}))



def test_plateau_schedule_decays_the_encoder_rate_too(fresh):
    from keras_captioning.training.selection import MetricSchedule

    model = fresh(encoder_lr=1e-4)
    schedule = MetricSchedule("val_cider_d", "max", lr_factor=0.5, lr_patience=1)
    schedule.set_model(model)
    schedule.on_epoch_end(0, {"val_cider_d": 0.5})
    schedule.on_epoch_end(1, {"val_cider_d": 0.4})
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(5e-4)
    assert float(model.encoder_optimizer.learning_rate.numpy()) == pytest.approx(5e-5)


@pytest.mark.slow  # a fresh process on the end-to-end fine-tuned run
def test_a_fresh_process_loads_the_checkpoint(finetuned):
    """Only what every loader imports (``keras_captioning.models``) registers the class."""
    import subprocess
    import sys

    from keras_captioning.run_directory import RunDirectory
    from tests.helpers import subprocess_env

    code = ("import sys; from keras_captioning.training.callbacks import read_checkpoint; "
            "print(type(read_checkpoint(sys.argv[1], compile=False)).__name__)")
    out = subprocess.run([sys.executable, "-c", code, RunDirectory(finetuned.ft).checkpoint("last")],
                         capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "EncoderCaptioner", out.stderr[-2000:]
