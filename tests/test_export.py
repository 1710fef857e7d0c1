"""Export: SavedModel (greedy and beam) and LiteRT of both smoke models, reloaded in a Python
that cannot import keras_captioning, give exactly ``Captioner.caption``'s captions; and an
``--out`` the file system refuses ends in one error line, leaving nothing half-written."""

import errno
import json
import os
import re
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
from PIL import Image

from keras_captioning.captioner import Captioner
from keras_captioning.cli import main
from keras_captioning.errors import CaptioningError
from keras_captioning.export.litert import export_litert
from keras_captioning.export.saved_model import export_saved_model
from keras_captioning.training.trainer import train
from tests.helpers import smoke_config, tiny_patches_captioner

# The parity tests: two trained smoke runs, exported four ways and reloaded in subprocesses:
# about a minute on 2 cores, so they run with the slow tests (CI runs those too).

MAX_LENGTH = 10
BEAMS = (1, 3)

# Runs in `python -I -S` with only site-packages on sys.path: no .pth files, so not even the
# editable install of keras_captioning is visible; TensorFlow and NumPy are.
ISOLATED = r"""
import json, sys
sys.path.append(sys.argv[1])
try:
    import keras_captioning  # noqa: F401
    print("keras_captioning is importable"); sys.exit(3)
except ImportError:
    pass
import numpy as np
import tensorflow as tf

job = json.load(open(sys.argv[2]))
data = tf.constant([open(p, "rb").read() for p in job["images"]])
out = {}
for name, path in job["saved_models"].items():
    serve = tf.saved_model.load(path).signatures["serving_default"]
    res = serve(images=data)
    out[name] = {k: v.numpy().tolist() for k, v in res.items() if k != "captions"}
    out[name]["captions"] = [c.decode("utf-8") for c in res["captions"].numpy()]
    out[name]["signature"] = {"inputs": str(serve.structured_input_signature), "outputs": sorted(res)}
for name, path in job["litert"].items():
    info = json.load(open(path + ".json"))
    size = info["image_size"]
    pixels = np.stack([tf.image.resize(tf.io.decode_image(open(p, "rb").read(), channels=3,
                                                          expand_animations=False), (size, size)).numpy()
                       for p in job["images"]])
    runner = tf.lite.Interpreter(model_path=path).get_signature_runner("serving_default")
    res = runner(pixels=pixels)
    words = info["id_to_word"]
    out[name] = {k: v.tolist() for k, v in res.items()}
    out[name]["captions"] = [" ".join(words[t] for t in row if t != info["pad_id"]) for row in res["tokens"]]
json.dump(out, open(sys.argv[3], "w"))
"""


@pytest.fixture(scope="module")
def captioner():
    return tiny_patches_captioner()


def test_export_out_naming_an_existing_file(captioner, tmp_path, copy_run, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    with pytest.raises(CaptioningError, match="^" + re.escape(f"{taken}: is a file; --out names the folder")):
        export_saved_model(captioner, str(taken))
    assert main(["export", "--run", copy_run, "--out", str(taken)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {taken}: is a file; --out names the folder to create for the SavedModel"]
    with pytest.raises(CaptioningError, match="^" + re.escape(f"{taken}: exists; choose a new file name")):
        export_litert(captioner, str(taken))
    assert taken.read_text() == "a file"


@pytest.mark.parametrize("kind", ["saved_model", "litert", "bundle"])
def test_export_below_a_file_is_one_line(captioner, tmp_path, kind):
    """A parent that is a file (NotADirectoryError): one CaptioningError naming the path."""
    (tmp_path / "taken").write_text("a file")
    out = tmp_path / "taken" / ("x.tflite" if kind == "litert" else "x")
    write = {"saved_model": export_saved_model, "litert": export_litert,
             "bundle": lambda c, o: c.save(o)}[kind]
    with pytest.raises(CaptioningError) as caught:
        write(captioner, str(out))
    message = str(caught.value)
    assert "\n" not in message and ("a directory" in message or "not a folder" in message), message
    assert message.startswith((f"{out}: cannot write it (", f"{out.parent}: is a file, not a folder")), message


def test_saved_model_on_a_full_disk_leaves_no_folder(captioner, tmp_path, monkeypatch):
    from keras_captioning.export import saved_model

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    # The export's one write (patching tf.saved_model.save did not take effect when this test ran
    # alone in a fresh process, as under pytest-xdist: the export then succeeded)
    monkeypatch.setattr(saved_model, "_write_archive", full)
    out = tmp_path / "sm"
    message = "^" + re.escape(f"{out}: cannot write it (No space left on device)") + "$"
    with pytest.raises(CaptioningError, match=message):
        export_saved_model(captioner, str(out))
    assert os.listdir(tmp_path) == []  # neither the folder nor its temporary


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Both smoke models trained, exported (4 SavedModels, 2 LiteRT files) and run in isolation."""
    root = tmp_path_factory.mktemp("export")
    captioners = {}
    for model in ("attention", "merge"):
        train(smoke_config(root, model, f"run-{model}", **{"train.epochs": 3}))
        captioners[model] = Captioner.from_run(str(root / f"run-{model}"))
    images = [str(p) for p in sorted((root / "data" / "images").iterdir())[:7]]
    with Image.open(images[0]) as im:  # a PNG and a grayscale one: other decode paths
        im.save(root / "color.png")
        im.convert("L").save(root / "gray.png")
    images += [str(root / "color.png"), str(root / "gray.png")]

    job = {"images": images, "saved_models": {}, "litert": {}}
    for model, captioner in captioners.items():
        for beam in BEAMS:
            out = str(root / f"sm-{model}-{beam}")
            export_saved_model(captioner, out, beam=beam, max_length=MAX_LENGTH)
            job["saved_models"][f"{model}-{beam}"] = out
        out = str(root / f"{model}.tflite")
        export_litert(captioner, out, max_length=MAX_LENGTH)
        job["litert"][f"{model}-litert"] = out
    (root / "job.json").write_text(json.dumps(job))
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # cwd without the repository
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(elsewhere), "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", ISOLATED, sysconfig.get_paths()["purelib"], str(root / "job.json"),
         str(root / "out.json")],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return captioners, images, json.loads((root / "out.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("model", ["attention", "merge"])
@pytest.mark.parametrize("beam", BEAMS)
def test_saved_model_matches_captioner(exported, model, beam):
    captioners, images, outputs = exported
    got = outputs[f"{model}-{beam}"]
    expected = captioners[model].caption(images, beam=beam, max_length=MAX_LENGTH)
    assert got["captions"] == [r["caption"] for r in expected]
    np.testing.assert_allclose(got["scores"], [r["score"] for r in expected], rtol=1e-5, atol=1e-5)
    assert [row[:n] for row, n in zip(got["tokens"], got["lengths"])] == [r["tokens"] for r in expected]
    assert "images" in got["signature"]["inputs"] and "string" in got["signature"]["inputs"]
    if model == "attention":
        assert set(got["signature"]["outputs"]) == {"captions", "scores", "tokens", "lengths", "attention"}
        for row, res in zip(got["attention"], expected):
            np.testing.assert_allclose(np.asarray(row)[: len(res["tokens"])], res["attention"], atol=1e-5)
    else:
        assert "attention" not in got["signature"]["outputs"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["attention", "merge"])
def test_litert_greedy_matches_saved_model(exported, model):
    _, _, outputs = exported
    lite, saved = outputs[f"{model}-litert"], outputs[f"{model}-1"]
    assert lite["captions"] == saved["captions"]
    assert lite["tokens"] == saved["tokens"]
    np.testing.assert_allclose(lite["scores"], saved["scores"], rtol=1e-4, atol=1e-4)
    assert ("attention" in lite) == (model == "attention")


@pytest.mark.slow
def test_captions_are_not_all_the_same(exported):
    """The parity above would be weak if every image got one caption; the scores at least differ."""
    _, _, outputs = exported
    assert len(set(np.round(outputs["attention-3"]["scores"], 4))) > 1
