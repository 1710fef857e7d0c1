"""Backbone registry: grid/pooled shapes, weights handling, the offline ImageNet message."""

import keras
import numpy as np
import pytest

from keras_captioning.errors import CaptioningError
from keras_captioning.features import backbones
from keras_captioning.features.backbones import BACKBONES, build_backbone


def _shapes(model):
    return tuple(model.output["grid"].shape[1:]), tuple(model.output["pooled"].shape[1:])


@pytest.mark.parametrize(
    "name, image_size, alpha, grid, channels",
    [
        ("inception_v3", None, None, 64, 2048),  # 299 -> 8x8
        ("resnet50", None, None, 49, 2048),  # 224 -> 7x7
        ("resnet50", 299, None, 100, 2048),  # the study's notebook: 299 -> 10x10
        ("mobilenet", None, 0.25, 49, 256),  # 1024 * alpha
        ("mobilenet_v2", None, 0.35, 49, 1280),
        ("patches", None, None, 64, 294),
    ],
)
def test_grid_and_pooled_shapes(name, image_size, alpha, grid, channels):
    model = build_backbone(name, weights=None, image_size=image_size, alpha=alpha)
    assert _shapes(model) == ((grid, channels), (channels,))
    size = image_size or BACKBONES[name].image_size
    assert tuple(model.input.shape[1:]) == (size, size, 3)


@pytest.mark.parametrize("name, size", [("mobilenet_v2", 32), ("patches", 48)])
def test_pooled_is_the_mean_of_the_grid(name, size):
    model = build_backbone(name, weights="none", image_size=size, alpha=0.35 if name == "mobilenet_v2" else None)
    images = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    out = model(images)
    grid, pooled = np.asarray(out["grid"]), np.asarray(out["pooled"])
    assert grid.dtype == np.float32 and pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, grid.mean(axis=1), rtol=1e-5, atol=1e-5)


def test_patches_keep_colour_and_position():
    model = build_backbone("patches", weights=None)  # 96 -> 8x8 regions of 12x12 pixels
    image = np.full((1, 96, 96, 3), 255, "float32")  # white background: ink 0
    image[0, :12, 12:24] = (255, 0, 0)  # region (row 0, column 1) is red: ink (0, 1, 1)
    grid = np.asarray(model(image)["grid"])[0]
    pixels = backbones.PATCH_PIXELS**2 * 3
    np.testing.assert_allclose(grid[1, pixels:pixels + 3], [0, 1, 1], atol=1e-6)  # mean colour (ink)
    np.testing.assert_allclose(grid[0, pixels:pixels + 3], [0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(grid[1, pixels + 3:pixels + 5], [-0.625, -0.875])  # centre (x, y)
    np.testing.assert_allclose(grid[1, :3], [0, 1, 1], atol=1e-6)  # first pooled pixel
    detectors = grid[:, -backbones.PATCH_DETECTORS:]
    assert (detectors >= 0).all()  # ReLU channels
    assert not np.allclose(detectors[1], detectors[0])  # they respond to the red region
    again = np.asarray(build_backbone("patches", weights=None)(image)["grid"])[0]
    np.testing.assert_array_equal(grid, again)  # fixed, seeded projection: no weights to keep


def test_registry_errors():
    with pytest.raises(CaptioningError, match="unknown backbone 'vgg'.*inception_v3"):
        build_backbone("vgg", weights=None)
    with pytest.raises(CaptioningError, match="at least 75"):
        build_backbone("inception_v3", weights=None, image_size=64)
    with pytest.raises(CaptioningError, match="multiple of 24"):
        build_backbone("patches", weights=None, image_size=100)
    with pytest.raises(CaptioningError, match="alpha"):
        build_backbone("mobilenet", weights=None, alpha=0.3)


def test_weights_from_a_local_file(tmp_path):
    base = keras.applications.MobileNet(include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.25)
    for weight in base.weights:
        weight.assign(np.full(weight.shape, 0.01, weight.dtype))
    path = tmp_path / "mobilenet_025.weights.h5"
    base.save_weights(path)
    model = build_backbone("mobilenet", weights=str(path), image_size=32, alpha=0.25)
    loaded = model.get_layer(base.name).weights
    assert all(np.allclose(np.asarray(w), 0.01) for w in loaded)

    with pytest.raises(CaptioningError, match="weights file not found"):
        build_backbone("mobilenet", weights=str(tmp_path / "missing_notop.h5"), image_size=32, alpha=0.25)
    bad = tmp_path / "text.h5"
    bad.write_text("not hdf5")
    with pytest.raises(CaptioningError, match="could not load it into mobilenet"):
        build_backbone("mobilenet", weights=str(bad), image_size=32, alpha=0.25)
    with pytest.raises(CaptioningError, match="has no weights"):
        build_backbone("patches", weights=str(path))


def test_imagenet_download_failure_is_one_clear_error(monkeypatch):
    url = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/mobilenet_2_5_224_tf_no_top.h5"

    def offline(*args, **kwargs):
        raise Exception(f"URL fetch failure on {url}: None -- [Errno -2] Name or service not known")

    # Keras applications call keras.src.utils.file_utils.get_file, not the keras.utils alias.
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    with pytest.raises(CaptioningError) as info:
        build_backbone("mobilenet", weights="imagenet", alpha=0.25)
    message = str(info.value)
    assert "--set features.weights=/path/to/mobilenet_2_5_224_tf_no_top.h5" in message
    assert "--set features.weights=none" in message and "Name or service not known" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained traceback
    assert "\n" not in message
