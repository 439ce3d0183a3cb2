"""Independent float64 references of the attention and copying families (`dynamics.metrics.attention`,
`dynamics.metrics.copying`), for BERT and GPT-2 checkpoints.

The attention probabilities are computed here, not taken from the probe: the float64 model gives each block's input
(`hidden_states[l]`), and the checkpoint's own query and key projections — BERT's `attention.self.query`/`key`
(x Wᵀ + b); GPT-2's `ln_1` written out (γ (x − μ)/√(σ² + ε) + β) then `attn.c_attn` (x W + b, split into q, k, v)
— give, per block, head and query i, p_ij = exp(s_ij) / Σ_j' exp(s_ij') with s_ij = q_i · k_j / √d over the keys j
the model may attend to (all of them; j ≤ i for GPT-2). The quantities are then plain loops over heads and
queries, following the families' docstrings:

* queries: the content positions (not a special token); sinks: the block's special-token positions, or position 0;
* previous/next-token scores: over the queries where position i ∓ 1 exists; next not stored for GPT-2;
* copy blocks: start + T + t is the second copy's token t; duplicate-token key start + t, induction key
  start + t + 1; accuracy: for BERT the masked copy blocks through the float64 MLM head (argmax), scored at the
  second-copy positions whose first copy is visible (`second`) and the first-copy positions whose second copy is
  masked too (`first`); for GPT-2 next-token argmax at positions t = 1…T−1 of each copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class AttentionInputs:
    """A snapshot's reference attention: per layer 1…L (index l − 1) (B, H, T, T) float64 on the probe blocks and on
    the copy blocks, and what the loops need to know about them."""

    probs: list[np.ndarray]
    content: np.ndarray  # (B, T) bool
    special: np.ndarray  # (B, T) bool
    causal: bool
    copy_probs: list[np.ndarray]
    copy_start: int
    copy_length: int
    copy_first: np.ndarray  # bool, the head right at the scored first-copy positions
    copy_second: np.ndarray
    cache: dict | None = None  # (kind, layer) → per-head values, computed once


def _model(checkpoint: Path) -> tuple[Any, str]:
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    kind = json.loads((checkpoint / "config.json").read_text())["model_type"]
    auto = AutoModelForMaskedLM if kind == "bert" else AutoModelForCausalLM
    assert kind in ("bert", "gpt2"), f"no reference for {kind}"
    return auto.from_pretrained(str(checkpoint), dtype=torch.float64).eval(), kind


def _softmax_loop(q: np.ndarray, k: np.ndarray, heads: int, causal: bool) -> np.ndarray:
    """(H, T, T) probabilities of one block from its (T, H·d) queries and keys, one head and query at a time."""
    t, width = q.shape
    d = width // heads
    out = np.zeros((heads, t, t))
    for h in range(heads):
        for i in range(t):
            keys = range(i + 1) if causal else range(t)
            s = np.array([q[i, h * d : (h + 1) * d] @ k[j, h * d : (h + 1) * d] / math.sqrt(d) for j in keys])
            e = np.exp(s - s.max())
            out[h, i, : len(s)] = e / e.sum()
    return out


def probabilities(checkpoint: Path, ids: np.ndarray) -> list[np.ndarray]:
    """Per layer (B, H, T, T) float64 attention of the checkpoint on the blocks `ids` (module docstring)."""
    import torch
    from safetensors.numpy import load_file

    model, kind = _model(checkpoint)
    w = {k: v.astype(np.float64) for k, v in load_file(str(checkpoint / "model.safetensors")).items()}
    config = model.config
    with torch.inference_mode():
        states = model.base_model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                                  attention_mask=torch.ones(ids.shape, dtype=torch.long),
                                  output_hidden_states=True).hidden_states
    layers = []
    for layer in range(config.num_hidden_layers):
        x = states[layer].numpy()  # (B, T, H): the input of block `layer`
        if kind == "bert":
            p = f"bert.encoder.layer.{layer}.attention.self."
            q = x @ w[p + "query.weight"].T + w[p + "query.bias"]
            k = x @ w[p + "key.weight"].T + w[p + "key.bias"]
        else:
            p = f"transformer.h.{layer}."
            mu = x.mean(-1, keepdims=True)
            var = ((x - mu) ** 2).mean(-1, keepdims=True)
            xn = (x - mu) / np.sqrt(var + config.layer_norm_epsilon) * w[p + "ln_1.weight"] + w[p + "ln_1.bias"]
            qkv = xn @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
            width = x.shape[-1]
            q, k = qkv[..., :width], qkv[..., width : 2 * width]
        layers.append(np.stack([_softmax_loop(q[b], k[b], config.num_attention_heads, kind == "gpt2")
                                for b in range(ids.shape[0])]))
    return layers


def copy_predictions(checkpoint: Path, copy: Any, mask_id: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(first, second) bool: the float64 head right at the scored positions of each copy (module docstring)."""
    import torch

    model, kind = _model(checkpoint)
    ids = copy.ids.astype(np.int64)
    s, t = copy.start, copy.length
    first, second = [], []
    with torch.inference_mode():
        if kind == "bert":
            masked = copy.masked
            inputs = np.where(masked, mask_id, ids)
            pred = model(input_ids=torch.from_numpy(inputs)).logits.argmax(-1).numpy()
            for b in range(ids.shape[0]):
                for j in range(t):
                    a, c = s + j, s + t + j
                    if masked[b, c] and not masked[b, a]:
                        second.append(pred[b, c] == ids[b, c])
                    if masked[b, a] and masked[b, c]:
                        first.append(pred[b, a] == ids[b, a])
        else:
            pred = model(input_ids=torch.from_numpy(ids), use_cache=False).logits.argmax(-1).numpy()
            for b in range(ids.shape[0]):
                for j in range(1, t):
                    first.append(pred[b, s + j - 1] == ids[b, s + j])
                    second.append(pred[b, s + t + j - 1] == ids[b, s + t + j])
    return np.array(first, dtype=bool), np.array(second, dtype=bool)


def attention_inputs(checkpoint: Path, probe: Any, special_ids: np.ndarray) -> AttentionInputs:
    """The references' attention inputs of one snapshot on the probe set `probe` (its blocks and copy blocks)."""
    special = np.isin(probe.ids, special_ids)
    _, kind = _model(checkpoint)
    first, second = copy_predictions(checkpoint, probe.copy, probe.mask_id)
    return AttentionInputs(probabilities(checkpoint, probe.ids), ~special, special, kind == "gpt2",
                           probabilities(checkpoint, probe.copy.ids), probe.copy.start, probe.copy.length, first, second)


# ------------------------------------------------------------------------------------------------ the quantities

def _per_head(a: AttentionInputs, layer: int, value: Any, *, offset: int | None = None) -> np.ndarray:
    """(H,) mean over the content queries (with a key at i + offset, when given) of value(p_i, i, block)."""
    probs = a.probs[layer - 1]
    out = []
    for h in range(probs.shape[1]):
        vals = []
        for b in range(probs.shape[0]):
            for i in range(probs.shape[2]):
                if not a.content[b, i] or (offset is not None and not 0 <= i + offset < probs.shape[2]):
                    continue
                vals.append(value(probs[b, h, i], i, b))
        out.append(sum(vals) / len(vals))
    return np.array(out)


def _entropy(p: np.ndarray, i: int, b: int) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


def head_values(a: AttentionInputs, layer: int) -> dict[str, np.ndarray]:
    """Per-head values of the attention quantities at `layer` (keys as the probe's `attention_heads` array)."""
    a.cache = {} if a.cache is None else a.cache
    if ("attention", layer) not in a.cache:
        a.cache[("attention", layer)] = _head_values(a, layer)
    return a.cache[("attention", layer)]


def _head_values(a: AttentionInputs, layer: int) -> dict[str, np.ndarray]:
    def sink(p: np.ndarray, i: int, b: int) -> float:
        where = np.flatnonzero(a.special[b]) if a.special[b].any() else np.array([0])
        return float(sum(p[j] for j in where))

    out = {"attn_entropy": _per_head(a, layer, _entropy),
           "attn_sink_share": _per_head(a, layer, sink),
           "attn_prev_token": _per_head(a, layer, lambda p, i, b: p[i - 1], offset=-1),
           "attn_distance": _per_head(a, layer, lambda p, i, b: sum(p[j] * abs(i - j) for j in range(p.size)))}
    if not a.causal:
        out["attn_next_token"] = _per_head(a, layer, lambda p, i, b: p[i + 1], offset=1)
    return out


def copy_head_values(a: AttentionInputs, layer: int) -> dict[str, np.ndarray]:
    """Per-head means over second-copy queries of the attention to the first occurrence and to the token after it."""
    probs = a.copy_probs[layer - 1]
    s, t = a.copy_start, a.copy_length
    dup, ind = [], []
    for h in range(probs.shape[1]):
        d = [probs[b, h, s + t + j, s + j] for b in range(probs.shape[0]) for j in range(t)]
        n = [probs[b, h, s + t + j, s + j + 1] for b in range(probs.shape[0]) for j in range(t)]
        dup.append(sum(d) / len(d))
        ind.append(sum(n) / len(n))
    return {"dup_token": np.array(dup), "induction": np.array(ind)}


Values = dict[tuple[int, str], float | None]


def _layers(snap: Any, fn: Any) -> Values:
    a = getattr(snap, "attention", None)
    if a is None:
        return {}
    return {(layer, "all"): fn(a, layer) for layer in range(1, len(a.probs) + 1)}


def attn_entropy(snap: Any) -> Values:
    return _layers(snap, lambda a, layer: float(head_values(a, layer)["attn_entropy"].mean()))


def attn_sink_share(snap: Any) -> Values:
    return _layers(snap, lambda a, layer: float(head_values(a, layer)["attn_sink_share"].mean()))


def attn_prev_token_max(snap: Any) -> Values:
    return _layers(snap, lambda a, layer: float(head_values(a, layer)["attn_prev_token"].max()))


def attn_next_token_max(snap: Any) -> Values:
    a = getattr(snap, "attention", None)
    if a is None or a.causal:
        return {}
    return _layers(snap, lambda a, layer: float(head_values(a, layer)["attn_next_token"].max()))


def attn_distance(snap: Any) -> Values:
    return _layers(snap, lambda a, layer: float(head_values(a, layer)["attn_distance"].mean()))


def dup_token_max(snap: Any) -> Values:
    return _layers(snap, lambda a, layer: float(copy_head_values(a, layer)["dup_token"].max()))


def induction_max(snap: Any) -> Values:
    return _layers(snap, lambda a, layer: float(copy_head_values(a, layer)["induction"].max()))


def repeat_copy_accuracy(snap: Any) -> Values:
    a = getattr(snap, "attention", None)
    if a is None:
        return {}
    last = len(a.probs)
    return {(last, "first"): float(np.mean(a.copy_first)), (last, "second"): float(np.mean(a.copy_second))}


REFERENCES = {f.__name__: f for f in (attn_entropy, attn_sink_share, attn_prev_token_max, attn_next_token_max,
                                      attn_distance, dup_token_max, induction_max, repeat_copy_accuracy)}
