"""Experiment configuration: dataclasses with commented defaults, one YAML per experiment.

A YAML file holds any subset of the sections below; what it leaves out keeps the
default. ``--set section.key=value`` overrides one value (the value is parsed as
YAML, so ``--set train.epochs=3`` gives an int and ``--set data.splits=null`` a None).
Unknown sections or keys are errors that list the valid names, so a typo never
silently trains with a default.

This module is a leaf: it imports neither TensorFlow nor the rest of the package
(except ``errors``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import yaml

from keras_captioning.errors import CaptioningError
from keras_captioning.ranges import CHOICES, RANGES, check_value


@dataclass
class DataConfig:
    format: str = "synthetic"  # synthetic | coco | karpathy | flickr8k | table (your own photos)
    root: str = "data/synthetic"  # dataset folder (synthetic: generated here if missing)
    captions: str | None = None  # captions file (COCO/Karpathy JSON, Flickr8k token/CSV, table)
    images: str | None = None  # image folder (default: <root>/images or the file's folder)
    num_images: int | None = None  # the study's subset: 6000 or 10000 images (None = all)
    splits: dict | None = field(  # by-image split ratios; None keeps the dataset's own split
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1}
    )
    seed: int = 0  # seeds the subset choice and the split
    vocab_size: int = 5000  # top-K words (the study: 5000 or 7000)
    max_length: int | None = 32  # tokens incl. <start>/<end>; longer captions are truncated
    synthetic_images: int = 1500  # size of the generated dataset when format=synthetic
    synthetic_image_size: int = 96
    # format=table: a CSV / TSV / JSON-lines file, one row per (image, caption) (data/table.py)
    image_column: str = "image"  # image file name, relative to data.images
    caption_column: str = "caption"  # one caption
    split_column: str | None = "split"  # the image's split; absent column or null: data.splits applies
    delimiter: str | None = None  # CSV/TSV field separator (one character, or "tab"); null: tab for
    #   .tsv/.tab files, else a comma (a file starting with "{" is read as JSON lines)


@dataclass
class FeatureConfig:
    backbone: str = "patches"  # inception_v3 | resnet50 | mobilenet | mobilenet_v2 | patches
    weights: str | None = "none"  # imagenet | none | path to a local Keras weights file
    image_size: int | None = None  # None = the backbone's own input size
    alpha: float = 1.0  # MobileNet width multiplier
    dtype: str = "float16"  # storage dtype of the grid (float16 | float32)
    batch_size: int = 32  # images per CNN batch
    shard_size: int = 1000  # images per TFRecord shard
    out_dir: str | None = None  # default: features/<experiment name>


@dataclass
class ModelConfig:
    type: str = "attention"  # attention | merge (the study's "vanilla")
    embedding_dim: int = 256
    units: int = 512  # RNN units (the merge model's LSTM uses merge_units)
    merge_units: int = 256
    rnn: str = "gru"  # gru | lstm (attention decoder cell)
    attention_units: int = 512
    attention_vector: bool = False  # the study's a_t = tanh(W_c [c_t; h_t])
    dropout: float = 0.0  # the merge model uses merge_dropout
    merge_dropout: float = 0.5
    attention_reg: float = 0.0  # doubly stochastic attention regularisation (lambda)
    init_state: str = "zeros"  # zeros (study) | features (h0/c0 = tanh(W mean region), as SAT)
    # model.type: transformer (models/transformer_captioner.py)
    transformer_layers: int = 2  # decoder layers
    transformer_heads: int = 8  # attention heads (transformer_dim must be a multiple)
    transformer_dim: int = 512  # model width; the regions are projected to it
    transformer_ff_dim: int = 2048  # inner width of the feed-forward blocks
    transformer_encoder_layers: int = 0  # self-attention layers over the regions before the decoder
    transformer_norm: str = "pre"  # pre | post (LayerNorm before each block, or after each residual sum)
    transformer_positions: str = "learned"  # learned | sinusoidal
    transformer_max_positions: int = 64  # longest input / decoding steps (the key/value cache size)
    transformer_dropout: float = 0.1
    transformer_attention_layer: int = -1  # decoder layer whose cross-attention is the attention map (-1: last)


@dataclass
class TrainConfig:
    batch_size: int = 64
    epochs: int = 10
    learning_rate: float = 4e-4  # Adam, as in the paper
    clipnorm: float | None = None  # gradient clipping by global norm per variable
    caption_mode: str = "all"  # all: one example per (image, caption), as in the study | random
    batch_layout: str = "caption"  # caption: one feature row per caption row (the study's) | image:
    #   an image's captions together, its features read and encoded once per batch (seq_per_img)
    cache_features: str = "off"  # on: hold the train split's features in memory; auto: when <= 4 GiB
    shuffle_buffer: int = 10000
    seed: int = 0  # weight initialisation, data order, SCST sampling
    seeds: list | None = None  # several seeds, e.g. [0, 1, 2]: one run per seed in <run_dir>/seed-<n>
    #   (train.seed is then each of them); the demo's report gives mean +- sd over them
    mixed_precision: str = "auto"  # auto (mixed_float16 when a GPU is present) | on | off
    strategy: str = "default"  # default | mirrored | multiworker
    jit_compile: bool = False  # XLA
    length_buckets: list | None = None  # caption widths in tokens, e.g. [10, 14, 18, 24, 32]:
    #   batches grouped by length, each padded to the smallest width holding it; None pads every
    #   batch to the longest caption (the study's way)
    select_on: str = "CIDEr-D"  # best.keras on: CIDEr-D | BLEU-4 (greedy-decoded val split, each
    #   epoch) | val_loss (teacher-forced, the study's way)
    val_decode_images: int | None = None  # decode only the first N val images per epoch (None: all)
    lr_schedule: str = "constant"  # constant | plateau (x lr_decay_factor when select_on stalls)
    lr_decay_factor: float = 0.5
    lr_patience: int = 2  # epochs without a select_on improvement before a decay
    min_learning_rate: float = 1e-6
    early_stopping_patience: int | None = None  # epochs without a select_on improvement
    terminate_on_nan: bool = True
    steps_per_epoch: int | None = None  # cap (smoke runs); None = one pass over the data
    run_dir: str | None = None  # default: runs/<experiment name>
    # Self-critical sequence training (training/scst.py): objective=scst fine-tunes the best.keras
    # of the cross-entropy run init_from with REINFORCE on CIDEr-D, in its own run_dir.
    objective: str = "xe"  # xe (teacher-forced cross-entropy) | scst | finetune (the CNN too, from images)
    init_from: str | None = None  # scst, finetune: the run directory whose checkpoints/best.keras starts it
    # CNN fine-tuning (training/finetune_stage.py): batch_size counts images (each with all its
    # captions); the backbone's layers from finetune_from on learn (BatchNorm stays frozen).
    finetune_from: str | None = None  # finetune: first trainable backbone layer, e.g. blocks_11_expand_conv;
    #   "none": the CNN stays fixed (the control run: the same stage without fine-tuning)
    encoder_learning_rate: float = 1e-5  # finetune: Adam's rate for the CNN's trainable layers
    scst_samples: int = 5  # scst: K captions sampled per image per step
    scst_baseline: str = "greedy"  # scst: greedy (the greedy caption's CIDEr-D, Rennie et al.) |
    #   mean (the mean CIDEr-D of the image's other K-1 samples, "new SCST"; needs K >= 2)
    scst_max_length: int = 16  # scst: sampled captions stop after this many steps (END included)
    scst_dropout: bool = False  # scst: the policy-gradient pass runs the model with its dropout on
    #   (model.dropout), as self-critical.pytorch trains in train mode; sampling stays dropout-free
    scst_reward_end: bool = False  # scst: the END token is a word of the reward's n-grams (captions
    #   and references), as in self-critical.pytorch: "... on a END" matches no reference, and a
    #   caption cut off by scst_max_length earns no end n-grams


@dataclass
class EvalConfig:
    split: str = "test"
    beam: int = 3  # 1 = greedy
    length_penalty: float = 0.0
    max_length: int = 20  # generated tokens
    batch_size: int = 64
    num_panels: int = 3  # examples per Good / Fair / Bad panel


@dataclass
class ExperimentConfig:
    name: str = "demo"
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def features_dir(self) -> str:
        return self.features.out_dir or os.path.join("features", self.name)

    @property
    def run_dir(self) -> str:
        return self.train.run_dir or os.path.join("runs", self.name)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SECTIONS = {f.name: f.type for f in dataclasses.fields(ExperimentConfig) if f.name != "name"}


def _section_class(name: str):
    return {"data": DataConfig, "features": FeatureConfig, "model": ModelConfig,
            "train": TrainConfig, "eval": EvalConfig}[name]


def _valid_keys(cls) -> list:
    return [f.name for f in dataclasses.fields(cls)]


def from_dict(raw: dict, source: str = "config") -> ExperimentConfig:
    """Builds a config from a nested dict, rejecting unknown sections and keys."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CaptioningError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    cfg = ExperimentConfig()
    for key, value in raw.items():
        if key == "name":
            cfg.name = str(value)
            continue
        if key not in _SECTIONS:
            raise CaptioningError(
                f"{source}: unknown section '{key}'; valid: name, {', '.join(_SECTIONS)}"
            )
        if value is None:
            continue
        if not isinstance(value, dict):
            raise CaptioningError(f"{source}: section '{key}' must be a mapping")
        section = getattr(cfg, key)
        valid = _valid_keys(_section_class(key))
        for sub, subvalue in value.items():
            if sub not in valid:
                raise CaptioningError(
                    f"{source}: unknown key '{key}.{sub}'; valid keys of '{key}': {', '.join(valid)}"
                )
            setattr(section, sub, subvalue)
    validate(cfg, source)
    return cfg


def apply_overrides(raw: dict, overrides) -> dict:
    """Applies ``section.key=value`` strings to a nested dict (values parsed as YAML)."""
    raw = dict(raw or {})
    for item in overrides or []:
        if "=" not in item:
            raise CaptioningError(f"--set {item!r}: expected section.key=value")
        path, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text != "" else None
        except yaml.YAMLError as exc:
            raise CaptioningError(f"--set {path}: cannot parse value {text!r}: {exc}") from None
        parts = path.strip().split(".")
        if parts == ["name"]:
            raw["name"] = value
            continue
        if len(parts) != 2:
            raise CaptioningError(f"--set {path}: expected section.key (e.g. train.epochs)")
        section, key = parts
        node = dict(raw.get(section) or {})
        node[key] = value
        raw[section] = node
    return raw


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _resolve_base(raw: dict, path: str, seen: tuple) -> dict:
    """``base: other.yaml`` (relative to this file) supplies defaults this file overrides."""
    base_name = raw.pop("base", None)
    if base_name is None:
        return raw
    base_path = os.path.join(os.path.dirname(path), base_name)
    if os.path.abspath(base_path) in seen:
        raise CaptioningError(f"{path}: 'base: {base_name}' makes a cycle")
    if not os.path.exists(base_path):
        raise CaptioningError(f"{path}: base config {base_path} not found")
    with open(base_path, encoding="utf-8") as fh:
        base_raw = yaml.safe_load(fh) or {}
    base_raw = _resolve_base(base_raw, base_path, seen + (os.path.abspath(base_path),))
    base_raw.pop("name", None)  # a file's name is its own, never inherited
    return _merge(base_raw, raw)


def load_config(path: str | None = None, overrides=None) -> ExperimentConfig:
    """Loads a YAML experiment file (or the defaults when ``path`` is None) plus overrides."""
    raw: dict = {}
    source = path or "defaults"
    if path is not None:
        if not os.path.exists(path):
            raise CaptioningError(f"{path}: config file not found")
        if not os.path.isfile(path):
            raise CaptioningError(f"{path}: is a folder, not a config file; pass a YAML file "
                                  "such as configs/demo.yaml")
        try:
            with open(path, encoding="utf-8") as fh:
                raw = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise CaptioningError(f"{path}: not valid YAML: {exc}".splitlines()[0]) from None
        if not isinstance(raw, dict):
            raise CaptioningError(f"{path}: expected a mapping of sections at the top level")
        raw = _resolve_base(raw, path, seen=(os.path.abspath(path),))
        if "name" not in raw:
            raw["name"] = os.path.splitext(os.path.basename(path))[0]
    raw = apply_overrides(raw, overrides)
    return from_dict(raw, source)


def check_folder(path, label: str) -> None:
    """Refuses an output folder path that is (or lies below) an existing file."""
    if path is None:
        return
    probe = os.path.abspath(os.fspath(path))
    while probe and not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return
        probe = parent
    if not os.path.isdir(probe):
        raise CaptioningError(f"{label}={path}: {probe} is a file, not a folder; choose another path")


def validate(cfg: ExperimentConfig, source: str = "config") -> None:
    """Checks enumerated fields, types and numeric ranges up front, before any data is touched."""
    for (section, key), choices in CHOICES.items():
        value = getattr(getattr(cfg, section), key)
        if isinstance(value, bool):  # YAML turns on/off into booleans
            value = "on" if value else "off"
            setattr(getattr(cfg, section), key, value)
        if value not in choices:
            raise CaptioningError(
                f"{source}: {section}.{key}={value!r} is not valid; choose one of {', '.join(choices)}"
            )
    for section_name in _SECTIONS:
        section = getattr(cfg, section_name)
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            default = f.default if f.default is not dataclasses.MISSING else None
            if value is None or default is None or isinstance(default, (dict, str)):
                continue
            expected = type(default)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                setattr(section, f.name, float(value))
                continue
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise CaptioningError(
                    f"{source}: {section_name}.{f.name} must be {expected.__name__}, got {value!r}"
                )
    for (section, key) in RANGES:
        value = getattr(getattr(cfg, section), key)
        if value is not None:
            try:
                check_value(section, key, value)
            except CaptioningError as exc:
                raise CaptioningError(f"{source}: {exc}") from None
    buckets = cfg.train.length_buckets
    if buckets is not None and (not isinstance(buckets, list) or not buckets or any(
            isinstance(b, bool) or not isinstance(b, int) or b < 2 for b in buckets)
            or buckets != sorted(set(buckets))):
        raise CaptioningError(f"{source}: train.length_buckets={buckets!r}: expected null or a list of "
                              "increasing integers >= 2 (caption widths in tokens)")
    # Settings for one device and every caption of an image: image-major batches share feature
    # rows between caption rows (a batch cannot be split across replicas); the cache feeds the
    # "all" pipeline from memory.
    for key, value in (("batch_layout", "image"), ("cache_features", "on")):
        if getattr(cfg.train, key) == value and (cfg.train.caption_mode != "all" or cfg.train.strategy != "default"):
            raise CaptioningError(f"{source}: train.{key}={value} needs train.caption_mode=all and "
                                  "train.strategy=default")
    seeds = cfg.train.seeds
    if seeds is not None and (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds) or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)):
        raise CaptioningError(f"{source}: train.seeds={seeds!r}: expected null or a list of distinct "
                              "integers >= 0")
    if cfg.train.objective in ("scst", "finetune") and not cfg.train.init_from:
        raise CaptioningError(f"{source}: train.objective={cfg.train.objective} needs train.init_from=<run "
                              "directory of a cross-entropy run> (its checkpoints/best.keras starts the fine-tuning)")
    if cfg.train.objective == "finetune" and not cfg.train.finetune_from:
        raise CaptioningError(f"{source}: train.objective=finetune needs train.finetune_from=<the first backbone "
                              "layer to train> (e.g. blocks_11_expand_conv for efficientnet_lite0)")
    if cfg.train.objective == "scst" and cfg.train.scst_baseline == "mean" and cfg.train.scst_samples < 2:
        raise CaptioningError(f"{source}: train.scst_baseline=mean needs train.scst_samples >= 2 "
                              f"(the mean of the other samples), got {cfg.train.scst_samples}")
    _validate_table(cfg.data, source)
    if cfg.model.type == "transformer":
        _check_transformer(cfg, source)
    check_folder(cfg.features.out_dir, "features.out_dir")
    check_folder(cfg.train.run_dir, "train.run_dir")


def _validate_table(data: DataConfig, source: str) -> None:
    """The caption table's column names and delimiter (``data.format: table``)."""
    for key in ("image_column", "caption_column", "split_column"):
        value = getattr(data, key)
        if (value is not None or key != "split_column") and (not isinstance(value, str) or not value.strip()):
            raise CaptioningError(f"{source}: data.{key}={value!r}: expected a column name")
    if len({data.image_column, data.caption_column, data.split_column} - {None}) < (2 + bool(data.split_column)):
        raise CaptioningError(f"{source}: data.image_column, data.caption_column and data.split_column must "
                              "name different columns")
    if data.delimiter == "tab":
        data.delimiter = "\t"
    if data.delimiter is not None and (not isinstance(data.delimiter, str) or len(data.delimiter) != 1
                                       or data.delimiter in "\"\r\n"):
        raise CaptioningError(f"{source}: data.delimiter={data.delimiter!r}: expected null, \"tab\" or one "
                              "character such as \",\" or \";\"")


def _check_transformer(cfg: ExperimentConfig, source: str) -> None:
    m = cfg.model
    if m.transformer_dim % m.transformer_heads:
        raise CaptioningError(f"{source}: model.transformer_dim={m.transformer_dim} must be a multiple of "
                              f"model.transformer_heads={m.transformer_heads}")
    if not -m.transformer_layers <= m.transformer_attention_layer < m.transformer_layers:
        raise CaptioningError(f"{source}: model.transformer_attention_layer={m.transformer_attention_layer} is not "
                              f"one of the {m.transformer_layers} decoder layers (0 ... {m.transformer_layers - 1}, "
                              "or -1 for the last)")
    # The key/value cache has a fixed size: decoding must fit in it.
    steps = max(cfg.eval.max_length, cfg.train.scst_max_length, (cfg.data.max_length or 0) - 1)
    if m.transformer_max_positions < steps:
        raise CaptioningError(f"{source}: model.transformer_max_positions={m.transformer_max_positions} is below "
                              f"the {steps} positions eval.max_length, train.scst_max_length or data.max_length "
                              "need; raise it")


def save_config(cfg: ExperimentConfig, path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(cfg.to_dict(), fh, sort_keys=False)


def config_help() -> str:
    """A one-screen listing of every section and key with its default."""
    lines = []
    for name, cls in [("data", DataConfig), ("features", FeatureConfig), ("model", ModelConfig),
                      ("train", TrainConfig), ("eval", EvalConfig)]:
        lines.append(f"{name}:")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"  {f.name}: {default!r}")
    return "\n".join(lines)

