"""evaluate: decode a split, score it, write the report folder (one per setting), compare runs;
damaged shards and checkpoints named, a full disk, no WordNet."""

import errno
import json
import logging
import math
import os
import re
import shutil

import nltk
import pytest

from keras_captioning import utils
from keras_captioning.cli import main
from keras_captioning.errors import CaptioningError
from keras_captioning.evaluate import evaluate_run
from tests.helpers import copy_features, first_shard


def test_a_full_disk_while_writing_the_report_is_one_line_and_marks_nothing_complete(tiny_run, tmp_path,
                                                                                       monkeypatch):
    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "report"
    monkeypatch.setattr(utils, "fsync_path", full)
    target = out / "predictions.json"
    with pytest.raises(CaptioningError, match="^" + re.escape(f"{target}: cannot write it (No space left on device)")):
        evaluate_run(tiny_run.run_dir, split="val", beam=1, out_dir=str(out), metrics=["BLEU-4"])
    assert os.listdir(out) == []  # no temporary file, and no scores.json claiming a report
    monkeypatch.undo()
    result = evaluate_run(tiny_run.run_dir, split="val", beam=1, out_dir=str(out), metrics=["BLEU-4"])
    assert (out / "scores.json").is_file() and result["scores"]["BLEU-4"] >= 0


def test_compare_out_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    assert main(["compare", str(tmp_path), "--out", str(blocker)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_evaluate_names_a_damagedfirst_shard(root, tmp_path):
    from keras_captioning.evaluate import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    features = copy_features(root, tmp_path)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "features_dir": str(features)}))
    path, manifest = first_shard(features, "test")
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


def test_damaged_checkpoint_named_by_evaluate(root, tmp_path):
    from keras_captioning.evaluate import evaluate_run

    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    best = run / "checkpoints" / "best.keras"
    best.write_bytes(best.read_bytes()[:500])
    with pytest.raises(CaptioningError, match=re.escape(f"{best}: not a complete .keras file")):
        evaluate_run(str(run))


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
