"""The attention family: how each layer's heads spread their attention over the probe set's blocks.

Notation: `a^{l,h}_{ij}` is the attention probability of head h of layer l from query position i to key position
j (the model's own attention, padding masked), on the probe set's blocks. Queries are the content tokens (no
special tokens); keys are all non-padding positions. Layer l is the attention inside transformer block l − 1,
the one that produces h_l, so the family's layers are 1…L.

* `attn_entropy`: mean over heads and queries of −Σ_j a_ij ln a_ij (nats; uniform attention over n keys gives ln n).
* `attn_sink_share`: mean over heads and queries of Σ_{j ∈ S} a_ij, S the block's special-token positions ([CLS],
  [SEP], BOS, EOS), or {position 0} for a block without special tokens.
* `attn_prev_token_max` / `attn_next_token_max`: the largest over heads of the mean over queries of a_{i,i−1}
  (resp. a_{i,i+1}), over the queries where that key exists and is not padding. The next-token score is not
  stored for causal models (their a_{i,i+1} is 0 by construction).
* `attn_distance`: mean over heads and queries of Σ_j a_ij |i − j| (positions).

The probe reduces each batch's probabilities at once to per-head sums over its queries (`attention_sums`, float64,
merged in batch order), so no (B, H, T, T) tensor outlives its layer; the registered functions turn a layer's
`HeadSums` into the stored values, and `HeadSums.means` gives the per-head values the probe stores as arrays
(layers × heads per snapshot). `dynamics.measure.attention` says where the probabilities come from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .registry import CONTEXT_LAYERS, register

# The per-head quantities, by the key under which the probe stores their (layers × heads) arrays.
HEAD_KEYS = ("attn_entropy", "attn_sink_share", "attn_prev_token", "attn_next_token", "attn_distance")


@dataclass
class HeadSums:
    """One layer's per-head sums over queries (float64 (H,) each) and how many queries each sum is over.

    `entropy`, `sink`, `distance`: over all queries (`n_queries`); `prev`: over the queries with a key at i − 1
    (`n_prev`); `next`: over those with a key at i + 1 (`n_next`). `causal`: the model attends only backwards."""

    entropy: np.ndarray
    sink: np.ndarray
    prev: np.ndarray
    next: np.ndarray
    distance: np.ndarray
    n_queries: int
    n_prev: int
    n_next: int
    causal: bool

    def merge(self, other: HeadSums) -> HeadSums:
        """The sums over both sets of queries (the same layer on another batch)."""
        return HeadSums(self.entropy + other.entropy, self.sink + other.sink, self.prev + other.prev,
                        self.next + other.next, self.distance + other.distance, self.n_queries + other.n_queries,
                        self.n_prev + other.n_prev, self.n_next + other.n_next, self.causal)

    def means(self) -> dict[str, np.ndarray]:
        """Per-head means (H,) by `HEAD_KEYS` (NaN where no query counts; the next-token score absent when causal)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            out = {"attn_entropy": self.entropy / self.n_queries, "attn_sink_share": self.sink / self.n_queries,
                   "attn_prev_token": self.prev / self.n_prev, "attn_distance": self.distance / self.n_queries}
            if not self.causal:
                out["attn_next_token"] = self.next / self.n_next
        return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def sink_positions(special: Tensor) -> Tensor:
    """(B, T) bool sink set S per block: its special-token positions, or position 0 where it has none."""
    sinks = special.clone()
    none = ~sinks.any(dim=1)
    sinks[none, 0] = True
    return sinks


def offset_sums(probs: Tensor, queries: Tensor, keys: Tensor, offset: int) -> tuple[np.ndarray, int]:
    """Per-head Σ over queries i of a_{i,i+offset} (float64 (H,)), over the queries of `queries` (B, T) whose key
    i + offset exists and is in `keys` (B, T) bool; and how many such queries there are.

    `probs`: (B, H, T, T) attention probabilities, rows the queries."""
    t = probs.shape[-1]
    if abs(offset) >= t:
        return np.zeros(probs.shape[1]), 0
    diag = torch.diagonal(probs, offset=offset, dim1=-2, dim2=-1)  # (B, H, T − |offset|)
    if offset >= 0:  # entry k: query k, key k + offset
        valid = queries[:, : t - offset] & keys[:, offset:]
    else:  # entry k: query k − offset, key k
        valid = queries[:, -offset:] & keys[:, : t + offset]
    w = valid.to(torch.float64)[:, None, :]
    return (diag.to(torch.float64) * w).sum(dim=(0, 2)).cpu().numpy(), int(valid.sum())


def attention_sums(probs: Tensor, queries: Tensor, sinks: Tensor, keys: Tensor | None = None, *,
                   causal: bool) -> HeadSums:
    """One batch's per-head sums of the module docstring's quantities.

    Args: `probs` (B, H, T, T) attention probabilities (any float dtype, rows sum to 1 over the keys); `queries`
    (B, T) bool, the content positions; `sinks` (B, T) bool, the sink set S (`sink_positions`); `keys` (B, T) bool,
    the non-padding positions (None: all); `causal`: whether the model attends only backwards. All sums are float64
    (the probabilities are converted first: a (B, H, T, T) batch of one layer at a time)."""
    probs = probs.to(torch.float64)
    b, _, t, _ = probs.shape
    keys = torch.ones(b, t, dtype=torch.bool, device=probs.device) if keys is None else keys.to(probs.device)
    queries, sinks = queries.to(probs.device), sinks.to(probs.device)
    w = queries.to(torch.float64)[:, None, :]  # (B, 1, T)

    def over_queries(per_query: Tensor) -> np.ndarray:  # (B, H, T) → (H,) float64 sum over the queries
        return (per_query.to(torch.float64) * w).sum(dim=(0, 2)).cpu().numpy()

    entropy = -torch.special.xlogy(probs, probs).sum(dim=-1)
    # Σ_j a_ij [j ∈ S] and Σ_j a_ij |i − j| as products, so no other (B, H, T, T) temporary is made (half the time)
    sink = torch.matmul(probs, sinks.to(probs.dtype)[:, None, :, None]).squeeze(-1)
    pos = torch.arange(t, device=probs.device, dtype=probs.dtype)
    distance = torch.einsum("bhqk,qk->bhq", probs, (pos[:, None] - pos[None, :]).abs())
    prev, n_prev = offset_sums(probs, queries, keys, -1)
    nxt, n_next = offset_sums(probs, queries, keys, 1)
    return HeadSums(over_queries(entropy), over_queries(sink), prev, nxt, over_queries(distance),
                    int(queries.sum()), n_prev, n_next, causal)


def _mean_over_heads(sums: np.ndarray, count: int) -> float:
    if count == 0:
        raise ValueError("no query position")
    return float(sums.sum() / (count * sums.size))


def _max_over_heads(sums: np.ndarray, count: int, what: str) -> float:
    if count == 0:
        raise ValueError(f"no query position has a {what} key")
    return float(np.max(sums / count))


@register("attn_entropy", family="attention", page="attention", layers=CONTEXT_LAYERS, unit="nats ≥ 0",
          label="Attention entropy",
          definition="Mean over heads and content-token queries of −Σ_j a_ij ln a_ij over the non-padding keys; "
                     "uniform attention over n keys gives ln n.")
@register("attn_sink_share", family="attention", page="attention", layers=CONTEXT_LAYERS, unit="share in [0, 1]",
          label="Attention to sink tokens",
          definition="Mean over heads and content-token queries of the attention on the block's special tokens "
                     "([CLS], [SEP], BOS, EOS; position 0 where there is none).")
@register("attn_prev_token_max", family="attention", page="attention", layers=CONTEXT_LAYERS, unit="share in [0, 1]",
          label="Previous-token head score (best head)",
          definition="Largest over heads of the mean over content-token queries of the attention a_{i,i−1} on the "
                     "previous position.")
@register("attn_distance", family="attention", page="attention", layers=CONTEXT_LAYERS, unit="positions ≥ 0",
          label="Mean attention distance",
          definition="Mean over heads and content-token queries of Σ_j a_ij |i − j|, the expected distance "
                     "attended over.")
def attention_stats(attention: HeadSums) -> dict[str, float]:
    """The layer's entropy, sink share and distance (means over heads and queries) and its best previous-token
    head (module docstring), from the per-head sums over queries."""
    return {"attn_entropy": _mean_over_heads(attention.entropy, attention.n_queries),
            "attn_sink_share": _mean_over_heads(attention.sink, attention.n_queries),
            "attn_prev_token_max": _max_over_heads(attention.prev, attention.n_prev, "previous"),
            "attn_distance": _mean_over_heads(attention.distance, attention.n_queries)}


@register("attn_next_token_max", family="attention", page="attention", layers=CONTEXT_LAYERS, unit="share in [0, 1]",
          label="Next-token head score (best head)",
          definition="Largest over heads of the mean over content-token queries of the attention a_{i,i+1} on the "
                     "next position (bidirectional models only).")
def attn_next_token_max(bidirectional_attention: HeadSums) -> float:
    """max_h mean_i a^h_{i,i+1} over the queries with a next key; the input is None for a causal model (no row)."""
    return _max_over_heads(bidirectional_attention.next, bidirectional_attention.n_next, "next")
