"""A disk that fills up during ``features`` or ``train``: one error line, nothing marked complete,
and a rerun with space finishes.

The small disk is a tmpfs mounted in ``tmp_path`` (needs root; skipped, saying so, where it
cannot be mounted), filled with a file that leaves just enough room for the first shard or the
run's identity files, sized from the shared tiny run's own files.
"""

import glob
import json
import os
import subprocess

import pytest

from keras_captioning.cli import main
from keras_captioning.data.shards import shard_problem
from keras_captioning.features.feature_folder import FeatureFolder
from keras_captioning.run_directory import RunDirectory
from tests.helpers import SMOKE, smoke_overrides

PAGE = 4096
pytestmark = pytest.mark.slow  # extracts and trains twice each: ~1.5 min on 2 cores


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs at ``tmp_path/disk`` and ``fill(free_bytes)`` / ``empty()`` for its filler file."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs to fill ({done.stderr.strip() or 'mount failed'}; needs root)")
    filler = mount / "filler"

    def fill(free_bytes: int) -> None:
        stat = os.statvfs(mount)
        size = stat.f_bavail * stat.f_frsize - free_bytes
        with open(filler, "wb") as fh:
            fh.truncate(0)
            fh.write(b"\0" * size)  # tmpfs has no holes to cheat with: real pages

    def empty() -> None:
        filler.unlink()

    yield mount, fill, empty
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _pages(n: int) -> int:
    return -(-n // PAGE) * PAGE


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in lines[0]
    return lines[0]


def _no_temp_files(folder) -> None:
    assert not [p for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True) if ".tmp-" in p]


def test_features_on_a_full_disk(tiny_run, small_disk, capsys):
    mount, fill, empty = small_disk
    made = FeatureFolder(tiny_run.root / "features").manifest()
    shard = max(s["bytes"] for s in made["shard_stats"].values())
    out = mount / "features"
    args = ["features", "--config", SMOKE]
    for item in smoke_overrides(tiny_run.root, **{"features.out_dir": out}):
        args += ["--set", item]
    # room for the vocabulary and one shard and a half: the second shard meets the full disk
    fill(_pages(os.path.getsize(FeatureFolder(tiny_run.root / "features").vocab_path)) + 3 * shard // 2 + 2 * PAGE)

    assert main(args) == 2
    line = _one_error_line(capsys)
    assert "No space left on device" in line and str(out) in line
    folder = FeatureFolder(out)
    assert not os.path.exists(folder.manifest_path)  # nothing finished
    for path in glob.glob(str(out / "manifest.worker-*.json")):  # a recorded shard is a whole one
        for name, stats in json.loads(open(path, encoding="utf-8").read())["shard_stats"].items():
            assert shard_problem(out / name, stats) is None
    _no_temp_files(out)

    empty()
    assert main(args) == 0
    assert folder.is_complete() and folder.manifest()["counts"] == made["counts"]


def test_train_on_a_full_disk(tiny_run, small_disk, capsys):
    mount, fill, empty = small_disk
    done = RunDirectory(tiny_run.run_dir)
    checkpoint = os.path.getsize(done.checkpoint(done.LAST))
    identity = sum(_pages(os.path.getsize(done.file(name)))
                   for name in (done.INFO, done.CONFIG, done.VOCAB, done.MANIFEST))
    run_dir = mount / "run"
    args = ["train", "--config", SMOKE]
    for item in smoke_overrides(tiny_run.root, run=run_dir, **{"train.epochs": 1, "train.steps_per_epoch": 2}):
        args += ["--set", item]
    fill(identity + checkpoint // 2 + 4 * PAGE)  # the run opens; its first checkpoint does not fit

    assert main(args) == 2
    line = _one_error_line(capsys)
    assert "No space left on device" in line and str(run_dir) in line
    run = RunDirectory(run_dir)
    assert run.state() is None and not run.has_checkpoint()  # no checkpoint recorded
    _no_temp_files(run_dir)

    empty()
    assert main(args) == 0  # the run that died before its first checkpoint starts again
    assert run.state()["next_epoch"] == 1 and run.has_checkpoint()
