"""The CLI end to end on the smoke config: features -> train (both models) -> evaluate ->
caption (+ attention map) -> compare, and the notebook API on the same run."""

import csv
import json
import os
import shutil

import pytest
from PIL import Image

from keras_captioning.cli import main
from keras_captioning.metrics.official_meteor import find_meteor_jar
from tests.helpers import SMOKE, smoke_overrides


def _cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _sets(items):
    return [x for item in items for x in ("--set", item)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Features and both models trained once for every test of this module."""
    root = tmp_path_factory.mktemp("e2e")
    runs = {}
    for model in ("attention", "merge"):
        assert main(["train", "--config", SMOKE, *_sets(smoke_overrides(root, model, f"run-{model}"))]) == 0
        runs[model] = str(root / f"run-{model}")
    return root, runs


def test_features_command_prints_where(tmp_path, capsys):
    code, out, _ = _cli(["features", "--config", SMOKE, *_sets(smoke_overrides(tmp_path))], capsys)
    assert code == 0
    assert f"manifest: {tmp_path / 'features' / 'manifest.json'}" in out
    manifest = json.loads((tmp_path / "features" / "manifest.json").read_text())
    assert manifest["backbone"] == "patches" and manifest["grid_shape"][0] == 64
    assert sum(c["images"] for c in manifest["counts"].values()) == 60


@pytest.mark.slow  # trains both models through the CLI
def test_run_directory_contents(trained):
    _, runs = trained
    for run in runs.values():
        for name in ("run.json", "config.yaml", "vocab.json", "manifest.json", "state.json",
                     "log.csv", "loss.png", "checkpoints/last.keras", "checkpoints/best.keras"):
            assert os.path.exists(os.path.join(run, name)), name
        assert os.listdir(os.path.join(run, "tensorboard", "train"))
        with open(os.path.join(run, "log.csv")) as fh:
            rows = list(csv.DictReader(fh))
        assert [r["epoch"] for r in rows] == ["0", "1"]
        assert {"loss", "accuracy", "perplexity", "val_loss"} <= set(rows[0])
        assert json.loads(open(os.path.join(run, "state.json")).read())["next_epoch"] == 2


@pytest.mark.slow  # trains both models through the CLI
def test_existing_run_is_not_overwritten(trained, capsys):
    root, runs = trained
    code, _, err = _cli(["train", "--config", SMOKE, *_sets(smoke_overrides(root, "attention", "run-attention"))],
                        capsys)
    assert code == 2 and "a run is already there; pass --resume" in err


@pytest.mark.slow  # trains both models through the CLI
def test_evaluate_writes_report(trained, capsys):
    _, runs = trained
    code, out, _ = _cli(["evaluate", "--run", runs["attention"], "--beam", "2"], capsys)
    assert code == 0
    ev = os.path.join(runs["attention"], "eval-test")
    preds = json.load(open(os.path.join(ev, "predictions.json")))
    assert preds and {"image_id", "caption"} == set(preds[0])
    scores = json.load(open(os.path.join(ev, "scores.json")))["scores"]
    for name in ("BLEU-1", "BLEU-4", "METEOR", "GLEU-1-4", "GLEU-1-2", "WER", "CIDEr-D", "ROUGE-L"):
        assert name in scores
    if shutil.which("java") and find_meteor_jar():  # the official scorer's column, where it can run
        assert 0 <= scores["METEOR-1.5"] <= 1
    report = open(os.path.join(ev, "report.md")).read()
    assert "| model | backbone | vocab | images | batch | epochs | BLEU-1 |" in report
    for panel in ("good", "fair", "bad"):
        with Image.open(os.path.join(ev, f"panel-{panel}.png")) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    assert "| BLEU-1 |" in out


@pytest.mark.slow  # trains both models through the CLI
def test_caption_cli_and_attention_map(trained, tmp_path, capsys):
    root, runs = trained
    image = sorted((root / "data" / "images").iterdir())[0]
    out_png = tmp_path / "att.png"
    code, out, _ = _cli(["caption", str(image), "--run", runs["attention"], "--beam", "2",
                         "--attention-map", str(out_png)], capsys)
    assert code == 0
    assert out.splitlines()[0].startswith(f"{image}\t")
    with Image.open(out_png) as im:
        assert im.size[0] > 100


@pytest.mark.slow  # trains both models through the CLI
def test_caption_bad_image_is_one_line_error(trained, tmp_path, capsys):
    _, runs = trained
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    code, _, err = _cli(["caption", str(bad), "--run", runs["attention"]], capsys)
    assert code == 2 and err.strip().startswith("error:") and "bad.jpg" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # trains both models through the CLI
def test_captioner_from_python_matches_batched(trained):
    import numpy as np

    from keras_captioning.captioner import Captioner

    root, runs = trained
    images = sorted((root / "data" / "images").iterdir())[:3]
    captioner = Captioner.from_run(runs["attention"])
    together = captioner.caption(images, beam=1)
    alone = [captioner.caption([p], beam=1)[0] for p in images]
    assert [r["caption"] for r in together] == [r["caption"] for r in alone]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in images]
    assert [r["caption"] for r in captioner.caption(arrays, beam=1)] == [r["caption"] for r in together]
    for r in together:
        assert r["attention"].shape == (len(r["tokens"]), 64)
        np.testing.assert_allclose(r["attention"].sum(-1), 1.0, atol=1e-4)


@pytest.mark.slow  # trains both models through the CLI
def test_compare_collects_runs(trained, tmp_path, capsys):
    _, runs = trained
    assert main(["evaluate", "--run", runs["merge"], "--beam", "1"]) == 0
    if not os.path.exists(os.path.join(runs["attention"], "eval-test", "scores.json")):
        assert main(["evaluate", "--run", runs["attention"]]) == 0
    capsys.readouterr()
    code, out, _ = _cli(["compare", runs["attention"], runs["merge"], "--out", str(tmp_path / "cmp")], capsys)
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "comparison.csv")))
    assert {r["model"] for r in rows} == {"attention", "vanilla (merge)"}
    assert "| run | model |" in (tmp_path / "cmp" / "comparison.md").read_text()
