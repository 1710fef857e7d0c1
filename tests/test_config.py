"""Config: YAML + base inheritance + --set overrides; unknown keys and bad values rejected."""

import pytest

from keras_captioning.config import ExperimentConfig, load_config, save_config
from keras_captioning.errors import CaptioningError


def test_defaults_and_overrides():
    cfg = load_config(None, ["train.epochs=3", "model.type=merge", "data.splits=null"])
    assert cfg.train.epochs == 3 and cfg.model.type == "merge" and cfg.data.splits is None
    assert cfg.train.learning_rate == pytest.approx(4e-4)
    assert cfg.train.batch_size == 64


def test_unknown_key_lists_valid_ones():
    with pytest.raises(CaptioningError, match=r"unknown key 'train.epoch'.*valid keys of 'train':.*epochs"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(CaptioningError, match=r"unknown section 'trian'"):
        load_config(None, ["trian.epochs=3"])


def test_bad_values():
    with pytest.raises(CaptioningError, match=r"model.type='foo' is not valid; choose one of attention, merge"):
        load_config(None, ["model.type=foo"])
    with pytest.raises(CaptioningError, match=r"train.epochs must be int"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(CaptioningError, match="expected section.key=value"):
        load_config(None, ["train.epochs"])


def test_base_inheritance_and_roundtrip(tmp_path):
    (tmp_path / "base.yaml").write_text("data: {vocab_size: 7000}\ntrain: {epochs: 30}\n")
    (tmp_path / "exp.yaml").write_text("base: base.yaml\ntrain: {batch_size: 16}\n")
    cfg = load_config(str(tmp_path / "exp.yaml"))
    assert cfg.name == "exp"
    assert (cfg.data.vocab_size, cfg.train.epochs, cfg.train.batch_size) == (7000, 30, 16)
    save_config(cfg, str(tmp_path / "resolved.yaml"))
    again = load_config(str(tmp_path / "resolved.yaml"))
    assert again.to_dict() == cfg.to_dict()


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(CaptioningError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(CaptioningError, match="bad.yaml: not valid YAML"):
        load_config(str(bad))


@pytest.mark.parametrize("name", ["demo", "demo_attention", "demo_vanilla", "smoke",
                                  "study_attention_inception_v3_5000_6000_10",
                                  "study_attention_inception_v3_7000_6000_30",
                                  "study_attention_inception_v3_7000_10000_50",
                                  "study_attention_resnet50_7000_6000_30",
                                  "study_vanilla_resnet50_7000_6000_30"])
def test_shipped_configs_load(name):
    cfg = load_config(f"configs/{name}.yaml")
    assert isinstance(cfg, ExperimentConfig)


def test_study_grid_matches_the_paper():
    cfg = load_config("configs/study_attention_inception_v3_7000_10000_50.yaml")
    assert (cfg.data.vocab_size, cfg.data.num_images, cfg.train.epochs, cfg.train.batch_size) == (7000, 10000, 50, 64)
    assert cfg.model.units == 512 and cfg.model.embedding_dim == 256
    assert cfg.train.learning_rate == pytest.approx(4e-4)
    assert cfg.data.splits == {"train": 0.7, "val": 0.3}
    resnet = load_config("configs/study_attention_resnet50_7000_6000_30.yaml")
    assert resnet.features.backbone == "resnet50" and resnet.features.image_size == 299
