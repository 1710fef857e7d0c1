"""One image decoder: a photo captioned through ``Captioner`` gets exactly the backbone input
the extractor produced for it, and ``caption`` on the test images writes the captions
``evaluate`` wrote for them with the same beam."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from keras_captioning.captioner import Captioner
from keras_captioning.cli import main
from keras_captioning.evaluate import evaluate_run
from keras_captioning.features.build import load_records
from keras_captioning.features.images import check_image
from keras_captioning.features.runner import _FeatureRunner


def _photos(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (75, 103, 3), dtype=np.uint8)
    paths = {}
    for name, mode, fmt in (("photo.jpg", "RGB", "JPEG"), ("photo.png", "RGB", "PNG"),
                            ("gray.png", "L", "PNG"), ("rgba.png", "RGBA", "PNG"), ("photo.tiff", "RGB", "TIFF")):
        image = Image.fromarray(pixels).convert(mode)
        image.save(tmp_path / name, fmt)
        paths[name] = str(tmp_path / name)
    return paths


@pytest.mark.parametrize("size", [64, 96])
@pytest.mark.parametrize("large", [False, True], ids=["normal", "large-image-path"])
def test_captioner_input_equals_extractor_input(tmp_path, size, large, monkeypatch):
    """Files and their bytes give the captioner the extractor's pixels, TIFF and large images included."""
    from keras_captioning.features import images

    if large:  # every image takes the large-image (PIL, at most 2 S per side) path
        monkeypatch.setattr(images, "LARGE_IMAGE_PIXELS", 100)
    paths = _photos(tmp_path)
    names = sorted(paths)
    runner = _FeatureRunner(model=None, image_size=size, dtype="float32", batch_size=len(names))
    checks = [check_image(paths[n]) for n in names]
    assert [c.use_pil for c in checks] == [large or n.endswith(".tiff") for n in names]  # both decoder paths
    (indices, extracted), = list(runner.images(range(len(names)), [paths[n] for n in names],
                                               [c.use_pil for c in checks]))
    assert sorted(indices.numpy().tolist()) == list(range(len(names)))
    captioner = Captioner(model=None, backbone=None, vocab=None, image_size=size, feature="grid")
    for index, image in zip(indices.numpy(), extracted.numpy()):
        pixels, _ = captioner.read_image(paths[names[index]])
        np.testing.assert_allclose(pixels.numpy(), image, rtol=0, atol=1e-6, err_msg=names[index])
        with open(paths[names[index]], "rb") as fh:
            from_bytes, _ = captioner.read_image(fh.read())
        np.testing.assert_allclose(from_bytes.numpy(), image, rtol=0, atol=1e-6, err_msg=f"{names[index]} bytes")


def test_caption_cli_equals_evaluate_predictions(tiny_run, copy_run, capsys):
    beam = 2
    result = evaluate_run(copy_run, beam=beam, metrics=["CIDEr-D"])  # the captions are the point
    with open(os.path.join(result["report_dir"], "predictions.json"), encoding="utf-8") as fh:
        expected = {str(p["image_id"]): p["caption"] for p in json.load(fh)}
    records = [r for r in load_records(tiny_run.cfg) if r.split == "test"]
    assert set(expected) == {str(r.image_id) for r in records}
    capsys.readouterr()
    assert main(["caption", "--run", copy_run, "--beam", str(beam), *[r.image_path for r in records]]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines() if "\t" in line]
    got = dict(lines)
    assert {str(r.image_id): got[r.image_path] for r in records} == expected
