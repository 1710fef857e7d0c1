"""Shared helpers for the end-to-end and robustness tests: tiny configs in tmp folders."""

import hashlib
import os
import pathlib

import numpy as np

from keras_captioning.config import load_config

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")


def smoke_overrides(root, model="attention", run="run", **extra):
    """``--set`` strings for a seconds-long run whose files all live under ``root``."""
    root = pathlib.Path(root)
    items = {
        "data.root": root / "data",
        "features.out_dir": root / "features",
        "train.run_dir": root / run,
        "model.type": model,
        "train.epochs": 2,
    }
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]


def smoke_config(root, model="attention", run="run", **extra):
    return load_config(SMOKE, smoke_overrides(root, model, run, **extra))


def subprocess_env():
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def digest(row) -> str:
    return hashlib.sha1(np.ascontiguousarray(row).tobytes()).hexdigest()


def caption_pairs(batches):
    """Sorted (feature digest, caption without padding), one per caption row of training batches.

    Image-major batches are also checked: each image once, and an image's captions contiguous.
    """
    out = []
    for b in batches:
        features, captions = b["features"].numpy(), b["captions"].numpy()
        index = b["image_index"].numpy() if "image_index" in b else np.arange(len(captions))
        if "image_index" in b:
            assert sorted(set(index.tolist())) == list(range(len(features)))  # each image once ...
            assert len({digest(f) for f in features}) == len(features)  # ... and no image twice
            assert int((np.diff(index) != 0).sum()) == len(features) - 1  # its captions contiguous
        out += [(digest(features[row]), tuple(int(t) for t in caption if t)) for row, caption in zip(index, captions)]
    return sorted(out)


# ---------------------------------------------------------------- tiny models and a keras-hub-style harness

#: The tiny sizes every model test starts from (units 16, vocabulary 20, 4 regions of 8).
TINY = dict(vocab_size=20, feature_dim=8, num_regions=4, embedding_dim=8, units=16, attention_units=8)


#: One decoder layer: the multi-layer cache and the chosen map layer are test_models_transformer's.
TINY_TRANSFORMER = dict(model_dim=8, num_heads=2, ff_dim=16, num_layers=1, encoder_layers=1, max_positions=10)


def tiny_captioner(kind="attention", **overrides):
    """The one tiny-captioner factory of the tests: ``kind`` "attention" or "transformer" (read a
    grid (B, R, D)) or "merge" (a pooled (B, D) vector, dropout 0); ``overrides`` change any
    constructor argument."""
    from keras_captioning.models import AttentionCaptioner, TransformerCaptioner, build_merge_captioner

    if kind == "transformer":
        sizes = {k: TINY[k] for k in ("vocab_size", "feature_dim", "num_regions")}
        return TransformerCaptioner(**dict(sizes, **TINY_TRANSFORMER, **overrides))
    sizes = dict(TINY, **overrides)
    if kind == "merge":
        sizes.pop("num_regions")
        sizes.pop("attention_units")
        sizes.setdefault("dropout", 0.0)
        return build_merge_captioner(**sizes)
    return AttentionCaptioner(**sizes)


def tiny_inputs(kind="attention", batch=3, steps=5, seed=0, vocab_size=None, feature_dim=None, num_regions=None):
    """``{"features", "tokens"}`` for ``tiny_captioner(kind)``: tokens start with <start> (2), row 0 padded from 3."""
    vocab_size = vocab_size or TINY["vocab_size"]
    feature_dim = feature_dim or TINY["feature_dim"]
    num_regions = num_regions or TINY["num_regions"]
    rng = np.random.default_rng(seed)
    shape = (batch, feature_dim) if kind == "merge" else (batch, num_regions, feature_dim)
    features = rng.normal(size=shape).astype(np.float32)
    tokens = rng.integers(4, vocab_size, size=(batch, steps)).astype(np.int32)
    tokens[:, 0] = 2
    tokens[0, 3:] = 0
    return {"features": features, "tokens": tokens}


def _shapes(output):
    import keras

    return [tuple(x.shape) for x in keras.tree.flatten(output)]


def run_layer_test(cls, init_kwargs, call_args, expected_output_shapes):
    """Call a layer, check its output shapes, then its config: every constructor argument is
    in ``get_config``, ``from_config`` rebuilds the same config, and with the same weights the
    rebuilt layer gives the same outputs; ``keras.layers.serialize`` round-trips it."""
    import keras

    layer = cls(**init_kwargs)
    output = layer(*call_args)
    assert _shapes(output) == [tuple(s) for s in expected_output_shapes]
    config = layer.get_config()
    for key, value in init_kwargs.items():
        assert config[key] == value, key
    assert "dtype" in config
    clone = cls.from_config(config)
    assert clone.get_config() == config
    clone(*call_args)
    clone.set_weights(layer.get_weights())
    for a, b in zip(keras.tree.flatten(clone(*call_args)), keras.tree.flatten(output)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    assert type(keras.layers.deserialize(keras.layers.serialize(layer))) is cls
    return layer


def run_model_saving_test(model, inputs, path):
    """A ``.keras`` round trip: same class, config, outputs, greedy decodes; the loaded model trains."""
    import keras

    from keras_captioning.decoding import greedy_decode

    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded(inputs).numpy(), model(inputs).numpy())
    a, b = greedy_decode(model, inputs["features"], 6), greedy_decode(loaded, inputs["features"], 6)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    loaded.compile(optimizer=keras.optimizers.Adam(1e-3))
    batch = len(inputs["tokens"])
    captions = np.concatenate([inputs["tokens"], np.full((batch, 1), 3, np.int32)], axis=1)
    logs = loaded.train_on_batch({"features": inputs["features"], "captions": captions}, return_dict=True)
    assert set(logs) == {"loss", "accuracy", "perplexity"}
    return loaded


def _assert_mixed(model):
    assert model.dtype_policy.name == "mixed_float16"
    for layer in model.layers:
        if layer.name != "logits" and layer.weights:  # the logits stay float32
            assert layer.dtype_policy.name == "mixed_float16", layer.name


def run_precision_test(factory, inputs, path):
    """A captioner built under ``mixed_float16`` keeps that policy, in every sublayer with
    weights, through ``get_config``/``from_config`` and a ``.keras`` round trip made under
    the float32 global policy; its logits stay float32."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = factory()
        logits = model(inputs)
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.config.dtype_policy().name == "float32"
    assert logits.dtype.name == "float32"
    _assert_mixed(model)
    config = model.get_config()
    assert keras.dtype_policies.get(config["dtype"]).name == "mixed_float16"
    _assert_mixed(type(model).from_config(config))
    model.save(path)
    loaded = keras.saving.load_model(path)
    _assert_mixed(loaded)
    np.testing.assert_allclose(loaded(inputs).numpy(), logits.numpy(), atol=1e-6)
    return loaded


def tiny_patches_captioner(**decoding):
    """An untrained ``Captioner`` built in memory: the weight-free ``patches`` backbone (96 px,
    8 x 8 regions) and a tiny attention model; for tests of writers and loaders."""
    from keras_captioning.captioner import Captioner
    from keras_captioning.data.vocab import Vocabulary
    from keras_captioning.features.backbones import build_backbone

    backbone = build_backbone("patches", weights=None, image_size=96)
    vocab = Vocabulary(["<pad>", "<unk>", "<start>", "<end>", "red", "circle", "square"])
    model = tiny_captioner(vocab_size=len(vocab), feature_dim=backbone.output["grid"].shape[-1],
                           num_regions=None, units=8)
    return Captioner(model, backbone, vocab, 96, "grid", backbone_name="patches",
                     **dict({"max_length": 5, "beam": 1}, **decoding))


def copy_features(root, tmp_path):
    """A private copy of ``root/features`` (e.g. the shared tiny run's) in ``tmp_path``."""
    import shutil

    dest = tmp_path / "features"
    shutil.copytree(root / "features", dest)
    return dest


def first_shard(features, split="train"):
    """``(path of the first shard of split, manifest)`` of a features folder."""
    import json

    manifest = json.loads((features / "manifest.json").read_text())
    return features / manifest["shards"][split][0], manifest


def live_random_weights(model, seed=0):
    """Random weights that keep the signal alive through 16 blocks (He scale per fan-in; BatchNorm
    near identity), so every weight, and a transposed one, changes the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "BatchNormalization":
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.8, 1.2, n), rng.normal(0.1, 0.1, n),
                               rng.normal(0, 0.1, n), rng.uniform(0.8, 1.2, n)])
        elif layer.weights:
            weights = layer.get_weights()
            shape = weights[0].shape
            fan_in = {"Conv2D": np.prod(shape[:3]), "DepthwiseConv2D": np.prod(shape[:2])}.get(kind, shape[0])
            layer.set_weights([rng.normal(0, np.sqrt(2.0 / fan_in), w.shape) for w in weights])
