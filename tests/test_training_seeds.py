"""Seeds: one seed twice gives identical logs; ``train.seeds`` trains one run per seed; the demo's
report gives mean ± sd over them."""

import math

import pytest

from keras_captioning.demo import _verdict, demo_seeds, mean_sd, spread_cell
from keras_captioning.errors import CaptioningError
from keras_captioning.run_directory import RunDirectory
from keras_captioning.training.run_configs import seed_configs, seed_dir
from keras_captioning.training.trainer import train
from tests.helpers import smoke_config

FAST = {"train.epochs": 2, "train.steps_per_epoch": 2, "train.select_on": "val_loss"}


def _log(run_dir) -> str:
    return open(RunDirectory(run_dir).log_csv, encoding="utf-8").read()


@pytest.mark.slow  # three trainings; the seed expansion and report cells: the tests below
def test_one_seed_twice_gives_identical_logs_and_seeds_make_one_run_each(root, tmp_path):
    # The shared tiny run's data and features (read only); the three runs in tmp_path.
    single = train(smoke_config(root, **{**FAST, "train.run_dir": tmp_path / "single"}))
    several = smoke_config(root, **{**FAST, "train.seeds": "[0, 1]", "train.run_dir": tmp_path / "several"})
    assert train(several) == several.run_dir
    again = seed_dir(several.run_dir, 0)
    assert RunDirectory(again).config().train.seed == 0 and RunDirectory(again).config().train.seeds is None
    assert len(_log(single).splitlines()) == 3  # header + two epochs
    assert _log(again) == _log(single)  # seed 0 again: every logged value repeats exactly
    other = seed_dir(several.run_dir, 1)
    assert RunDirectory(other).config().train.seed == 1
    assert _log(other) != _log(single)  # another seed is another trajectory


def test_seed_configs(tmp_path):
    cfg = smoke_config(tmp_path, **{"train.seeds": "[3, 5]"})
    one, two = seed_configs(cfg)
    assert (one.train.seed, two.train.seed) == (3, 5) and one.run_dir.endswith("seed-3")
    assert seed_configs(smoke_config(tmp_path)) == [smoke_config(tmp_path)]
    for bad in ("[]", "[1, 1]", "[-1]", "3", "[1.5]"):
        with pytest.raises(CaptioningError, match="train.seeds"):
            smoke_config(tmp_path, **{"train.seeds": bad})
    assert demo_seeds(cfg) == [3, 5] and demo_seeds(smoke_config(tmp_path)) == [0]
    assert demo_seeds(cfg, [7]) == [7]


def test_mean_sd_and_report_cells():
    mean, sd = mean_sd([0.55, 0.57, 0.59])
    assert math.isclose(mean, 0.57) and math.isclose(sd, 0.02)
    assert mean_sd([0.4]) == (0.4, 0.0)
    assert spread_cell([0.55, 0.57, 0.59], "BLEU-4") == "57.0 ± 2.0"
    assert spread_cell([0.5, 0.7], "WER") == "0.600 ± 0.141"
    assert spread_cell([float("nan")], "METEOR") == "n/a"


def test_verdict_says_whether_attention_wins_beyond_seed_noise():
    def runs(*values):
        return [{"scores": {"BLEU-4": v, "CIDEr-D": v}} for v in values]

    clear = _verdict({"attention": runs(0.60, 0.61, 0.62), "vanilla": runs(0.50, 0.51, 0.52)})
    assert all("beyond seed noise" in line and "NOT" not in line for line in clear)
    noisy = _verdict({"attention": runs(0.50, 0.60, 0.55), "vanilla": runs(0.52, 0.49, 0.58)})
    assert all("NOT beyond seed noise" in line for line in noisy)
    single = _verdict({"attention": runs(0.6), "vanilla": runs(0.5)})
    assert single[0] == "- BLEU-4: attention 60.0 vs vanilla 50.0 -> attention higher"
