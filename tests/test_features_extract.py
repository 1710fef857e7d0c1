"""extract_features: shard round trip, resume, worker shares, bad and huge images.

Everything runs the weight-free ``patches`` backbone on tiny images; its region features
include each region's mean colour (dims 27:30, scaled to [0, 1]), so the pooled vector of
a one-colour image tells which RGB value the decoder produced.
"""

import json
import logging
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_captioning import __version__
from keras_captioning.data.records import CaptionRecord
from keras_captioning.data.shards import read_manifest
from keras_captioning.data.tfrecords import ExampleDecoder
from keras_captioning.data.vocab import Vocabulary
from keras_captioning.errors import CaptioningError
from keras_captioning.features import extract, runner
from keras_captioning.features.backbones import PATCH_PIXELS, build_backbone
from keras_captioning.features.extract import ImageCheck, extract_features, finalize_manifest

COLOUR = slice(3 * PATCH_PIXELS**2, 3 * PATCH_PIXELS**2 + 3)  # mean-colour dims of a patches region
CAPTIONS = ["A red circle on the left.", "a blue square", "the green triangle is big"]


def _records(folder, count, splits=("train",), size=(40, 30)):
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        path = os.path.join(folder, f"img{i}.jpg")
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=95)
        captions = [CAPTIONS[i % 3], f"picture number {i}"]
        records.append(CaptionRecord(f"id{i}", path, captions, splits[i % len(splits)]))
    return records


def _vocab(records):
    return Vocabulary.build([c for r in records for c in r.captions])


def _read_shards(out_dir, manifest, split=None):
    decoder = ExampleDecoder(manifest["dtype"], manifest["grid_shape"])
    examples = []
    for name, names in manifest["shards"].items():
        if split is None or name == split:
            for shard in names:
                for data in tf.data.TFRecordDataset(os.path.join(out_dir, shard)):
                    examples.append({k: v.numpy() for k, v in decoder(data).items()})
    return examples


def _extract(records, vocab, out_dir, **kwargs):
    kwargs.setdefault("backbone", "patches")
    kwargs.setdefault("weights", None)
    return extract_features(records, vocab, str(out_dir), **kwargs)


def test_round_trip_and_manifest(tmp_path, caplog, monkeypatch):
    records = _records(tmp_path, 7, splits=("train", "train", "val"))
    vocab = _vocab(records)
    monkeypatch.setattr(extract, "PROGRESS_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="keras_captioning.features.extract"):
        manifest = _extract(records, vocab, tmp_path / "out", shard_size=2, batch_size=3, max_length=4,
                            extra_manifest={"experiment": "unit"})
    out = tmp_path / "out"
    assert "images/s ETA" in caplog.text and "wrote 7 images, skipped 0, 4 shards" in caplog.text

    assert manifest == read_manifest(out)
    assert manifest["shards"] == {"train": [f"train-0000{i}-of-00003.tfrecord" for i in range(3)],
                                  "val": ["val-00000-of-00001.tfrecord"]}
    assert sorted(os.listdir(out)) == sorted(["manifest.json", "vocab.json", *manifest["shards"]["train"],
                                              *manifest["shards"]["val"]])
    assert manifest["counts"]["train"]["images"] == 5 and manifest["counts"]["val"]["captions"] == 4
    assert manifest["grid_shape"] == [64, 294] and manifest["grid_hw"] == [8, 8]
    assert manifest["dtype"] == "float16" and manifest["backbone"] == "patches" and manifest["weights"] == "none"
    assert manifest["image_size"] == 96 and manifest["max_length"] == 4 and manifest["vocab"] == "vocab.json"
    assert manifest["vocab_fingerprint"] == vocab.fingerprint() == Vocabulary.load(out / "vocab.json").fingerprint()
    assert manifest["package_version"] == __version__ and manifest["skipped"] == []
    assert manifest["experiment"] == "unit" and manifest["counts"]["train"]["truncated_captions"] == 10

    model = build_backbone("patches", weights=None)
    by_id = {r.image_id: r for r in records}
    examples = _read_shards(out, manifest)
    assert sorted(e["image_id"].decode() for e in examples) == sorted(by_id)
    for example in examples:
        record = by_id[example["image_id"].decode()]
        assert [c.decode() for c in example["captions"]] == record.captions
        expected_ids = [vocab.encode(c, 4) for c in record.captions]
        assert [list(row[:n]) for row, n in zip(example["caption_ids"], example["caption_lengths"])] == expected_ids
        image = tf.image.resize(tf.io.decode_image(tf.io.read_file(record.image_path), channels=3), (96, 96))
        reference = model(image[None])
        np.testing.assert_allclose(example["grid"], reference["grid"][0], rtol=1e-3, atol=1e-3)  # float16
        np.testing.assert_allclose(example["pooled"], reference["pooled"][0], rtol=1e-3, atol=1e-3)  # float16


def test_float32_storage_is_exact(tmp_path):
    records = _records(tmp_path, 2)
    manifest = _extract(records, _vocab(records), tmp_path / "out", dtype="float32")
    example = _read_shards(tmp_path / "out", manifest)[0]
    assert manifest["dtype"] == "float32" and "pooled_dtype" not in manifest
    np.testing.assert_allclose(example["grid"].mean(axis=0), example["pooled"], rtol=1e-6, atol=1e-6)


def test_resume_after_interruption_and_overwrite(tmp_path, monkeypatch):
    records = _records(tmp_path, 6)
    vocab, out = _vocab(records), tmp_path / "out"
    real_write = extract._write_shard
    calls = []

    def crash_on_second_shard(shard, *args):
        calls.append(shard.name)
        if len(calls) == 2:
            # what a kill leaves behind: a half-written temp file of another process
            (out / f"{shard.name}.tmp-99999").write_bytes(b"half a record")
            raise KeyboardInterrupt
        return real_write(shard, *args)

    monkeypatch.setattr(extract, "_write_shard", crash_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        _extract(records, vocab, out, shard_size=2)
    first = out / "train-00000-of-00003.tfrecord"
    assert first.exists() and not (out / "manifest.json").exists()
    os.utime(first, (1_000_000_000, 1_000_000_000))  # an old mtime: a rewrite would change it

    monkeypatch.setattr(extract, "_write_shard", real_write)
    manifest = _extract(records, vocab, out, shard_size=2)
    assert first.stat().st_mtime == 1_000_000_000  # finished shard kept
    assert not list(out.glob("*.tmp-*"))  # the stale temp file was removed and its shard redone
    assert manifest["counts"]["train"]["images"] == 6
    assert len(_read_shards(out, manifest)) == 6
    assert not list(out.glob("manifest.worker-*"))  # one worker: everything merged into manifest.json

    manifest = _extract(records, vocab, out, shard_size=2, overwrite=True)
    assert first.stat().st_mtime != 1_000_000_000


def test_other_settings_are_refused_unless_overwrite(tmp_path):
    records = _records(tmp_path, 4)
    vocab, out = _vocab(records), tmp_path / "out"
    _extract(records, vocab, out, shard_size=2)
    with pytest.raises(CaptioningError, match=r"other settings \(dtype: 'float16' -> 'float32'.*--overwrite"):
        _extract(records, vocab, out, shard_size=2, dtype="float32")
    manifest = _extract(records, vocab, out, shard_size=4, dtype="float32", overwrite=True)
    assert sorted(p.name for p in out.glob("*.tfrecord")) == ["train-00000-of-00001.tfrecord"]
    assert manifest["dtype"] == "float32" and len(_read_shards(out, manifest)) == 4


def test_two_workers_cover_every_image_once(tmp_path):
    records = _records(tmp_path, 9, splits=("train", "train", "val"))
    vocab, out = _vocab(records), tmp_path / "out"
    partial = _extract(records, vocab, out, shard_size=2, num_workers=2, worker_index=0)
    assert partial["kind"] == "worker" and not (out / "manifest.json").exists()
    mine = set(partial["shard_stats"])
    # ordinals: train 0..2 (6 images), val 3..4 (3 images); worker 0 takes the even ones
    assert mine == {"train-00000-of-00003.tfrecord", "train-00002-of-00003.tfrecord",
                    "val-00001-of-00002.tfrecord"}
    assert {p.name for p in out.glob("*.tfrecord")} == mine
    with pytest.raises(CaptioningError, match="2 of 5 shards are not finished"):
        finalize_manifest(out)

    manifest = _extract(records, vocab, out, shard_size=2, num_workers=2, worker_index=1)
    assert manifest["kind"] == "final" and manifest["num_workers"] == 2
    ids = [e["image_id"].decode() for e in _read_shards(out, manifest)]
    assert sorted(ids) == sorted(r.image_id for r in records)  # each image exactly once
    assert {p.name for p in out.glob("manifest*.json")} == {
        "manifest.json", "manifest.worker-0-of-2.json", "manifest.worker-1-of-2.json"}
    again = finalize_manifest(out)
    assert {k: v for k, v in again.items() if k != "created"} == {
        k: v for k, v in manifest.items() if k != "created"}


def _write_image_zoo(folder):
    """Every awkward input; returns {id: (path, expected RGB or None if it must be skipped)}."""
    def path(name):
        return os.path.join(folder, name)

    Image.new("L", (40, 30), 100).save(path("gray.jpg"))
    Image.new("RGBA", (40, 30), (10, 20, 30, 100)).save(path("alpha.png"))
    Image.fromarray(np.full((30, 40), 40000, np.uint16)).save(path("sixteen.png"))  # I;16
    Image.new("CMYK", (40, 30), (10, 200, 30, 0)).save(path("cmyk.jpg"), quality=100)
    Image.new("RGB", (1, 1), (200, 100, 50)).save(path("one.png"))
    Image.new("RGB", (40, 30), (0, 128, 255)).convert("P").save(path("palette.gif"))
    Image.new("RGB", (40, 30), (1, 2, 3)).save(path("plain.bmp"))
    Image.new("RGB", (40, 30), (50, 60, 70)).save(path("other.tiff"))  # not a TensorFlow format
    open(path("zero.jpg"), "wb").close()
    with open(path("text.jpg"), "w") as fh:
        fh.write("this is not a picture\n")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(path("noise.jpg"))
    data = open(path("noise.jpg"), "rb").read()
    open(path("truncated.jpg"), "wb").write(data[: len(data) // 2])
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(path("noise.png"))
    data = open(path("noise.png"), "rb").read()
    open(path("truncated.png"), "wb").write(data[: len(data) // 2])
    return {
        "gray": (path("gray.jpg"), (100, 100, 100)),
        "alpha": (path("alpha.png"), (10, 20, 30)),
        "sixteen": (path("sixteen.png"), (156, 156, 156)),  # 40000 / 257
        "cmyk": (path("cmyk.jpg"), (245, 55, 225)),
        "one": (path("one.png"), (200, 100, 50)),
        "palette": (path("palette.gif"), (0, 128, 255)),
        "bmp": (path("plain.bmp"), (1, 2, 3)),
        "tiff": (path("other.tiff"), (50, 60, 70)),
        "missing": (path("missing.jpg"), "file not found"),
        "zero": (path("zero.jpg"), "empty file (0 bytes)"),
        "text": (path("text.jpg"), "not an image"),
        "truncated_jpeg": (path("truncated.jpg"), "truncated"),
        "truncated_png": (path("truncated.png"), "truncated"),
    }


def test_bad_images_are_skipped_and_odd_ones_converted(tmp_path):
    zoo = _write_image_zoo(tmp_path)
    records = [CaptionRecord(image_id, p, ["a thing"], "train") for image_id, (p, _) in zoo.items()]
    manifest = _extract(records, _vocab(records), tmp_path / "out", shard_size=100, batch_size=4)

    reasons = {item["image_id"]: item["reason"] for item in manifest["skipped"]}
    expected_skips = {k: v for k, (_, v) in zoo.items() if isinstance(v, str)}
    assert set(reasons) == set(expected_skips)
    for image_id, fragment in expected_skips.items():
        assert fragment in reasons[image_id], (image_id, reasons[image_id])
    assert all(item["path"] == zoo[item["image_id"]][0] for item in manifest["skipped"])
    assert manifest["num_skipped"] == len(expected_skips) == manifest["counts"]["train"]["skipped"]

    examples = {e["image_id"].decode(): e for e in _read_shards(tmp_path / "out", manifest)}
    assert set(examples) == {k for k, (_, v) in zoo.items() if not isinstance(v, str)}
    for image_id, example in examples.items():
        colour = (1 - example["pooled"][COLOUR]) * 255  # the patches encoder stores ink = 1 - value/255
        np.testing.assert_allclose(colour, zoo[image_id][1], atol=4, err_msg=image_id)


def test_files_tensorflow_refuses_are_retried_with_pil(tmp_path, monkeypatch):
    zoo = _write_image_zoo(tmp_path)
    # Let everything past the PIL check so TensorFlow meets the TIFF and the truncated JPEG.
    monkeypatch.setattr(runner, "check_image", lambda p: ImageCheck(True, use_pil=False))
    records = [CaptionRecord(k, zoo[k][0], ["a thing"], "train") for k in ("tiff", "truncated_jpeg", "gray")]
    manifest = _extract(records, _vocab(records), tmp_path / "out")
    examples = {e["image_id"].decode(): e for e in _read_shards(tmp_path / "out", manifest)}
    assert set(examples) == {"tiff", "gray"}  # TIFF rescued by PIL
    np.testing.assert_allclose((1 - examples["tiff"]["pooled"][COLOUR]) * 255, (50, 60, 70), atol=1)
    (skip,) = manifest["skipped"]
    assert skip["image_id"] == "truncated_jpeg" and "could not be decoded" in skip["reason"]


def test_float16_overflow_is_an_error(tmp_path, monkeypatch):
    def loud_backbone(name, **kwargs):
        base = build_backbone(name, **kwargs)
        inputs = keras.Input(base.input.shape[1:])
        out = base(inputs)
        return keras.Model(inputs, {"grid": out["grid"] * 1e6, "pooled": out["pooled"]})

    monkeypatch.setattr(extract, "build_backbone", loud_backbone)
    records = _records(tmp_path, 2)
    with pytest.raises(CaptioningError, match="do not fit float16.*dtype='float32'"):
        _extract(records, _vocab(records), tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.tfrecord*"))


_HUGE_SCRIPT = textwrap.dedent("""
    import json, sys
    from keras_captioning.data.records import CaptionRecord
    from keras_captioning.data.vocab import Vocabulary
    from keras_captioning.features import extract, images

    def status_mb(key):  # VmRSS: resident now; VmHWM: peak since the last reset
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) / 1024

    small, huge, out = sys.argv[1:4]
    if len(sys.argv) > 4:  # manual comparison: route huge images through TensorFlow's full decode
        images.LARGE_IMAGE_PIXELS = int(sys.argv[4])
    vocab = Vocabulary.build(["a big red picture"])
    kwargs = dict(backbone="patches", weights=None)
    extract.extract_features([CaptionRecord("small", small, ["a picture"], "train")], vocab, out + "/warm", **kwargs)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak (VmHWM) to the current resident size
    before = status_mb("VmRSS")
    manifest = extract.extract_features([CaptionRecord("huge", huge, ["a big red picture"], "train")], vocab,
                                        out + "/huge", **kwargs)
    print(json.dumps({"before": before, "peak": status_mb("VmHWM"), "manifest": manifest}))
""")


@pytest.mark.slow  # a 20-megapixel JPEG; other odd images: test_bad_images_are_skipped_and_odd_ones_converted
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc peak-RSS reset")
def test_huge_jpeg_is_decoded_in_little_memory(tmp_path):
    huge, small = tmp_path / "huge.jpg", tmp_path / "small.jpg"
    Image.new("RGB", (12000, 9000), (200, 30, 60)).save(huge, quality=50)  # 108 Mpixel, 324 MB decoded
    Image.new("RGB", (40, 30), (1, 2, 3)).save(small)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-c", _HUGE_SCRIPT, str(small), str(huge), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    growth = result["peak"] - result["before"]
    print(f"resident {result['before']:.0f} MB, peak while extracting {result['peak']:.0f} MB (+{growth:.0f} MB)")
    assert growth < 100, growth  # a full decode alone would add 324 MB
    manifest = result["manifest"]
    assert manifest["counts"]["train"]["images"] == 1 and not manifest["skipped"]
    (example,) = _read_shards(tmp_path / "huge", manifest)
    np.testing.assert_allclose((1 - example["pooled"][COLOUR]) * 255, (200, 30, 60), atol=4)
