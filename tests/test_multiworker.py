"""MultiWorkerMirroredStrategy: two local worker processes train like one process.

Each worker is a ``python -m keras_captioning train`` process with its own ``TF_CONFIG``
(a two-worker cluster on 127.0.0.1). The global batch is split between them and the
gradients are all-reduced, so the losses logged per epoch equal a single-process run of the
same config; only the chief writes the run directory, and ``--resume`` continues it.
"""

import csv
import json
import socket
import subprocess
import sys

import pytest

from keras_captioning.features.build import build_features
from tests.helpers import smoke_config, smoke_overrides, subprocess_env


def _free_ports(count):
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _train_command(root, run, *extra):
    command = [sys.executable, "-m", "keras_captioning", "train", "--config", "configs/smoke.yaml"]
    for item in smoke_overrides(root, "attention", run):
        command += ["--set", item]
    return command + list(extra)


def _two_workers(root, run, *extra):
    """Runs the two workers to the end; returns their outputs."""
    from tests.helpers import REPO

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = subprocess_env()
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(_train_command(root, run, "--set", "train.strategy=multiworker", *extra),
                                      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        outputs.append(out)
        assert proc.returncode == 0, out[-3000:]
    return outputs


def _losses(run_dir):
    with open(run_dir / "log.csv", encoding="utf-8") as fh:
        return [float(row[key]) for row in csv.DictReader(fh) for key in ("loss", "val_loss")]


@pytest.mark.slow
def test_two_workers_train_like_one_process_and_resume(tmp_path):
    from tests.helpers import REPO

    build_features(smoke_config(tmp_path))
    _two_workers(tmp_path, "multi", "--set", "train.epochs=1")
    _two_workers(tmp_path, "multi", "--resume")  # to train.epochs=2, from the chief's checkpoint
    single = subprocess.run(_train_command(tmp_path, "single"), cwd=REPO, env=subprocess_env(),
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]

    multi, one = _losses(tmp_path / "multi"), _losses(tmp_path / "single")
    assert len(multi) == len(one) == 4  # two epochs: loss, val_loss
    assert multi == pytest.approx(one, rel=1e-5)
    assert (tmp_path / "multi" / "checkpoints" / "best.keras").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "features", "multi", "single"]


def test_multiworker_never_extracts_features(tmp_path):
    from keras_captioning.errors import CaptioningError
    from keras_captioning.training.trainer import _check_features_ready

    cfg = smoke_config(tmp_path, **{"train.strategy": "multiworker"})
    with pytest.raises(CaptioningError, match="multiworker needs finished features"):
        _check_features_ready(cfg)
