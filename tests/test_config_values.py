"""config: values checked where they enter (the ranges table) and paths of the wrong kind."""

import os
import re

import pytest

from keras_captioning.cli import main
from keras_captioning.config import load_config
from keras_captioning.errors import CaptioningError
from keras_captioning.ranges import RANGES, check_value
from tests.helpers import SMOKE


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
