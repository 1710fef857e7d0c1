"""Captioner bundles (save/load on a fresh folder), caption of a folder with bad files
(issue 14: every readable image captioned, one stderr line per bad one, exit 2) and the
gallery page (optionally rendered by a headless chromium)."""

import json
import os
import re
import shutil
import subprocess
import tempfile

import keras
import numpy as np
import pytest
from PIL import Image

from keras_captioning.captioner import Captioner
from keras_captioning.cli import main
from keras_captioning.data.vocab import Vocabulary
from keras_captioning.errors import CaptioningError
from keras_captioning.features.backbones import build_backbone
from tests.helpers import tiny_captioner, tiny_patches_captioner


@pytest.fixture(scope="module")
def run(tiny_run):
    return tiny_run.root, tiny_run.run_dir


@pytest.fixture
def folder(run, tmp_path):
    """Ten images: eight good ones (JPEG and PNG), a text file named .jpg and an empty .png."""
    root, _ = run
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted((root / "data" / "images").iterdir())[:7]:
        shutil.copy(path, photos / path.name)
    with Image.open(next(photos.iterdir())) as im:
        im.save(photos / "zz-png.png")
    (photos / "bad.jpg").write_text("not an image")
    (photos / "empty.png").write_bytes(b"")
    (photos / "notes.txt").write_text("ignored: not an image extension")
    return photos


def test_bundle_round_trip_on_a_fresh_folder(run, folder, tmp_path, capsys):
    root, run_dir = run
    images = sorted(str(p) for p in folder.iterdir() if p.name[0] != "b" and p.suffix != ".txt"
                    and p.stat().st_size)
    original = Captioner.from_run(run_dir)
    original.save(str(tmp_path / "bundle"))
    moved = tmp_path / "elsewhere" / "my-captioner"
    shutil.copytree(tmp_path / "bundle", moved)
    shutil.rmtree(tmp_path / "bundle")
    meta = json.loads((moved / "captioner.json").read_text())
    assert str(root) not in json.dumps(meta)  # nothing points back at this machine's run
    assert meta["backbone"] == {"name": "patches", "image_size": 96, "alpha": None, "weights": None}
    assert meta["decoding"] == {"beam": 2, "max_length": 12, "length_penalty": 0.0}
    assert meta["package_version"] and meta["source"]["run"] == "run"

    loaded = Captioner.load(str(moved))
    before, after = original.caption(images, beam=2), loaded.caption(images)
    assert [r["caption"] for r in after] == [r["caption"] for r in before]
    np.testing.assert_allclose([r["score"] for r in after], [r["score"] for r in before], rtol=1e-6)

    assert main(["caption", "--bundle", str(moved), images[0]]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{images[0]}\t{before[0]['caption']}"


def test_bundle_keeps_random_backbone_weights(tmp_path):
    """A backbone with weights (here a random MobileNet) travels in the bundle."""
    keras.utils.set_random_seed(3)
    backbone = build_backbone("mobilenet", weights=None, image_size=64, alpha=0.25)  # 2 x 2 regions
    dim = backbone.output["grid"].shape[-1]
    vocab = Vocabulary(["<pad>", "<unk>", "<start>", "<end>", "red", "circle", "square"])
    model = tiny_captioner(vocab_size=len(vocab), feature_dim=dim, num_regions=None, units=8)
    captioner = Captioner(model, backbone, vocab, 64, "grid", max_length=5, beam=1, backbone_name="mobilenet",
                          alpha=0.25)
    images = [np.random.default_rng(i).integers(0, 255, (40, 50, 3), dtype=np.uint8) for i in range(3)]
    captioner.save(str(tmp_path / "b"))
    assert json.loads((tmp_path / "b" / "captioner.json").read_text())["backbone"]["weights"] == "backbone.weights.h5"
    keras.utils.set_random_seed(99)  # a rebuilt backbone would differ without the saved weights
    loaded = Captioner.load(str(tmp_path / "b"))
    np.testing.assert_array_equal(loaded.encode(captioner.load_images(images)[0]),
                                  captioner.encode(captioner.load_images(images)[0]))
    assert [r["score"] for r in loaded.caption(images)] == [r["score"] for r in captioner.caption(images)]


def test_one_bad_file_does_not_stop_the_others(run, folder, tmp_path, capsys):
    _, run_dir = run
    code = main(["caption", str(folder), "--run", run_dir, "--beam", "1", "--out", str(tmp_path / "report")])
    out, err = capsys.readouterr()
    assert code == 2
    captioned = [line.split("\t")[0] for line in out.splitlines() if "\t" in line]
    assert len(captioned) == 8 and all(os.path.exists(p) for p in captioned)
    errors = err.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"error: {folder / 'bad.jpg'}: not an image")
    assert errors[1].startswith(f"error: {folder / 'empty.png'}: empty file")

    page = (tmp_path / "report" / "index.html").read_text()
    markdown = (tmp_path / "report" / "gallery.md").read_text()
    assert "8 captioned, 2 not captioned." in page and "8 captioned, 2 not captioned." in markdown
    assert "bad.jpg" in page and "empty file (0 bytes)" in markdown
    assert len(os.listdir(tmp_path / "report" / "images")) == 8
    assert len(os.listdir(tmp_path / "report" / "attention")) == 8
    for line in out.splitlines():
        if "\t" in line:
            assert line.split("\t")[1] in page


@pytest.mark.slow  # a headless browser; the gallery's files: test_bundle_round_trip_on_a_fresh_folder
def test_gallery_in_a_headless_browser(run, folder, tmp_path, capsys):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed")
    _, run_dir = run
    main(["caption", str(folder), "--run", run_dir, "--out", str(tmp_path / "report")])
    capsys.readouterr()
    shot = tmp_path / "gallery.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        f"--user-data-dir={profile}", "--window-size=1400,1000", f"--screenshot={shot}",
                        f"file://{tmp_path / 'report' / 'index.html'}"],
                       capture_output=True, timeout=120, check=False)
    assert shot.exists()
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[:2] == (1000, 1400)
    assert pixels.std() > 10  # rendered content (images, text), not a blank page
    if os.environ.get("KC_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["KC_KEEP_SCREENSHOT"])


@pytest.mark.parametrize("damage", ["truncated", "foreign", "missing"])
def test_bundle_with_a_damaged_model_file_is_one_error_line(tmp_path, damage, capsys):
    bundle = tmp_path / "bundle"
    tiny_patches_captioner().save(str(bundle))
    model_file = bundle / "model.keras"
    if damage == "truncated":
        model_file.write_bytes(model_file.read_bytes()[:1000])
    elif damage == "foreign":  # a complete zip that is not a Keras model
        import zipfile

        model_file.unlink()
        with zipfile.ZipFile(model_file, "w") as zf:
            zf.writestr("notes.txt", "not a model")
    else:
        model_file.unlink()
    with pytest.raises(CaptioningError, match="^" + re.escape(f"{model_file}: ")):
        Captioner.load(str(bundle))
    image = tmp_path / "red.png"
    Image.new("RGB", (30, 20), (200, 10, 10)).save(image)
    assert main(["caption", "--bundle", str(bundle), str(image)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith(f"error: {model_file}: "), err


def test_gallery_and_figures_below_a_file_are_one_line(tmp_path):
    from keras_captioning.gallery import write_gallery
    from keras_captioning.viz import plot_attention

    taken = tmp_path / "taken"
    taken.write_text("a file")
    results = tiny_patches_captioner().caption([np.zeros((20, 30, 3), np.uint8)])
    with pytest.raises(CaptioningError, match="^" + re.escape(f"{taken / 'g' / 'images'}: cannot write it (")):
        write_gallery(results, str(taken / "g"))
    with pytest.raises(CaptioningError, match="^" + re.escape(f"{taken / 'a.png'}: cannot write it (")):
        plot_attention(results[0]["image"], ["x"], np.ones((1, 64)) / 64,
                       str(taken / "a.png"))
    assert taken.read_text() == "a file" and sorted(os.listdir(tmp_path)) == ["taken"]
