"""The committed Flickr8k configs end to end on a tiny fixture in the real (Karpathy) format.

The test writes a handful of JPEGs and a ``dataset_flickr8k.json`` with Karpathy's fields, then
runs ``train`` (features are built by it) and ``evaluate`` through the CLI with the committed
configs, changing only paths and sizes: the data path the README documents stays working in CI
without the real dataset or the ImageNet weights (a seeded random MobileNet or EfficientNet-Lite0 stands in).
"""

import json

import numpy as np
import pytest
from PIL import Image

from keras_captioning.cli import main
from tests.helpers import REPO

WORDS = "a dog man woman runs sits on the grass beach water red blue ball".split()


def write_karpathy_fixture(root, images=10):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    entries = []
    for i in range(images):
        name = f"{1000 + i}_{i:04x}.jpg"
        pixels = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / name, quality=90)
        split = "train" if i < images - 4 else ("val" if i < images - 2 else "test")
        sentences = []
        for k in range(5):
            tokens = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(3, 9)))]
            sentences.append({"tokens": tokens, "raw": " ".join(tokens).capitalize() + ".",
                              "imgid": i, "sentid": 5 * i + k})
        entries.append({"filename": name, "imgid": i, "split": split, "sentences": sentences,
                        "sentids": [5 * i + k for k in range(5)]})
    path = root / "dataset_flickr8k.json"
    path.write_text(json.dumps({"images": entries, "dataset": "flickr8k"}))
    return path


@pytest.mark.slow  # two training runs
@pytest.mark.parametrize("name, grid", [("flickr8k_attention", [49, 256]), ("flickr8k_vanilla", [49, 256]),
                                        ("flickr8k_lite0_attention", [49, 1280])])
def test_flickr8k_config_trains_and_evaluates(tmp_path, name, grid):
    split_file = write_karpathy_fixture(tmp_path / "flickr8k")
    sets = {
        "data.captions": split_file, "data.images": tmp_path / "flickr8k" / "images",
        "features.weights": "none", "features.out_dir": tmp_path / "features",
        "features.batch_size": 4, "train.run_dir": tmp_path / "run", "train.epochs": 2,
        "train.batch_size": 8, "model.embedding_dim": 8, "model.units": 16,
        "model.attention_units": 8, "model.merge_units": 16, "eval.max_length": 8,
    }
    args = [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]
    config = str(REPO / "configs" / f"{name}.yaml")
    assert main(["train", "--config", config, *args]) == 0
    manifest = json.loads((tmp_path / "features" / "manifest.json").read_text())
    assert {s: c["images"] for s, c in manifest["counts"].items()} == {"train": 6, "val": 2, "test": 2}
    assert manifest["grid_shape"] == grid  # MobileNet alpha 0.25 / EfficientNet-Lite0 at 224 px
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert "val_cider_d" in log[0] and len(log) == 3
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--beam", "2"]) == 0
    reports = list((tmp_path / "run").glob("eval-*/scores.json"))
    assert reports
    scores = json.loads(reports[0].read_text())
    assert scores["meta"]["split"] == "test" and scores["meta"]["num_images"] == 2
    assert {"BLEU-4", "CIDEr-D", "ROUGE-L"} <= set(scores["scores"])
