"""Model selection on decoded captions, the plateau schedule and the recipe switches."""

import csv
import json
import os

import keras
import numpy as np
import pytest

from keras_captioning.config import load_config
from keras_captioning.features.feature_folder import FeatureFolder
from keras_captioning.models import AttentionCaptioner
from keras_captioning.models.registry import build_model
from keras_captioning.models.rnn_decoder import RNNDecoder
from keras_captioning.training.selection import DecodedValidation, MetricSchedule, monitor_for
from keras_captioning.training.trainer import train
from tests.helpers import REPO, smoke_config


@pytest.fixture(scope="module")
def selected_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("select")
    cfg = smoke_config(root, "attention", **{"train.epochs": 3, "train.select_on": "CIDEr-D",
                                              "train.length_buckets": "[6, 9]"})
    return cfg, train(cfg)


@pytest.mark.slow  # trains a 3-epoch run of its own
def test_decoded_scores_are_logged_and_select_best(selected_run):
    cfg, run = selected_run
    with open(os.path.join(run, "log.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert {"val_cider_d", "val_bleu_4", "val_loss", "learning_rate"} <= set(rows[0])
    cider = [float(r["val_cider_d"]) for r in rows]
    state = json.loads(open(os.path.join(run, "state.json")).read())
    assert state["select_on"] == "val_cider_d" and state["best"] == pytest.approx(max(cider))
    assert state["best_val_loss"] == pytest.approx(min(float(r["val_loss"]) for r in rows))
    for name in ("best.keras", "best-val_loss.keras", "last.keras"):
        assert os.path.exists(os.path.join(run, "checkpoints", name))
    assert os.listdir(os.path.join(run, "tensorboard", "validation"))


@pytest.mark.slow  # trains a 3-epoch run of its own
def test_logged_cider_is_the_package_metric_on_greedy_captions(selected_run):
    """The last epoch's val_cider_d equals CIDEr-D of last.keras's greedy val captions."""
    from keras_captioning.data.pipeline import make_eval_dataset
    from keras_captioning.data.vocab import Vocabulary
    from keras_captioning.evaluate import load_model
    from keras_captioning.metrics import score_all

    cfg, run = selected_run
    model = load_model(run, "last")
    vocab = Vocabulary.load(os.path.join(run, "vocab.json"))
    dataset = make_eval_dataset(FeatureFolder(cfg.features_dir).shard_pattern("val"), 7)
    callback = DecodedValidation(dataset, vocab, max_length=cfg.eval.max_length)
    callback.set_model(model)
    gts, res = callback.decode()
    assert len(res) == 6  # every val image of the smoke split, once
    res = {k: v if v[0].strip() else ["<empty>"] for k, v in res.items()}
    expected = score_all(gts, res, metrics=["CIDEr-D"])["CIDEr-D"]
    with open(os.path.join(run, "log.csv")) as fh:
        last = list(csv.DictReader(fh))[-1]
    assert float(last["val_cider_d"]) == pytest.approx(expected, abs=1e-9)


def _tiny_model(lr=1.0):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
    return model


def test_plateau_decays_then_stops_and_its_state_resumes():
    schedule = MetricSchedule("val_cider_d", "max", lr_factor=0.5, lr_patience=2, min_lr=0.2, stop_patience=4)
    schedule.set_model(_tiny_model(1.0))
    lrs = []
    for epoch, value in enumerate([0.1, 0.3, 0.2, 0.25, 0.29, 0.1]):
        logs = {"val_cider_d": value}
        schedule.on_epoch_end(epoch, logs)
        lrs.append(logs["learning_rate"])
        if epoch == 3:
            saved = schedule.state()
    # improved at epochs 0 and 1; decays after two stalls (epoch 3) and two more (epoch 5)
    assert lrs[:5] == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.5])
    assert float(schedule.model.optimizer.learning_rate) == pytest.approx(0.25)
    assert schedule.model.stop_training and schedule.stopped_epoch == 5
    resumed = MetricSchedule("val_cider_d", "max", lr_factor=0.5, lr_patience=2, stop_patience=4)
    resumed.load_state(json.loads(json.dumps(saved)))
    assert (resumed.best, resumed.wait, resumed.lr_wait) == (0.3, 2, 0)
    assert monitor_for("val_loss") == ("val_loss", "min") and monitor_for("BLEU-4") == ("val_bleu_4", "max")


def test_select_on_is_validated():
    from keras_captioning.errors import CaptioningError

    with pytest.raises(CaptioningError, match="train.select_on"):
        load_config(None, ["train.select_on=accuracy"])
    with pytest.raises(CaptioningError, match="train.lr_schedule"):
        load_config(None, ["train.lr_schedule=cosine"])


def test_dropout_switch_reaches_the_output_layers():
    decoder = RNNDecoder(12, embedding_dim=4, units=6, dropout=0.5)
    decoder.build((None, 4))
    hidden, context = np.ones((3, 6), "float32"), np.ones((3, 4), "float32")
    inference = decoder.output_logits(hidden, context, training=False)
    np.testing.assert_array_equal(inference, decoder.output_logits(hidden, context, training=False))
    assert not np.allclose(inference, decoder.output_logits(hidden, context, training=True))
    assert RNNDecoder.from_config(decoder.get_config()).dropout == 0.5


@pytest.mark.parametrize("name", ["flickr8k_attention", "flickr8k_vanilla"])
def test_flickr8k_configs_switch_the_recipe_on(name):
    cfg = load_config(str(REPO / "configs" / f"{name}.yaml"))
    assert cfg.data.format == "karpathy" and cfg.data.splits is None
    assert cfg.data.captions == "data/flickr8k/dataset_flickr8k.json"
    assert cfg.features.weights == "data/weights/mobilenet_2_5_224_tf_no_top.h5"
    assert cfg.features.backbone == "mobilenet" and cfg.features.alpha == 0.25
    assert cfg.train.select_on == "CIDEr-D" and cfg.train.lr_schedule == "plateau"
    assert cfg.train.early_stopping_patience and cfg.train.length_buckets
    model = build_model(cfg, 30, (49, 8), {"pad_id": 0, "start_id": 2, "end_id": 3})
    if cfg.model.type == "attention":
        assert cfg.model.dropout > 0 and cfg.model.attention_reg > 0
        assert isinstance(model, AttentionCaptioner) and model.attention_reg == cfg.model.attention_reg
        features = np.random.default_rng(0).random((2, 49, 8)).astype("float32")
        tokens = np.array([[2, 5, 6, 3], [2, 7, 3, 0]])
        _, penalty = model.compute_logits_and_penalty(features, tokens[:, :-1], tokens[:, 1:])
        assert float(penalty) > 0
    else:
        assert cfg.model.merge_dropout > 0 and model.dropout == cfg.model.merge_dropout


def test_loss_plot_draws_only_logged_curves(tmp_path, recwarn):
    """An SCST-style log (no accuracy, no val_loss) gives a plot without empty panels."""
    from keras_captioning.viz import plot_loss_curves

    log_csv = tmp_path / "log.csv"
    log_csv.write_text("epoch,loss,val_cider_d\n0,2.5,0.31\n1,2.4,0.35\n")
    assert plot_loss_curves(str(log_csv), str(tmp_path / "loss.png")) == str(tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert not [w for w in recwarn if "legend" in str(w.message)]
    (tmp_path / "empty.csv").write_text("epoch,learning_rate\n0,0.1\n")
    assert plot_loss_curves(str(tmp_path / "empty.csv"), str(tmp_path / "none.png")) is None
