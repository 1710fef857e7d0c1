"""The examples run (in smoke mode) so they cannot rot."""

import subprocess
import sys

import pytest

from keras_captioning.cli import main
from tests.helpers import REPO, SMOKE, smoke_overrides, subprocess_env


def _run(script, *args):
    out = subprocess.run([sys.executable, str(REPO / "examples" / script), *map(str, args)], cwd=REPO,
                         env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow  # a training run of its own
def test_extract_and_train_examples(tmp_path):
    out = _run("extract_features.py", "--smoke", "--out", tmp_path / "features")
    assert '"backbone": "patches"' in out
    out = _run("train_attention.py", "--smoke", "--features", tmp_path / "features")
    assert "saved" in out and (tmp_path / "attention.keras").exists()


@pytest.mark.slow
def test_caption_and_attention_map_examples(tmp_path):
    sets = [x for o in smoke_overrides(tmp_path, "attention", "run", **{"train.epochs": 1}) for x in ("--set", o)]
    assert main(["train", "--config", SMOKE, *sets]) == 0
    image = sorted((tmp_path / "data" / "images").glob("*.jpg"))[0]
    out = _run("caption_your_image.py", image, "--run", tmp_path / "run", "--beam", 2)
    assert out.startswith(f"{image}: ")
    out = _run("attention_maps.py", "--run", tmp_path / "run", "--images", tmp_path / "data" / "images" / "*.jpg",
               "--out", tmp_path / "att.png", "--count", 2)
    assert (tmp_path / "att-0.png").exists() and (tmp_path / "att-1.png").exists()
