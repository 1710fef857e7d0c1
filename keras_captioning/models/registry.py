"""Model types, declared once: which feature a model reads, how it is built from the config,
and how it is named in reports. The trainer, SCST, evaluation, the captioner and bundles ask
this table instead of branching on ``model.type``.

Every type decodes the same way: greedy, sampling and beam search go through the model's
``decode_step`` (``keras_captioning.decoding``); ``has_attention`` says whether that step
returns attention weights over regions (attention maps are drawn only then).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from keras_captioning.errors import CaptioningError


@dataclass(frozen=True)
class ModelType:
    """One entry of ``MODEL_TYPES``."""

    name: str
    feature: str  # "grid" (B, R, D) regions | "pooled" (B, D) vector
    label: str  # how reports name it
    has_attention: bool
    build: Callable  # (model_config, vocab_size, grid_shape, special_ids) -> keras.Model
    class_name: str = ""  # the class its models have (bundles and reports name a loaded model by it)


def _build_attention(m, vocab_size: int, grid_shape, special_ids: dict):
    from keras_captioning.models.attention_captioner import AttentionCaptioner

    return AttentionCaptioner(
        vocab_size=vocab_size, feature_dim=int(grid_shape[1]), num_regions=int(grid_shape[0]),
        embedding_dim=m.embedding_dim, units=m.units, rnn=m.rnn,
        attention_units=m.attention_units, attention_vector=m.attention_vector,
        dropout=m.dropout, attention_reg=m.attention_reg, init_state=m.init_state, **special_ids,
    )


def _build_merge(m, vocab_size: int, grid_shape, special_ids: dict):
    from keras_captioning.models.merge_captioner import build_merge_captioner

    return build_merge_captioner(
        vocab_size=vocab_size, feature_dim=int(grid_shape[1]), embedding_dim=m.embedding_dim,
        units=m.merge_units, dropout=m.merge_dropout, **special_ids,
    )


def _build_transformer(m, vocab_size: int, grid_shape, special_ids: dict):
    from keras_captioning.models.transformer_captioner import TransformerCaptioner

    return TransformerCaptioner(
        vocab_size=vocab_size, feature_dim=int(grid_shape[1]), num_regions=int(grid_shape[0]),
        model_dim=m.transformer_dim, num_heads=m.transformer_heads, ff_dim=m.transformer_ff_dim,
        num_layers=m.transformer_layers, encoder_layers=m.transformer_encoder_layers, norm=m.transformer_norm,
        positions=m.transformer_positions, max_positions=m.transformer_max_positions,
        dropout=m.transformer_dropout, attention_layer=m.transformer_attention_layer, **special_ids,
    )


MODEL_TYPES = {
    "attention": ModelType("attention", "grid", "attention", True, _build_attention, "AttentionCaptioner"),
    "merge": ModelType("merge", "pooled", "vanilla (merge)", False, _build_merge, "MergeCaptioner"),
    "transformer": ModelType("transformer", "grid", "transformer", True, _build_transformer, "TransformerCaptioner"),
}


def model_type_of(model) -> ModelType:
    """The registry entry of a built or loaded model, found by its class."""
    for entry in MODEL_TYPES.values():
        if type(model).__name__ == entry.class_name:
            return entry
    raise CaptioningError(f"model: {type(model).__name__} is not a captioner of {sorted(MODEL_TYPES)}")


def model_type(name: str) -> ModelType:
    """The registry entry of ``name``, or a CaptioningError listing the known types."""
    try:
        return MODEL_TYPES[name]
    except KeyError:
        raise CaptioningError(f"model.type: unknown model type {name!r}; choose one of {sorted(MODEL_TYPES)}") from None


def build_model(cfg, vocab_size: int, grid_shape, special_ids: dict):
    """Builds ``cfg.model.type``'s model; ``grid_shape`` is (regions, channels) from the manifest."""
    return model_type(cfg.model.type).build(cfg.model, vocab_size, grid_shape, special_ids)
