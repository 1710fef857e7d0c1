"""The benchmark harness runs end to end in --tiny mode (no timing is asserted)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ROWS = ("1. input pipeline", "2a. training step, T=20", "2b. training step, real lengths",
        "2c. transformer training, real lengths", "2d. transformer vs GRU attention, real lengths",
        "3. decoding, greedy", "4. storage", "5. corpus metrics", "6. feature extraction",
        "6b. extraction, EfficientNet-Lite0")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--tiny", "--reps", "1", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, out


@pytest.mark.slow  # the tiny run traces every bucket width and starts the Java METEOR: ~1.5 min
def test_table_has_every_row(tiny_run):
    stdout, _ = tiny_run
    table = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert table[0].split("|")[1].strip() == "benchmark"
    names = [line.split("|")[1].strip() for line in table[1:]]
    for row in ROWS:
        assert row in names, (row, names)


@pytest.mark.slow
def test_results_files(tiny_run):
    _, out = tiny_run
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "tiny"
    assert {"cpu", "cores", "tensorflow"} <= set(results["machine"])
    rows = {row["benchmark"]: row for row in results["rows"]}
    for name in ROWS:
        row = rows[name]
        assert not row["skipped"], (name, row["skipped"])
        assert row["ours"] > 0 and row["study"] > 0 and row["ratio"] > 0
        assert row["met"] in (True, False)
    assert "| benchmark" in (out / "results.md").read_text()
    assert not list(out.glob("work-*")), "the generated data is removed"


@pytest.mark.slow  # the study's own input pipeline, for the benchmarks only
def test_study_pipeline_shapes():
    """The study's layers give the tutorial's shapes; its train step returns finite losses."""
    import keras
    import numpy as np
    import tensorflow as tf

    if str(ROOT) not in sys.path:  # benchmarks/ is not part of the installed package
        sys.path.insert(0, str(ROOT))
    from benchmarks import study_pipeline as sp

    encoder, decoder = sp.build_study_model(vocab_size=20, feature_dim=6, embedding_dim=4, units=8)
    features = encoder(tf.zeros((2, 3, 6)))
    logits, state, weights = decoder(tf.constant([[2], [2]]), features, decoder.reset_state(2))
    assert (features.shape, logits.shape, state.shape, weights.shape) == ((2, 3, 4), (2, 20), (2, 8), (2, 3, 1))
    step = sp.make_study_train_step(encoder, decoder, keras.optimizers.Adam())
    captions = tf.constant([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]])
    loss, total = step(tf.random.normal((2, 3, 6)), captions)
    assert np.isfinite(loss.numpy()) and np.isclose(total.numpy(), loss.numpy() / 5)
    tokens = sp.study_decode_one(encoder, decoder, np.zeros((3, 6), np.float32), max_length=4, greedy=True)
    assert len(tokens) <= 4 and 3 not in tokens
