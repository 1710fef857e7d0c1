"""How the configs of runs relate: what ``train --resume`` may change, and one config per seed."""

from __future__ import annotations

import os

from keras_captioning.config import ExperimentConfig, from_dict

#: What ``train --resume`` may change: how long and how the schedule goes on, where files are,
#: and evaluation. Every other setting alters the model, the data or the features (or is not
#: applied to a resumed optimizer: learning_rate, clipnorm, jit_compile) and is refused.
RESUMABLE = frozenset({
    "name", "train.run_dir", "features.out_dir", "features.batch_size",
    "train.epochs", "train.early_stopping_patience", "train.lr_schedule", "train.lr_decay_factor",
    "train.lr_patience", "train.min_learning_rate", "train.terminate_on_nan", "train.val_decode_images",
})


def _flat(cfg: ExperimentConfig) -> dict:
    raw = cfg.to_dict()
    flat = {"name": raw.pop("name")}
    for section, values in raw.items():
        flat.update({f"{section}.{key}": value for key, value in values.items()})
    return flat


def config_changes(old: ExperimentConfig, new: ExperimentConfig) -> tuple[list[str], list[str]]:
    """``(refused, allowed)`` differences ``"section.key: old -> new"`` of a resumed run's config.

    ``eval.*`` and the keys of ``RESUMABLE`` are allowed; everything else is refused.
    """
    before, after = _flat(old), _flat(new)
    refused, allowed = [], []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            change = f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
            (allowed if key in RESUMABLE or key.startswith("eval.") else refused).append(change)
    return refused, allowed


def seed_dir(run_dir: str, seed: int) -> str:
    """The run folder of one seed of a several-seed run."""
    return os.path.join(run_dir, f"seed-{seed}")


def seed_configs(cfg: ExperimentConfig) -> list[ExperimentConfig]:
    """One config per ``train.seeds`` entry (``train.seed`` set, run in ``seed_dir``); ``[cfg]`` without seeds."""
    if not cfg.train.seeds:
        return [cfg]
    out = []
    for seed in cfg.train.seeds:
        one = from_dict(cfg.to_dict(), "train.seeds")
        one.train.seed, one.train.seeds, one.train.run_dir = seed, None, seed_dir(cfg.run_dir, seed)
        if cfg.train.objective == "scst":  # each seed fine-tunes the same seed of the init run
            init = seed_dir(cfg.train.init_from, seed)
            one.train.init_from = init if os.path.isdir(init) else cfg.train.init_from
        out.append(one)
    return out
