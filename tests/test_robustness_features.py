"""Issue 9 for features: ``kill -9`` during extraction, then a rerun, loses and duplicates nothing."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from keras_captioning.features.feature_folder import FeatureFolder
from keras_captioning.features.manifests import WORKER_MANIFEST
from tests.helpers import SMOKE, smoke_overrides, subprocess_env


def _ids_in_shards(features_dir):
    import tensorflow as tf

    from keras_captioning.data.tfrecords import ExampleDecoder

    decoder = ExampleDecoder()
    ids = []
    for path in FeatureFolder(features_dir).shard_files():
        for raw in tf.data.TFRecordDataset(path):  # every shard must parse to the end
            ids.append(decoder(raw)["image_id"].numpy().decode())
    return ids


@pytest.mark.slow
def test_kill_9_during_features_then_rerun(tmp_path):
    overrides = smoke_overrides(tmp_path, **{"data.synthetic_images": 600, "features.shard_size": 20,
                                             "features.batch_size": 8})
    cmd = [sys.executable, "-m", "keras_captioning", "features", "--config", SMOKE]
    cmd += [x for o in overrides for x in ("--set", o)]
    features_dir = tmp_path / "features"
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if len(FeatureFolder(features_dir).shard_files()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "extraction finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Finished = renamed into place *and* recorded in the worker's manifest. A shard killed between
    # its rename and that record is redone by design (features/extract.py's docstring).
    worker_manifest = features_dir / WORKER_MANIFEST.format(index=0, count=1)
    recorded = json.loads(worker_manifest.read_text())["shard_stats"]
    finished_before = sorted(str(features_dir / name) for name in recorded)
    assert len(finished_before) >= 2 and all(os.path.isfile(p) for p in finished_before)
    mtimes = {p: os.path.getmtime(p) for p in finished_before}
    assert not (features_dir / "manifest.json").exists()

    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "features: shards and manifest in" in done.stdout
    for path, mtime in mtimes.items():  # finished shards were kept, not rewritten
        assert os.path.getmtime(path) == mtime
    assert not glob.glob(str(features_dir / "*.tmp-*"))

    manifest = json.loads((features_dir / "manifest.json").read_text())
    ids = _ids_in_shards(str(features_dir))
    assert len(ids) == len(set(ids)) == 600  # every image exactly once
    assert sum(c["images"] for c in manifest["counts"].values()) == 600
    assert sorted(os.path.basename(p) for p in FeatureFolder(features_dir).shard_files()) == sorted(
        n for names in manifest["shards"].values() for n in names)
