"""The README's "Train on your own photos" path end to end: a folder of photos and a caption table
with its own column names (and a few bad rows) go through ``features``, ``train`` and ``evaluate``
with ``configs/custom_example.yaml``, changing only paths and sizes (random encoder weights)."""

import json

import numpy as np
import pytest
from PIL import Image

from keras_captioning.cli import main
from tests.helpers import REPO

CONFIG = str(REPO / "configs" / "custom_example.yaml")
WORDS = "a dog man woman runs sits on the grass beach water red blue ball".split()
IMAGES = 20


def write_photo_table(root):
    """``root/photos/`` with IMAGES JPEGs (two in a subfolder) and ``root/photos.csv`` (columns
    file, text; 3 captions an image) plus 4 bad rows: an empty caption, a missing file, a text
    file named .jpg and a caption in Latin-1."""
    rng = np.random.default_rng(0)
    photos = root / "photos"
    (photos / "holiday").mkdir(parents=True)
    lines = ["id,file,text"]
    for i in range(IMAGES):
        name = f"holiday/img{i}.jpg" if i < 2 else f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(photos / name)
        for k in range(3):
            words = " ".join(str(w) for w in rng.choice(WORDS, size=int(rng.integers(3, 8))))
            lines.append(f'{i}-{k},{name},"{words.capitalize()}, today."')
    (photos / "notes.jpg").write_text("not an image")
    lines += ["90,img3.jpg,", "91,gone.jpg,A dog that is not there.", "92,notes.jpg,A note."]
    data = ("\n".join(lines) + "\n").encode() + "93,img4.jpg,Un chien près du café.\n".encode("latin-1")
    (root / "photos.csv").write_bytes(data)
    return root / "photos.csv", photos


def overrides(root, table, photos):
    sets = {
        "data.captions": table, "data.images": photos, "data.image_column": "file",
        "data.caption_column": "text", "features.weights": "none", "features.out_dir": root / "features",
        "features.batch_size": 8, "train.run_dir": root / "run", "train.epochs": 2, "train.batch_size": 8,
        "model.embedding_dim": 8, "model.units": 16, "model.attention_units": 8, "eval.max_length": 8,
    }
    return [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]


def test_features_on_a_photo_table_list_the_skipped_rows(tmp_path, capsys):
    table, photos = write_photo_table(tmp_path)
    assert main(["features", "--config", CONFIG, *overrides(tmp_path, table, photos)]) == 0
    assert "skipped 4" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "features" / "manifest.json").read_text())
    counts = {s: c["images"] for s, c in manifest["counts"].items()}
    assert sum(counts.values()) == IMAGES and set(counts) == {"train", "val", "test"}  # the seeded split
    reasons = {s["image_id"]: s["reason"] for s in manifest["skipped"]}
    assert reasons["img3.jpg"].startswith("row 62: empty caption")
    assert reasons["img4.jpg"].startswith("row 65: not valid UTF-8")
    assert reasons["gone.jpg"].startswith("file not found")
    assert "notes.jpg" in reasons and "notes.jpg" not in json.dumps(manifest["counts"])


@pytest.mark.slow  # trains
def test_photo_table_trains_and_evaluates_with_only_the_config(tmp_path, capsys):
    table, photos = write_photo_table(tmp_path)
    args = overrides(tmp_path, table, photos)
    assert main(["features", "--config", CONFIG, *args]) == 0
    assert main(["train", "--config", CONFIG, *args]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--run", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert "| distinct | vocab used | novel | Div-1 | Div-2 | length | ref length |" in printed
    report_dir = tmp_path / "run" / "eval-test"
    scores = json.loads((report_dir / "scores.json").read_text())["scores"]
    assert 1 <= scores["distinct"] <= 2 and 0.0 <= scores["novel"] <= 1.0  # 2 test images
    assert scores["ref length"] == pytest.approx(6.5, abs=2.5)  # 3..7 words + "today"
    report = (report_dir / "report.md").read_text()
    assert "## Skipped rows and images (4)" in report
    assert "- `gone.jpg` (before the split): file not found" in report
    assert "`notes.jpg`" in report and "row 62: empty caption" in report


def test_make_photo_table_example_writes_a_table_the_loader_reads(tmp_path):
    import subprocess
    import sys

    from keras_captioning.data import load_table
    from tests.helpers import subprocess_env

    (tmp_path / "src").mkdir()
    entries = []
    for i in range(4):
        Image.new("RGB", (8, 8)).save(tmp_path / "src" / f"{i}.jpg")
        entries.append({"filename": f"{i}.jpg", "split": "train", "imgid": i,
                        "sentences": [{"raw": f"A photo number {i}.", "tokens": []}, {"tokens": ["a", "red", "one"]}]})
    (tmp_path / "split.json").write_text(json.dumps({"images": entries}))
    out = subprocess.run([sys.executable, str(REPO / "examples" / "make_photo_table.py"), "--split-file",
                          str(tmp_path / "split.json"), "--images", str(tmp_path / "src"), "--out",
                          str(tmp_path / "mine"), "--count", "3"], env=subprocess_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--set data.image_column=photo --set data.caption_column=description" in out.stdout
    records = load_table(tmp_path / "mine" / "captions.csv", tmp_path / "mine" / "photos",
                         image_column="photo", caption_column="description")
    assert len(records) == 4 and records[-1].image_id == "notes.jpg"  # 3 photos + the text file
    assert all(len(r.captions) == 2 for r in records[:3]) and "a red one" in records[0].captions
