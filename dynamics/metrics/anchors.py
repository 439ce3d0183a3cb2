"""Anchor-embedding similarity: how close each token's hidden state stays to its own input embedding.

DESIGN.md "Measurements": cos(h_l(i), E[x_i]) with E the input word-embedding matrix (the *anchor*), the
same against the embedding-layer output, the masked-prediction variant (cos(T(h_L(i)), E[x_i]) plus the
true token's rank and accuracy), all reported overall and per token-frequency bin, and anchor drift
cos(E_step[v], E_final[v]).

Conventions: inputs are content tokens only (the caller drops [CLS]/[SEP]/[PAD] and other special
tokens); rows are matched by index (row i of `h` belongs with row i of `emb_rows`, i.e. `E[input_ids]`);
plain arrays are computed on in float64 (a `Rows` in its own dtype, see `_common`), results are float64.
Cosine of an all-zero row with anything is defined as 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ._common import ArrayLike, Rows, as_labels, as_rows, row_dots, same_rows

FREQUENCY_BIN_NAMES: tuple[str, ...] = ("frequent", "medium", "rare")


def cosine_rows(a: ArrayLike | Rows, b: ArrayLike | Rows) -> Tensor:
    """Row-wise cosine similarity cos(a_i, b_i) = a_i·b_i / (‖a_i‖ ‖b_i‖).

    Args:
        a, b: (n, dim), same shape; either may be a `Rows` (its norms are reused; the dot products are taken
            in the dtype of a's `Rows`, float64 for plain arrays).
    Returns:
        (n,) float64 tensor in [−1, 1]; 0 where either row is all zeros.
    """
    ra, rb = as_rows(a, "a"), as_rows(b, "b")
    same_rows(ra.x, rb.x, "a", "b")
    xb = rb.x.to(ra.device, ra.dtype)
    nb = rb.safe_norms.to(ra.device)
    return row_dots(ra.x, xb) / (ra.safe_norms.to(torch.float64) * nb.to(torch.float64))


def anchor_similarity(h: ArrayLike, emb_rows: ArrayLike) -> float:
    """Mean over tokens of cos(h(i), E[x_i]), the anchor-embedding similarity of one layer.

    Args:
        h: (n, H) hidden states of n content tokens at one layer (layer 0 = embedding-layer output).
        emb_rows: (n, H) the anchor of each token: `E[input_ids]` (input word-embedding rows), or the
            embedding-layer output for the "against e" variant, or, for the masked variant, pass
            `T(h_L)` as `h` (MLM head transform at masked positions) and `E[true_ids]` here.
    Returns:
        float in [−1, 1]; 1 when every h(i) points along its own anchor.
    """
    return float(cosine_rows(h, emb_rows).mean())


def token_rank(scores: ArrayLike, targets: ArrayLike, chunk_rows: int = 1024) -> Tensor:
    """Rank of the true token among all vocabulary entries (1 = best).

    rank_i = 1 + #{v : scores[i, v] > scores[i, targets[i]]}. Ties count in the true token's favour
    (standard competition ranking), so rank 1 means "no token scores strictly higher".

    Args:
        scores: (n, vocab) logits or any scores where higher is better (e.g. T(h_L) @ Eᵀ + bias at masked
            positions). Compared in their own dtype; no float64 copy of the (n, vocab) matrix is made.
        targets: (n,) true token ids in [0, vocab).
        chunk_rows: rows compared at a time, to bound the (chunk, vocab) boolean temporary.
    Returns:
        (n,) int64 tensor of ranks in [1, vocab].
    """
    s = torch.as_tensor(scores)
    if s.dim() != 2 or s.shape[0] == 0 or s.shape[1] == 0:
        raise ValueError(f"scores must be 2-D (n, vocab) and non-empty; got shape {tuple(s.shape)}")
    t = as_labels(targets, s.shape[0], "targets", device=s.device)
    if bool(((t < 0) | (t >= s.shape[1])).any()):
        raise ValueError(f"targets must lie in [0, {s.shape[1]}) (the vocabulary of scores)")
    out = torch.empty(s.shape[0], dtype=torch.int64, device=s.device)
    for start in range(0, s.shape[0], chunk_rows):
        block = s[start : start + chunk_rows]
        true = block.gather(1, t[start : start + chunk_rows, None])
        out[start : start + chunk_rows] = (block > true).sum(1) + 1
    return out


def token_accuracy(scores: ArrayLike, targets: ArrayLike, k: int = 1) -> float:
    """Top-k accuracy: fraction of rows whose true token has rank ≤ k under `token_rank` (ties favour it).

    Args: scores (n, vocab), targets (n,), k ≥ 1. Returns a float in [0, 1].
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    return float((token_rank(scores, targets) <= k).double().mean())


def frequency_bins(counts: ArrayLike, n_bins: int = 3, by: str = "mass") -> np.ndarray:
    """Count thresholds splitting a vocabulary into frequency bins, most frequent first.

    Token types with count > 0 are sorted by count, descending; each type covers an interval of the
    cumulative share (of occurrences for "mass", of types for "types") and goes to the bin holding the
    midpoint of its interval, bin b = ⌊n_bins · midpoint⌋. Types with equal counts then share the bin of
    the first of them, so a bin is a count range and may be empty under heavy ties.

    Args:
        counts: (vocab,) occurrences of each token id (in the training corpus or the probe set; the
            caller decides and should say which). Types with count 0 do not shape the edges.
        n_bins: number of bins (3 → frequent / medium / rare).
        by: "mass" (default): each bin holds ≈ 1/n_bins of all *occurrences* (the frequent bin is a few
            very common types, the rare bin the long tail). Chosen because per-occurrence metrics then get
            ≈ equal sample sizes per bin. "types": each bin holds ≈ 1/n_bins of the *types* seen (terciles
            of ranked types), which puts most occurrences in the frequent bin.
    Returns:
        edges: (n_bins − 1,) float64 descending thresholds t_1 ≥ t_2 ≥ …: a count c is in bin
        #{b : c < t_b} (0 = most frequent); see `assign_frequency_bins`. t_b is the smallest count among
        the types placed before bin b (+inf if there are none).
    """
    c = np.asarray(torch.as_tensor(counts).cpu().numpy(), dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"counts must be 1-D (vocab,) and non-empty; got shape {c.shape}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1; got {n_bins}")
    if (c < 0).any():
        raise ValueError("counts must be non-negative")
    seen = np.sort(c[c > 0])[::-1]
    if seen.size == 0:
        raise ValueError("counts has no token with a positive count")
    if by == "mass":
        weight = seen / seen.sum()
    elif by == "types":
        weight = np.full(seen.size, 1.0 / seen.size)
    else:
        raise ValueError(f"by must be 'mass' or 'types'; got {by!r}")
    mid = np.cumsum(weight) - weight / 2
    bin_of = np.minimum(np.floor(mid * n_bins), n_bins - 1)
    # Ties: a run of equal counts takes the bin of its first (most frequent-ranked) member.
    first_of_run = np.searchsorted(-seen, -seen, side="left")
    bin_of = bin_of[first_of_run]
    edges = np.full(n_bins - 1, np.inf)
    for b in range(1, n_bins):
        before = seen[bin_of < b]
        if before.size:
            edges[b - 1] = before.min()
    return edges


def assign_frequency_bins(counts: ArrayLike, edges: ArrayLike) -> np.ndarray:
    """Bin index of each count: 0 (most frequent) … len(edges) (rarest); see `frequency_bins`.

    Args: counts (m,) occurrence counts (per token id, or per occurrence via counts[input_ids]);
    edges (n_bins − 1,) descending thresholds. Returns (m,) int64.
    """
    c = np.asarray(torch.as_tensor(counts).cpu().numpy(), dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    if c.ndim != 1 or e.ndim != 1:
        raise ValueError(f"counts and edges must be 1-D; got shapes {c.shape} and {e.shape}")
    # bin = number of thresholds the count does not reach.
    return (c[:, None] < e[None, :]).sum(1).astype(np.int64)


def mean_by_bin(values: ArrayLike, bins: ArrayLike, n_bins: int) -> np.ndarray:
    """Mean of a per-token value within each frequency bin.

    Args:
        values: (n,) per-occurrence values (e.g. `cosine_rows(h, E[ids])`, or `token_rank(...) == 1`).
        bins: (n,) bin index of each occurrence, e.g. `assign_frequency_bins(counts, edges)[ids]`.
        n_bins: number of bins.
    Returns:
        (n_bins,) float64; NaN for a bin without occurrences.
    """
    v = torch.as_tensor(values).to(torch.float64).cpu()
    if v.dim() != 1:
        raise ValueError(f"values must be 1-D (n,); got shape {tuple(v.shape)}")
    b = as_labels(bins, v.shape[0], "bins")
    if v.numel() and bool(((b < 0) | (b >= n_bins)).any()):
        raise ValueError(f"bins must lie in [0, {n_bins})")
    sums = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, b, v)
    counts = torch.bincount(b, minlength=n_bins).to(torch.float64)
    out = (sums / counts).numpy()
    out[counts.numpy() == 0] = np.nan
    return out


def anchor_drift(e_step: ArrayLike, e_final: ArrayLike) -> Tensor:
    """Anchor drift: cos(E_step[v], E_final[v]) for every vocabulary row v.

    Args:
        e_step: (vocab, H) input word-embedding matrix at one snapshot.
        e_final: (vocab, H) the same matrix at the final snapshot.
    Returns:
        (vocab,) float64 cosines; 1 means row v already points where it ends up. A row that is all zeros
        (e.g. a padding row kept at zero) gives 0 — exclude special tokens before averaging.
    """
    return cosine_rows(e_step, e_final)


def frequency_bin_names(n_bins: int) -> Sequence[str]:
    """Human-readable names for the bins: frequent/medium/rare for 3, else "bin0", "bin1", …"""
    return FREQUENCY_BIN_NAMES if n_bins == 3 else tuple(f"bin{b}" for b in range(n_bins))
