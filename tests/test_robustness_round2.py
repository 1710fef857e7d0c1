"""Issue 14, robustness round 2: numbers checked where they enter, damaged shards and
checkpoints detected (and recovered from), paths of the wrong kind, one report folder per
evaluation setting, dataset skips in the manifest, and evaluation without WordNet."""

import csv
import json
import logging
import math
import os
import re
import shutil

import nltk
import pytest

from keras_captioning.cli import main
from keras_captioning.config import load_config
from keras_captioning.errors import CaptioningError
from keras_captioning.features.build import build_features
from keras_captioning.ranges import RANGES, check_value
from tests.helpers import SMOKE, smoke_config

# ----------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "train.batch_size=0 is out of range; valid: >= 1"),
    ("model.units=0", "model.units=0 is out of range; valid: >= 1"),
    ("train.epochs=0", "train.epochs=0 is out of range; valid: >= 1"),
    ("train.epochs=-1", "train.epochs=-1 is out of range; valid: >= 1"),
    ("train.learning_rate=-0.001", "train.learning_rate=-0.001 is out of range; valid: > 0"),
    ("train.learning_rate=.nan", "train.learning_rate=nan is out of range; valid: > 0"),
    ("eval.beam=0", r"eval.beam=0 is out of range; valid: \[1, 100\]"),
    ("eval.beam=-1", r"eval.beam=-1 is out of range; valid: \[1, 100\]"),
    ("eval.beam=100000", r"eval.beam=100000 is out of range; valid: \[1, 100\]"),
    ("model.dropout=1.0", r"model.dropout=1.0 is out of range; valid: \[0, 1\)"),
    ("train.lr_decay_factor=1.5", r"train.lr_decay_factor=1.5 is out of range; valid: \(0, 1\)"),
    ("data.max_length=1", "data.max_length=1 is out of range; valid: >= 2"),
    ("train.length_buckets=[12, 8]", "train.length_buckets=.*increasing integers >= 2"),
])
def test_numeric_setting_out_of_range_names_key_and_range(override, message):
    with pytest.raises(CaptioningError, match=message):
        load_config(SMOKE, [override])


@pytest.mark.parametrize("overrides, message", [
    (["train.batch_layout=rows"], "train.batch_layout='rows' is not valid; choose one of caption, image"),
    (["train.batch_layout=image", "train.strategy=mirrored"], "batch_layout=image needs .*strategy=default"),
    (["train.batch_layout=image", "train.caption_mode=random"], "batch_layout=image needs train.caption_mode=all"),
])
def test_batch_layout_is_checked_when_the_config_loads(overrides, message):
    with pytest.raises(CaptioningError, match=message):
        load_config(SMOKE, overrides)


def test_every_range_accepts_its_default_and_the_shipped_configs_load():
    import glob

    from keras_captioning.config import ExperimentConfig

    defaults = ExperimentConfig()
    for (section, key) in RANGES:
        value = getattr(getattr(defaults, section), key)
        if value is not None:
            check_value(section, key, value)
    for path in glob.glob(os.path.join(os.path.dirname(SMOKE), "*.yaml")):
        load_config(path)


def test_cli_reports_a_range_error_on_one_line_before_any_work(tmp_path, capsys):
    code = main(["train", "--config", SMOKE, "--set", f"train.run_dir={tmp_path / 'run'}",
                 "--set", "train.batch_size=0"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [f"error: {SMOKE}: train.batch_size=0 is out of range; valid: >= 1"]
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- paths


def test_config_naming_a_folder(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path)]) == 2
    assert "is a folder, not a config file" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["train.run_dir", "features.out_dir"])
def test_output_folder_that_is_a_file(tmp_path, key):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    for path in (blocker, blocker / "below"):
        with pytest.raises(CaptioningError, match=re.escape(f"{key}={path}: {blocker} is a file, not a folder")):
            load_config(SMOKE, [f"{key}={path}"])


def test_compare_out_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    assert main(["compare", str(tmp_path), "--out", str(blocker)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- shared run


@pytest.fixture(scope="module")
def root(tiny_run):
    """Smoke features and one attention run trained for 2 epochs (the session's ``tiny_run``)."""
    return tiny_run.root


def _copy_features(root, tmp_path):
    dest = tmp_path / "features"
    shutil.copytree(root / "features", dest)
    return dest


def _shard(features, split="train"):
    manifest = json.loads((features / "manifest.json").read_text())
    return features / manifest["shards"][split][0], manifest


# ----------------------------------------------------------------------------- damaged shards


def test_manifest_records_size_and_checksum_of_every_shard(root):
    manifest = json.loads((root / "features" / "manifest.json").read_text())
    for names in manifest["shards"].values():
        for name in names:
            stats = manifest["shard_stats"][name]
            assert stats["bytes"] == os.path.getsize(root / "features" / name)
            assert len(stats["sha256"]) == 64


@pytest.mark.parametrize("damage", ["truncate", "extend", "flip"])
def test_damaged_shard_is_detected_and_extracted_again(root, tmp_path, damage, caplog):
    features = _copy_features(root, tmp_path)
    path, manifest = _shard(features)
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
    features = _copy_features(root, tmp_path)
    manifest = json.loads((features / "manifest.json").read_text())
    for stats in manifest["shard_stats"].values():
        del stats["sha256"]  # as written before checksums existed
    (features / "manifest.json").write_text(json.dumps(manifest))
    path, _ = _shard(features)
    before = os.stat(path).st_mtime_ns
    build_features(smoke_config(root, **{"features.out_dir": features}))
    assert os.stat(path).st_mtime_ns == before  # not re-extracted
    path.write_bytes(path.read_bytes()[:-10])  # but still size-checked
    from keras_captioning.features.feature_folder import FeatureFolder

    assert not FeatureFolder(features).is_complete()


def test_evaluate_names_a_damaged_shard(root, tmp_path):
    from keras_captioning.evaluate import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    features = _copy_features(root, tmp_path)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "features_dir": str(features)}))
    path, manifest = _shard(features, "test")
    good = path.read_bytes()
    path.write_bytes(good[:-40])
    with pytest.raises(CaptioningError, match=re.escape(str(path)) + ": .*truncated or extended"):
        evaluate_run(str(run))
    # Damage the manifest cannot see (no checksum recorded): the read error still names the file.
    path.write_bytes(good[:300] + bytes([good[300] ^ 0xFF]) + good[301:])
    for stats in manifest["shard_stats"].values():
        stats.pop("sha256")
    (features / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CaptioningError, match=re.escape(f"{path}: damaged feature shard")):
        evaluate_run(str(run), out_dir=str(tmp_path / "eval"))


# ----------------------------------------------------------------------------- checkpoints


def test_truncated_last_checkpoint_resume_falls_back_to_previous(root, tmp_path, caplog):
    from keras_captioning.training.trainer import train

    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    ckpt = run / "checkpoints"
    assert (ckpt / "previous.keras").exists()  # epoch 1's checkpoint, kept when epoch 2's was written
    last = ckpt / "last.keras"
    last.write_bytes(last.read_bytes()[:1000])
    cfg = smoke_config(root, **{"train.run_dir": run, "train.epochs": 3})
    with caplog.at_level(logging.WARNING):
        train(cfg, resume=True)
    assert f"resuming from {ckpt / 'previous.keras'} (epoch 1)" in caplog.text
    assert f"{last}: not a complete .keras file" in caplog.text
    assert json.loads((run / "state.json").read_text())["next_epoch"] == 3
    with open(run / "log.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [0, 1, 2]  # epoch 2 rerun, logged once


def test_damaged_checkpoint_named_by_evaluate(root, tmp_path):
    from keras_captioning.evaluate import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    best = run / "checkpoints" / "best.keras"
    best.write_bytes(best.read_bytes()[:500])
    with pytest.raises(CaptioningError, match=re.escape(f"{best}: not a complete .keras file")):
        evaluate_run(str(run))


@pytest.mark.parametrize("resume", [False, True])
def test_run_that_died_before_its_first_checkpoint_starts_again(root, tmp_path, resume, caplog):
    from keras_captioning.training.trainer import train

    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(root / "run" / "run.json", run / "run.json")  # what a crash in epoch 1 leaves
    shutil.copyfile(root / "run" / "config.yaml", run / "config.yaml")
    cfg = smoke_config(root, **{"train.run_dir": run, "train.epochs": 1})
    with caplog.at_level(logging.WARNING):
        train(cfg, resume=resume)
    assert "stopped before its first checkpoint; starting it again from epoch 1" in caplog.text
    assert json.loads((run / "state.json").read_text())["next_epoch"] == 1


# ----------------------------------------------------------------------------- reports


@pytest.mark.slow  # four evaluations of one run (~40 s)
def test_each_evaluation_setting_keeps_its_own_report(root, tmp_path):
    from keras_captioning.evaluate import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    first = evaluate_run(str(run))
    assert first["report_dir"] == str(run / "eval-test")
    kept = (run / "eval-test" / "scores.json").read_text()
    second = evaluate_run(str(run), beam=1, checkpoint="last")
    assert second["report_dir"] == str(run / "eval-test-last-greedy")
    third = evaluate_run(str(run), beam=3, length_penalty=0.6)
    assert third["report_dir"] == str(run / "eval-test-best-beam3-lp0.6")
    assert (run / "eval-test" / "scores.json").read_text() == kept
    with pytest.raises(CaptioningError, match="holds a report made with other settings .*--overwrite"):
        evaluate_run(str(run), beam=1, out_dir=str(run / "eval-test"))
    evaluate_run(str(run), beam=1, out_dir=str(run / "eval-test"), overwrite=True)
    assert json.loads((run / "eval-test" / "scores.json").read_text())["meta"]["beam"] == 1


@pytest.mark.parametrize("beam, message", [
    (0, r"--beam=0 is out of range; valid: \[1, 100\]"),
    (-1, r"--beam=-1 is out of range; valid: \[1, 100\]"),
    (10**6, r"--beam=1000000 is out of range; valid: \[1, 100\]"),
    (99, r"--beam=99 is wider than the run's vocabulary \(\d+ tokens\)"),
])
def test_evaluate_beam_out_of_range(root, beam, message, capsys):
    assert main(["evaluate", "--run", str(root / "run"), "--beam", str(beam)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --beam=")
    with pytest.raises(CaptioningError, match=message):
        from keras_captioning.evaluate import evaluate_run

        evaluate_run(str(root / "run"), beam=beam)


@pytest.mark.parametrize("flags, message", [
    (["--beam", "0"], "error: --beam=0 is out of range; valid: [1, 100]"),
    (["--beam", "100000"], "error: --beam=100000 is out of range; valid: [1, 100]"),
    (["--max-length", "0"], "error: --max-length=0 is out of range; valid: [1, 1000]"),
])
def test_caption_and_export_flags_out_of_range(root, flags, message, capsys):
    """caption / export check their decoding flags against the same table, before loading anything."""
    for command in (["caption", str(root / "missing.jpg")], ["export", "--out", str(root / "x")]):
        assert main([*command, "--run", str(root / "run"), *flags]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [message]


# ----------------------------------------------------------------------------- WordNet


@pytest.fixture
def no_wordnet(monkeypatch):
    """A machine without WordNet: no NLTK data, no system dictionary, nothing cached."""
    from keras_captioning.metrics import wordnet

    monkeypatch.setattr(wordnet, "SYSTEM_WORDNET_DIRS", ())
    monkeypatch.delenv("WNSEARCHDIR", raising=False)
    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.setattr(wordnet, "_readers", {})
    with pytest.raises(wordnet.WordNetNotFoundError):
        wordnet.find_wordnet()


def test_evaluation_completes_without_wordnet(root, tmp_path, no_wordnet, caplog):
    from keras_captioning.evaluate import evaluate_run
    from keras_captioning.metrics import DEFAULT_METRICS

    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    with caplog.at_level(logging.WARNING):
        # Every metric but the Java METEOR-1.5, which needs no WordNet (and ~7 s to start).
        result = evaluate_run(str(run), metrics=DEFAULT_METRICS)
    install = "python -m nltk.downloader wordnet"
    warnings = [r.getMessage() for r in caplog.records if "METEOR unavailable" in r.getMessage()]
    assert len(warnings) == 1 and install in warnings[0] and "\n" not in warnings[0]
    scores = json.loads((run / "eval-test" / "scores.json").read_text())
    assert math.isnan(scores["scores"]["METEOR"])
    assert install in scores["meta"]["unavailable"]["METEOR"]
    for name in ("BLEU-1", "BLEU-4", "GLEU-1-4", "GLEU-1-2", "WER", "CIDEr-D", "ROUGE-L"):
        assert math.isfinite(scores["scores"][name]), name
    report = (run / "eval-test" / "report.md").read_text()
    assert "| n/a |" in report and install in report
    assert result["table"] and (run / "eval-test" / "panel-good.png").exists()


# ----------------------------------------------------------------------------- skips


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
