"""Model presets: `BertConfig`s built locally (no hub download), every field overridable."""

from __future__ import annotations

from typing import Any

from transformers import BertConfig

from taco.errors import TacoError

# layers / hidden / heads / intermediate. `small` is the paper's BERT-small (Fu et al. 2022, Table 1).
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512),
    "mini": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024),
    "small": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}


POSITIVE_INTS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "vocab_size", "type_vocab_size")
PROBABILITIES = ("hidden_dropout_prob", "attention_probs_dropout_prob")


def build_config(
    preset: str,
    vocab_size: int,
    *,
    pad_token_id: int = 0,
    overrides: dict[str, Any] | None = None,
) -> BertConfig:
    """A `BertConfig` for `preset` with the tokenizer's vocabulary size and any field overridden.

    Unknown presets or override keys that `BertConfig` does not have raise `TacoError`.
    """
    if preset not in PRESETS:
        raise TacoError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    fields: dict[str, Any] = dict(PRESETS[preset])
    fields.update(vocab_size=vocab_size, pad_token_id=pad_token_id, max_position_embeddings=512)
    for key, value in (overrides or {}).items():
        if not hasattr(BertConfig(), key):
            raise TacoError(f"model override {key!r} is not a BertConfig field; check --model-overrides")
        if key in POSITIVE_INTS and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise TacoError(f"model override {key}={value!r}: must be a whole number >= 1; fix --model-overrides")
        if key in PROBABILITIES and (isinstance(value, bool) or not isinstance(value, (int, float))
                                     or not 0 <= value < 1):
            raise TacoError(f"model override {key}={value!r}: must be a number in [0, 1); fix --model-overrides")
        fields[key] = value
    try:
        config = BertConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise TacoError(f"--model-overrides: BertConfig rejects them ({str(exc).splitlines()[0]}); fix the "
                        "values") from None
    if config.hidden_size % config.num_attention_heads:
        raise TacoError(
            f"hidden_size {config.hidden_size} is not divisible by num_attention_heads "
            f"{config.num_attention_heads}; fix --model-overrides"
        )
    return config


def count_parameters(config: BertConfig) -> dict[str, int]:
    """Parameter counts of a BERT encoder: embeddings and the non-embedding transformer body."""
    h, i, n_layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    per_layer = 4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h  # attention, FFN, two LayerNorms
    embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * h + 2 * h
    return {"embedding": embeddings, "non_embedding": n_layers * per_layer}
