"""The run directory: one class owns its layout, its state files and what makes it self-contained.

    run.json            package + run-format version, model type, backbone, features dir, policy
    config.yaml         the resolved experiment config
    vocab.json          the vocabulary the model was trained with
    manifest.json       the feature manifest it trained on (backbone, image size, weights, dtype)
    encoder.weights.h5  the encoder's weights when they cannot be rebuilt from a name: a randomly
                        initialised backbone (seeded; copied from the features folder)
    checkpoints/        last.keras, best.keras, best-val_loss.keras, previous.keras +
                        previous-state.json (see training/callbacks.py)
    state.json          next epoch, best values, optimizer step, schedule counters
    log.csv, tensorboard/, loss.png    training logs (steps.csv: a stage's per-step log, e.g. SCST)
    eval-*/             evaluation reports (evaluate.py)
    encoded/<ckpt>/     a fine-tuning run: the splits evaluate scores, extracted with that
                        checkpoint's own CNN (features/fine_tuned.py)

Everything ``caption`` needs is inside the folder: copy it to another machine (without the
features or the dataset) and ``Captioner.from_run`` rebuilds the encoder from ``manifest.json``
(a pretrained one by name, a local weights file by its recorded path and sha256, a random one
from ``encoder.weights.h5``). Standard library only.
"""

from __future__ import annotations

import glob
import json
import os
import shutil

from keras_captioning import __version__
from keras_captioning.errors import CaptioningError
from keras_captioning.utils import atomic_output, read_json, write_json_atomic

RUN_FORMAT_VERSION = 1
CHECKPOINTS = ("best", "best-val_loss", "last")


class RunDirectory:
    """Paths and atomic reads/writes of one run folder (see the module docstring)."""

    INFO, CONFIG, VOCAB, MANIFEST, STATE = "run.json", "config.yaml", "vocab.json", "manifest.json", "state.json"
    ENCODER_WEIGHTS = "encoder.weights.h5"
    LAST, PREVIOUS, PREVIOUS_STATE = "last.keras", "previous.keras", "previous-state.json"
    LOG_CSV, STEPS_CSV, TENSORBOARD, LOSS_PNG = "log.csv", "steps.csv", "tensorboard", "loss.png"

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)

    def __fspath__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"RunDirectory({self.path!r})"

    # ------------------------------------------------------------------ paths
    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def checkpoints_dir(self) -> str:
        return self.file("checkpoints")

    def checkpoint(self, name: str) -> str:
        """``checkpoints/<name>.keras`` (``name`` with or without the suffix)."""
        return os.path.join(self.checkpoints_dir, name if name.endswith(".keras") else f"{name}.keras")

    @property
    def state_path(self) -> str:
        return self.file(self.STATE)

    @property
    def previous_state_path(self) -> str:
        return os.path.join(self.checkpoints_dir, self.PREVIOUS_STATE)

    @property
    def log_csv(self) -> str:
        return self.file(self.LOG_CSV)

    @property
    def steps_csv(self) -> str:
        return self.file(self.STEPS_CSV)

    @property
    def tensorboard_dir(self) -> str:
        return self.file(self.TENSORBOARD)

    @property
    def loss_png(self) -> str:
        return self.file(self.LOSS_PNG)

    @property
    def vocab_path(self) -> str:
        return self.file(self.VOCAB)

    @property
    def config_path(self) -> str:
        return self.file(self.CONFIG)

    def encoded_dir(self, checkpoint: str) -> str:
        """``encoded/<checkpoint>/``: features made by a fine-tuned checkpoint's own encoder."""
        return os.path.join(self.file("encoded"), checkpoint.removesuffix(".keras"))

    @property
    def encoder_weights(self) -> str:
        return self.file(self.ENCODER_WEIGHTS)

    def report_files(self, name: str = "scores.json") -> list[str]:
        """Every ``<name>`` under the run's report folders, sorted."""
        return sorted(glob.glob(os.path.join(glob.escape(self.path), "**", name), recursive=True))

    # ------------------------------------------------------------------ reading
    def exists(self) -> bool:
        return os.path.exists(self.file(self.INFO))

    def has_checkpoint(self) -> bool:
        """True when the run has a checkpoint ``--resume`` could start from."""
        return any(os.path.isfile(self.checkpoint(name)) for name in (self.LAST, self.PREVIOUS))

    def info(self) -> dict:
        """``run.json``; refuses folders that are not runs or were written by an incompatible version."""
        path = self.file(self.INFO)
        if not os.path.exists(path):
            raise CaptioningError(f"{self.path}: not a run directory (no run.json); train one with "
                                  "`python -m keras_captioning train`")
        try:
            info = read_json(path)
        except (OSError, json.JSONDecodeError) as exc:
            raise CaptioningError(f"{path}: unreadable run info ({exc})") from None
        version = info.get("run_format")
        if version != RUN_FORMAT_VERSION:
            raise CaptioningError(
                f"{path}: run format {version!r} (package {info.get('package_version', '?')}) is not "
                f"the supported format {RUN_FORMAT_VERSION} (package {__version__}); retrain it, or "
                "use the package version that wrote it"
            )
        return info

    def config(self):
        """The run's ``ExperimentConfig`` (``config.yaml``)."""
        import yaml

        from keras_captioning.config import from_dict

        self.info()
        path = self.file(self.CONFIG)
        with open(path, encoding="utf-8") as fh:
            return from_dict(yaml.safe_load(fh), path)

    def manifest(self) -> dict:
        return read_json(self.file(self.MANIFEST))

    def vocab(self):
        from keras_captioning.data.vocab import Vocabulary

        return Vocabulary.load(self.file(self.VOCAB))

    def state(self) -> dict | None:
        return read_json(self.state_path) if os.path.exists(self.state_path) else None

    def features_dir(self) -> str:
        return self.info()["features_dir"]

    # ------------------------------------------------------------------ writing
    def write_state(self, state: dict) -> None:
        write_json_atomic(self.state_path, state)

    def write_config(self, cfg) -> None:
        """Writes ``config.yaml`` (atomically): the config of the model in ``checkpoints/``."""
        from keras_captioning.config import save_config

        with atomic_output(self.config_path) as tmp:
            save_config(cfg, tmp)

    def write_json(self, name: str, payload: dict) -> None:
        write_json_atomic(self.file(name), payload)

    def create(self, cfg, vocab, features_dir: str, policy: str | None = None, **extra) -> None:
        """Writes the run's identity: config, vocabulary, the manifest it trains on, the encoder
        weights a random backbone needs, and ``run.json`` (last: a run exists once it is there)."""
        from keras_captioning.features.feature_folder import FeatureFolder

        os.makedirs(self.checkpoints_dir, exist_ok=True)
        self.write_config(cfg)
        with atomic_output(self.vocab_path) as tmp:
            vocab.save(tmp)
        with atomic_output(self.file(self.MANIFEST)) as tmp:
            shutil.copyfile(FeatureFolder(features_dir).manifest_path, tmp)
        self.keep_encoder_weights(features_dir)
        self.write_json(self.INFO, {
            "run_format": RUN_FORMAT_VERSION, "package_version": __version__,
            "model_type": cfg.model.type, "backbone": cfg.features.backbone,
            "features_dir": features_dir, "policy": policy, **extra,
        })

    def keep_encoder_weights(self, features_dir: str) -> None:
        """Copies the random backbone's weights saved beside the shards into the run."""
        from keras_captioning.features.feature_folder import FeatureFolder

        source = FeatureFolder(features_dir).random_backbone_path
        if os.path.isfile(source):
            with atomic_output(self.encoder_weights) as tmp:
                shutil.copyfile(source, tmp)

    def remove(self) -> None:
        shutil.rmtree(self.path)
