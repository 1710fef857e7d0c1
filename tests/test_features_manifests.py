"""Feature manifests: shard sizes and checksums (damaged shards found and extracted again), skips listed."""

import json
import logging
import os

import pytest

from keras_captioning.features.build import build_features
from tests.helpers import copy_features, first_shard, smoke_config


def test_manifest_records_size_and_checksum_of_everyfirst_shard(root):
    manifest = json.loads((root / "features" / "manifest.json").read_text())
    for names in manifest["shards"].values():
        for name in names:
            stats = manifest["shard_stats"][name]
            assert stats["bytes"] == os.path.getsize(root / "features" / name)
            assert len(stats["sha256"]) == 64


@pytest.mark.parametrize("damage", ["truncate", "extend", "flip"])
def test_damaged_shard_is_detected_and_extracted_again(root, tmp_path, damage, caplog):
    features = copy_features(root, tmp_path)
    path, manifest = first_shard(features)
    good = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "extend":
        path.write_bytes(good + b"\0" * 100)
    else:  # same size, one byte changed: only the checksum can tell
        path.write_bytes(good[:200] + bytes([good[200] ^ 0xFF]) + good[201:])
    cfg = smoke_config(root, **{"features.out_dir": features})
    with caplog.at_level(logging.WARNING):
        build_features(cfg)
    assert f"{path}: " in caplog.text and "it will be extracted again" in caplog.text
    assert path.read_bytes() == good  # redone, identically (the other shards were kept)


def test_manifest_without_checksums_is_still_accepted(root, tmp_path):
    features = copy_features(root, tmp_path)
    manifest = json.loads((features / "manifest.json").read_text())
    for stats in manifest["shard_stats"].values():
        del stats["sha256"]  # as written before checksums existed
    (features / "manifest.json").write_text(json.dumps(manifest))
    path, _ = first_shard(features)
    before = os.stat(path).st_mtime_ns
    build_features(smoke_config(root, **{"features.out_dir": features}))
    assert os.stat(path).st_mtime_ns == before  # not re-extracted
    path.write_bytes(path.read_bytes()[:-10])  # but still size-checked
    from keras_captioning.features.feature_folder import FeatureFolder

    assert not FeatureFolder(features).is_complete()


def test_dataset_skips_are_listed_in_the_manifest(tmp_path):
    cfg = smoke_config(tmp_path)
    from keras_captioning.features.build import load_records

    load_records(cfg)  # generates the synthetic dataset
    captions = tmp_path / "data" / "captions.json"
    data = json.loads(captions.read_text())
    first, second = data["images"][0], data["images"][1]
    data["images"].append(dict(first))  # a duplicate id
    data["annotations"].append({"id": 10**6, "image_id": 10**6, "caption": "an orphan"})
    os.remove(tmp_path / "data" / "images" / second["file_name"])  # a missing image file
    captions.write_text(json.dumps(data))
    manifest = build_features(cfg)
    reasons = {(str(s["image_id"]), s["reason"].split(" (")[0]) for s in manifest["skipped"]}
    assert (str(first["id"]), "image id repeats an earlier image; kept the first") in reasons
    assert (str(second["id"]), "file not found") in reasons
    assert any(i == str(10**6) and "image_id is not in 'images'" in r for i, r in reasons)
    assert manifest["num_skipped"] == len(manifest["skipped"]) >= 3
