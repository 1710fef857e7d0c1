"""The valid values of every setting, in two tables: ``CHOICES`` (enumerated settings) and
``RANGES`` (numeric ones). ``config`` checks a loaded config against both; the CLI flags and
the library functions that take the same values (``make_train_dataset(caption_mode=...)``,
``AttentionCaptioner(init_state=...)``, ...) check against the same entries.

A leaf: imports nothing of the package but ``errors``.
"""

from __future__ import annotations

from dataclasses import dataclass

from keras_captioning.errors import CaptioningError


@dataclass(frozen=True)
class Range:
    """A closed or half-open interval of valid numbers; ``None`` leaves a side unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not valid (a learning rate of 0)
    high_open: bool = False

    def __contains__(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high}"
        return f"{'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"


# Every enumerated setting's valid values.
CHOICES = {
    ("data", "format"): ("synthetic", "coco", "karpathy", "flickr8k", "table"),
    ("features", "dtype"): ("float16", "float32"),
    ("model", "type"): ("attention", "merge", "transformer"),
    ("model", "transformer_norm"): ("pre", "post"),
    ("model", "transformer_positions"): ("learned", "sinusoidal"),
    ("model", "rnn"): ("gru", "lstm"),
    ("model", "init_state"): ("zeros", "features"),
    ("train", "caption_mode"): ("all", "random"),
    ("train", "batch_layout"): ("caption", "image"),
    ("train", "cache_features"): ("off", "auto", "on"),
    ("train", "mixed_precision"): ("auto", "on", "off"),
    ("train", "strategy"): ("default", "mirrored", "multiworker"),
    ("train", "select_on"): ("CIDEr-D", "BLEU-4", "val_loss"),
    ("train", "lr_schedule"): ("constant", "plateau"),
    ("train", "objective"): ("xe", "scst", "finetune"),
    ("train", "scst_baseline"): ("greedy", "mean"),
}

_AT_LEAST_1 = Range(1)
# Every numeric setting's valid values, checked when a config is loaded (None stays allowed
# where the default is None). CLI flags that set the same values (--beam, --length-penalty)
# are checked against the same entries by check_value.
RANGES = {
    ("data", "num_images"): _AT_LEAST_1,
    ("data", "seed"): Range(0),
    ("data", "vocab_size"): _AT_LEAST_1,
    ("data", "max_length"): Range(2),  # <start> and <end>
    ("data", "synthetic_images"): _AT_LEAST_1,
    ("data", "synthetic_image_size"): Range(48),  # the shapes need room (synthetic.MIN_IMAGE_SIZE)
    ("features", "image_size"): _AT_LEAST_1,  # each backbone then checks its own minimum
    ("features", "alpha"): Range(0, low_open=True),
    ("features", "batch_size"): _AT_LEAST_1,
    ("features", "shard_size"): _AT_LEAST_1,
    ("model", "embedding_dim"): _AT_LEAST_1,
    ("model", "units"): _AT_LEAST_1,
    ("model", "merge_units"): _AT_LEAST_1,
    ("model", "attention_units"): _AT_LEAST_1,
    ("model", "dropout"): Range(0, 1, high_open=True),
    ("model", "merge_dropout"): Range(0, 1, high_open=True),
    ("model", "attention_reg"): Range(0),
    ("model", "transformer_layers"): _AT_LEAST_1,
    ("model", "transformer_heads"): _AT_LEAST_1,
    ("model", "transformer_dim"): _AT_LEAST_1,
    ("model", "transformer_ff_dim"): _AT_LEAST_1,
    ("model", "transformer_encoder_layers"): Range(0),
    ("model", "transformer_max_positions"): _AT_LEAST_1,
    ("model", "transformer_dropout"): Range(0, 1, high_open=True),
    ("train", "batch_size"): _AT_LEAST_1,
    ("train", "epochs"): _AT_LEAST_1,
    ("train", "learning_rate"): Range(0, low_open=True),
    ("train", "encoder_learning_rate"): Range(0, low_open=True),
    ("train", "clipnorm"): Range(0, low_open=True),
    ("train", "shuffle_buffer"): _AT_LEAST_1,
    ("train", "seed"): Range(0),
    ("train", "val_decode_images"): _AT_LEAST_1,
    ("train", "lr_decay_factor"): Range(0, 1, low_open=True, high_open=True),
    ("train", "lr_patience"): _AT_LEAST_1,
    ("train", "min_learning_rate"): Range(0),
    ("train", "early_stopping_patience"): _AT_LEAST_1,
    ("train", "steps_per_epoch"): _AT_LEAST_1,
    ("train", "scst_samples"): Range(1, 100),
    ("train", "scst_max_length"): Range(1, 1000),
    # Beam search keeps beam x vocabulary scores per image: a bound keeps memory bounded
    # (evaluation also refuses a beam wider than the run's vocabulary).
    ("eval", "beam"): Range(1, 100),
    ("eval", "length_penalty"): Range(0, 10),
    ("eval", "max_length"): Range(1, 1000),
    ("eval", "batch_size"): _AT_LEAST_1,
    ("eval", "num_panels"): Range(1, 50),
}


def check_value(section: str, key: str, value, name: str | None = None):
    """Returns ``value`` if it lies in ``section.key``'s range, else raises naming ``name`` and the range.

    ``name`` is what the user typed (``--beam``); default ``section.key``.
    """
    valid = RANGES[(section, key)]
    label = name or f"{section}.{key}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CaptioningError(f"{label}={value!r} is not a number; valid: {valid}")
    if value != value or abs(value) == float("inf") or value not in valid:  # value != value: NaN
        raise CaptioningError(f"{label}={value!r} is out of range; valid: {valid}")
    return value
