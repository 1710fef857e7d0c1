"""Flickr30k through Karpathy's ``dataset_flickr30k.json``: the committed config reads a tiny
file in that format (the loader that reads ``dataset_flickr8k.json``) with Karpathy's split."""

import json

from keras_captioning.config import load_config
from keras_captioning.features.build import load_records
from tests.helpers import REPO


def write_flickr30k_fixture(root):
    """Four images with Karpathy's Flickr30k fields: numeric file names, ``imgid``, ``sentids``."""
    (root / "images").mkdir(parents=True)
    entries = []
    for i, split in enumerate(["train", "train", "val", "test"]):
        name = f"{1000092795 + i}.jpg"
        (root / "images" / name).write_bytes(b"\xff\xd8")  # the loader checks that it exists, not its pixels
        raws = [f"Two young guys with shaggy hair look at their hands {k}." for k in range(5)]
        sentences = [{"tokens": raw.lower().rstrip(".").split(), "raw": raw, "imgid": i, "sentid": 5 * i + k}
                     for k, raw in enumerate(raws)]
        entries.append({"sentids": [5 * i + k for k in range(5)], "imgid": i, "sentences": sentences,
                        "split": split, "filename": name})
    path = root / "dataset_flickr30k.json"
    path.write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))
    return path


def test_flickr30k_config_reads_karpathy_split_file(tmp_path):
    split_file = write_flickr30k_fixture(tmp_path / "flickr30k")
    cfg = load_config(str(REPO / "configs" / "flickr30k_attention.yaml"),
                      [f"data.captions={split_file}", f"data.images={tmp_path / 'flickr30k' / 'images'}"])
    assert cfg.data.format == "karpathy" and cfg.data.splits is None and cfg.model.type == "attention"
    assert cfg.run_dir == "runs/flickr30k_attention" and cfg.features_dir == "features/flickr30k-mobilenet_025"
    records = sorted(load_records(cfg), key=lambda r: int(r.image_id))
    assert [(r.image_id, r.split) for r in records] == [("0", "train"), ("1", "train"), ("2", "val"), ("3", "test")]
    assert records[0].image_path == str(tmp_path / "flickr30k" / "images" / "1000092795.jpg")
    assert records[3].captions[4] == "Two young guys with shaggy hair look at their hands 4."


def test_flickr30k_config_paths_are_the_documented_ones():
    cfg = load_config(str(REPO / "configs" / "flickr30k_attention.yaml"))
    assert cfg.data.captions == "data/flickr30k/dataset_flickr30k.json"
    assert cfg.data.images == "data/flickr30k/images" and cfg.data.vocab_size == 7000
