"""Anchor-embedding similarity: how close each token's hidden state stays to its own input embedding.

DESIGN.md "Measurements": cos(h_l(i), E[x_i]) with E the input word-embedding matrix (the *anchor*), the
same against the embedding-layer output, the masked-prediction variant (cos(T(h_L(i)), E[x_i]) plus the
true token's rank and accuracy), all reported overall and per token-frequency bin, and anchor drift
cos(E_step[v], E_final[v]).

Conventions: inputs are content tokens only (the caller drops [CLS]/[SEP]/[PAD] and other special
tokens); rows are matched by index (row i of `h` belongs with row i of `emb_rows`, i.e. `E[input_ids]`);
plain arrays are computed on in float64 (a `Rows` in its own dtype, see `rows`), results are float64.
Cosine of an all-zero row with anything is defined as 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .checks import ArrayLike, as_labels, same_rows
from .registry import ALL_LAYERS, BINNED, EMBEDDING_LAYER, LAST_LAYER, register
from .rows import Rows, as_rows, row_dots

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


def drift_cosines(e_step: ArrayLike, e_final: ArrayLike) -> Tensor:
    """Per-row anchor drift: cos(E_step[v], E_final[v]) for every vocabulary row v (the stored `anchor_drift` and
    `anchor_drift_probe` average it).

    Args:
        e_step: (vocab, H) input word-embedding matrix at one snapshot.
        e_final: (vocab, H) the same matrix at the final snapshot (ValueError if the shapes differ).
    Returns:
        (vocab,) float64 cosines; 1 means row v already points where it ends up. A row that is all zeros
        (e.g. a padding row kept at zero) gives 0 — exclude special tokens before averaging.
    """
    if tuple(e_step.shape) != tuple(e_final.shape):
        raise ValueError(f"embedding matrix {tuple(e_step.shape)} differs from the final snapshot's "
                         f"{tuple(e_final.shape)}")
    return cosine_rows(e_step, e_final)


def frequency_bin_names(n_bins: int) -> Sequence[str]:
    """Human-readable names for the bins: frequent/medium/rare for 3, else "bin0", "bin1", …"""
    return FREQUENCY_BIN_NAMES if n_bins == 3 else tuple(f"bin{b}" for b in range(n_bins))


# --------------------------------------------------------------------------------------- registered metrics

Binned = dict[str, float | None]


def by_bin(values: ArrayLike, bins: ArrayLike, bin_names: Sequence[str]) -> Binned:
    """The stored form of a per-token value: its mean over all tokens ("all") and within each frequency bin.

    Args: values (n,) per token; bins (n,) bin index in [0, len(bin_names)); bin_names. Returns {"all": mean,
    name: mean in that bin, …}; None for an empty bin (or no tokens at all).
    """
    v = torch.as_tensor(values).to(torch.float64).cpu()
    out: Binned = {"all": float(v.mean()) if v.numel() else None}
    for name, m in zip(bin_names, mean_by_bin(v, bins, len(bin_names)), strict=True):
        out[name] = None if np.isnan(m) else float(m)
    return out


@dataclass
class MaskedPass:
    """The masked pass at the last layer, at the probe set's M masked positions (`Rows` in the metric dtype).

    transform (M, D): T(h_L(i)), the MLM head transform; hidden (M, H): h_L(i) of the masked pass; targets (M, D):
    E[x_i], the true token's input word embedding; rank (M,) int64: the true token's rank among the head's logits
    (`token_rank`, 1 = best); bins (M,): frequency bin of each position; surprisal (M,) float64: −ln p of the true
    token under the head (`dynamics.metrics.acquisition.token_surprisal`); word_type (M,) int64: the position's
    word type (index into the probe set's word types, −1 if not eligible)."""

    transform: Rows
    hidden: Rows
    targets: Rows
    rank: Tensor
    bins: np.ndarray
    surprisal: Tensor
    word_type: np.ndarray


@register("anchor_sim_word", family="anchors", page="anchors", layers=ALL_LAYERS, variants=BINNED, unit="cosine in [−1, 1]",
          label="Anchor similarity (word embedding)",
          definition="cos(h_l(i), E[x_i]): how close each token's hidden state stays to its own input word "
                     "embedding, the anchor.")
def anchor_sim_word(h: Rows, word_emb: Rows, freq_bin: np.ndarray, bin_names: Sequence[str]) -> Binned:
    """Anchor-embedding similarity of one layer: mean over content tokens i of cos(h_l(i), E[x_i]).

    E[x_i] is the row of the input word-embedding matrix of token i's id (the *anchor*); overall and per
    frequency bin (`by_bin`). Not stored (empty result) when the embedding width differs from H (ELECTRA-style
    factorised embeddings), where the cosine is undefined. Returns cosines in [−1, 1]."""
    if word_emb.dim != h.dim:
        return {}
    return by_bin(cosine_rows(h, word_emb), freq_bin, bin_names)


@register("anchor_sim_emb", family="anchors", page="anchors", layers=ALL_LAYERS, variants=BINNED, unit="cosine in [−1, 1]",
          label="Anchor similarity (embedding output)",
          definition="cos(h_l(i), e(i)): hidden state against the embedding-layer output (word + position + "
                     "type, LayerNorm).")
def anchor_sim_emb(h: Rows, e: Rows, freq_bin: np.ndarray, bin_names: Sequence[str]) -> Binned:
    """Mean over content tokens of cos(h_l(i), e(i)), e = the embedding-layer output (layer 0), overall and per
    frequency bin. 1 at layer 0 by construction. Returns cosines in [−1, 1]."""
    return by_bin(cosine_rows(h, e), freq_bin, bin_names)


@register("masked_anchor_sim", family="anchors", page="anchors", layers=LAST_LAYER, variants=BINNED, unit="cosine in [−1, 1]",
          label="Masked anchor similarity (head)",
          definition="cos(T(h_L(i)), E[x_i]) with x_i replaced by [MASK] and T the MLM head transform (for a "
                     "causal LM the next-token head: h_L(i−1) of the ordinary pass, no [MASK], T the identity).")
def masked_anchor_sim(masked: MaskedPass, bin_names: Sequence[str]) -> Binned:
    """Mean over the probe's masked positions i of cos(T(h_L(i)), E[x_i]): the model's reconstruction of the
    hidden token, through the MLM head transform T, against the true token's input embedding; per bin too."""
    return by_bin(cosine_rows(masked.transform, masked.targets), masked.bins, bin_names)


@register("masked_hidden_anchor_sim", family="anchors", page="anchors", layers=LAST_LAYER, variants=BINNED,
          unit="cosine in [−1, 1]", label="Masked anchor similarity (hidden)",
          definition="cos(h_L(i), E[x_i]) at masked positions, without the head transform (for a causal LM "
                     "h_L(i−1), the next-token head's input).")
def masked_hidden_anchor_sim(masked: MaskedPass, bin_names: Sequence[str]) -> Binned:
    """Mean over masked positions of cos(h_L(i), E[x_i]), h_L of the masked pass (no head transform); not
    stored when the embedding width differs from H."""
    if masked.hidden.dim != masked.targets.dim:
        return {}
    return by_bin(cosine_rows(masked.hidden, masked.targets), masked.bins, bin_names)


@register("masked_accuracy", family="anchors", page="anchors", layers=LAST_LAYER, variants=BINNED, unit="fraction in [0, 1]",
          label="Masked-token accuracy",
          definition="Fraction of masked positions whose true token is ranked first by the MLM head (for a "
                     "causal LM the next-token head, predicting x_i from position i−1).")
def masked_accuracy(masked: MaskedPass, bin_names: Sequence[str]) -> Binned:
    """Top-1 accuracy of the MLM head at the masked positions: mean of [rank_i = 1] (ties favour the true
    token, see `token_rank`), overall and per bin."""
    return by_bin((masked.rank == 1).double(), masked.bins, bin_names)


@register("masked_mrr", family="anchors", page="anchors", layers=LAST_LAYER, variants=BINNED, unit="in (0, 1]",
          label="Masked-token MRR", definition="Mean reciprocal rank of the true token at masked positions.")
def masked_mrr(masked: MaskedPass, bin_names: Sequence[str]) -> Binned:
    """Mean over masked positions of 1 / rank_i (`token_rank`), overall and per bin."""
    return by_bin(1.0 / masked.rank.double(), masked.bins, bin_names)


@register("masked_median_rank", family="anchors", page="anchors", layers=LAST_LAYER, unit="rank in [1, V]",
          label="Masked-token median rank",
          definition="Median rank of the true token among the whole vocabulary at masked positions (1 = best).")
def masked_median_rank(masked: MaskedPass) -> float:
    """Median over masked positions of rank_i (`token_rank`; the mean of the two middle ranks for even M)."""
    return float(np.median(masked.rank.cpu().numpy()))


@register("anchor_drift", family="drift", scope="snapshot", page="anchors", layers=EMBEDDING_LAYER,
          unit="cosine in [−1, 1]", label="Anchor drift (vocabulary)",
          definition="cos(E_step[v], E_final[v]) averaged over the non-special vocabulary: how far word "
                     "embeddings still have to move.")
@register("anchor_drift_probe", family="drift", scope="snapshot", page="anchors", layers=EMBEDDING_LAYER,
          variants=BINNED, unit="cosine in [−1, 1]", label="Anchor drift (probe tokens)",
          definition="cos(E_step[v], E_final[v]) averaged over the token types of the probe set.")
def anchor_drift(emb_matrix: np.ndarray, final_matrix: np.ndarray, special_ids: np.ndarray, probe_tokens: np.ndarray,
                 freq_bin: np.ndarray, bin_names: Sequence[str]) -> dict[str, float | Binned]:
    """Anchor drift of the snapshot's word embeddings E_step towards the final snapshot's E_final, from one pass
    of per-row cosines c_v = cos(E_step[v], E_final[v]) (`drift_cosines`):

        anchor_drift       = mean of c_v over the vocabulary rows v that are not special tokens;
        anchor_drift_probe = mean of c_v over the distinct token ids v of the probe set (each type once), overall
                             and per frequency bin of the types (`by_bin`).
    """
    cos = drift_cosines(emb_matrix, final_matrix).cpu()
    keep = torch.ones(cos.shape[0], dtype=torch.bool)
    keep[torch.from_numpy(special_ids[special_ids < cos.shape[0]])] = False
    types, first = np.unique(probe_tokens, return_index=True)
    return {"anchor_drift": float(cos[keep].mean()),
            "anchor_drift_probe": by_bin(cos[torch.from_numpy(types)], np.asarray(freq_bin)[first].astype(np.int64),
                                         bin_names)}
