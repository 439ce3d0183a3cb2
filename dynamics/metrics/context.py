"""Context-vector alignment: do the context vectors g = h − e of one sequence point the same way?

DESIGN.md "Measurements": with g_l = h_l − e (e = embedding-layer output), the mean cosine of g between
tokens of the same sequence (all pairs, and pairs within TACO's window W), between tokens of different
sequences, and the gap; cosine as a function of distance; TACO's TC loss evaluated on the probe set; and
sequence identification accuracy of g.

Inputs are flat content tokens (the caller drops [CLS]/[SEP]/[PAD] and any other special token):
    g          (n, H)  context vectors, or h_last and e for `tc_loss`
    seq_ids    (n,)    integer id of each token's block (any integers; need not be contiguous or sorted)
    positions  (n,)    each token's position within its block (gaps where special tokens were removed
                       are kept, so |Δposition| is the distance in the block)
These metrics are undefined at layer 0 (g ≡ 0) and are not stored there. "Mean cosine over pairs" is over
unordered pairs of distinct tokens; a zero vector has cosine 0 with everything. Plain arrays are computed on
in float64; g may also be a `Rows` (unit rows and groupings shared between the metrics of a layer, float32
arithmetic with float64 sums and float64 re-checks of near-ties; see `_common`).
"""

from __future__ import annotations

import math
import threading
import warnings

import numpy as np
import torch
from torch import Tensor

from ._common import (
    ArrayLike,
    BlockLayout,
    PositionIndex,
    Rows,
    as_labels,
    as_matrix,
    as_rows,
    chunk_rows,
    dense_groups,
    matmul,
    pair_sums,
    row_dots,
    same_rows,
    shifted_pair_sums,
)

Matrix = ArrayLike | Rows


def _check_window(window: int) -> int:
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd integer >= 3; got {window}")
    return (window - 1) // 2


def _inputs(
    g: Matrix, seq_ids: ArrayLike, positions: ArrayLike | None = None
) -> tuple[Rows, Tensor, Tensor | None]:
    r = as_rows(g, "g")
    s = as_labels(seq_ids, r.n, "seq_ids", device=r.device)
    p = None if positions is None else as_labels(positions, r.n, "positions", device=r.device)
    return r, s, p


def same_vs_other_cosine(g: Matrix, seq_ids: ArrayLike) -> dict[str, float]:
    """Mean cosine of context vectors over same-sequence pairs vs other-sequence pairs.

    same  = mean of cos(g_i, g_j) over unordered pairs i ≠ j in the same sequence,
    other = mean over unordered pairs from two different sequences, gap = same − other.
    Computed from sums of unit vectors in O(n·H): for a set S, Σ_{i<j∈S} u_i·u_j = (‖Σu‖² − |S|)/2
    (implemented as (‖Σu‖² − Σ‖u‖²)/2, which also holds when a zero vector is present); other-sequence
    sums and counts are all-pairs minus same-sequence ones.

    Args: g (n, H); seq_ids (n,). Returns {"same", "other", "gap"} as floats (NaN when there is no pair
    of that kind: no sequence with two tokens, or a single sequence).
    """
    r, s, _ = _inputs(g, seq_ids)
    all_sum, all_pairs = pair_sums(r.unit, r.unit_sq)
    grp_sum, grp_pairs = r.grouped(s).unit_pair_sums()
    same_sum, same_pairs = float(grp_sum.sum()), float(grp_pairs.sum())
    other_sum, other_pairs = all_sum - same_sum, all_pairs - same_pairs
    same = same_sum / same_pairs if same_pairs > 0 else math.nan
    other = other_sum / other_pairs if other_pairs > 0 else math.nan
    return {"same": same, "other": other, "gap": same - other}


def _distance_sums(r: Rows, s: Tensor, p: Tensor, max_distance: int,
                   layout: BlockLayout | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per distance d = 1..max_distance: Σ cos over same-sequence pairs with |Δposition| = d, and the count."""
    return shifted_pair_sums(r.unit, s, p, max_distance, layout=layout)


def distance_sums(g: Matrix, seq_ids: ArrayLike, positions: ArrayLike, max_distance: int,
                  layout: BlockLayout | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per distance d = 1..max_distance: the sum of cos(g_i, g_j) over unordered same-sequence pairs with
    |p_i − p_j| = d, and the number of such pairs ((max_distance,) float64 each). `cosine_by_distance` is
    sums / counts and `window_cosine` pools the first (W − 1)/2 entries, so one call serves both.
    `layout`: the tokens' `BlockLayout`, if already built (it depends on seq_ids and positions only)."""
    if max_distance < 1:
        raise ValueError(f"max_distance must be >= 1; got {max_distance}")
    r, s, p = _inputs(g, seq_ids, positions)
    return _distance_sums(r, s, p, max_distance, layout)


def cosine_by_distance(
    g: Matrix, seq_ids: ArrayLike, positions: ArrayLike, max_distance: int
) -> np.ndarray:
    """Mean cosine of context vectors as a function of distance within a sequence.

    out[d − 1] = mean cos(g_i, g_j) over unordered pairs in the same sequence with |p_i − p_j| = d.

    Args: g (n, H); seq_ids (n,); positions (n,) unique within a sequence; max_distance ≥ 1.
    Returns: (max_distance,) float64, NaN for a distance without pairs.
    """
    if max_distance < 1:
        raise ValueError(f"max_distance must be >= 1; got {max_distance}")
    r, s, p = _inputs(g, seq_ids, positions)
    sums, counts = _distance_sums(r, s, p, max_distance)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def window_cosine(g: Matrix, seq_ids: ArrayLike, positions: ArrayLike, window: int = 5) -> float:
    """Mean cosine of context vectors over same-sequence pairs inside TACO's window.

    Pairs (i, j) of one sequence with 1 ≤ |p_i − p_j| ≤ (W − 1)/2, each unordered pair once, pooled over
    distances (a pair-weighted mean, not the mean of the per-distance means).

    Args: g (n, H); seq_ids (n,); positions (n,); window W odd ≥ 3. Returns a float (NaN if no pairs).
    """
    half = _check_window(window)
    r, s, p = _inputs(g, seq_ids, positions)
    sums, counts = _distance_sums(r, s, p, half)
    return float(sums.sum() / counts.sum()) if counts.sum() > 0 else math.nan


def sample_tc_indices(
    seq_ids: ArrayLike,
    positions: ArrayLike,
    window: int = 5,
    negatives: int = 50,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample TACO's positive and negatives for every token as an anchor (DESIGN.md "The TACO objective").

    Positive of anchor i (sequence s, position p): draw d uniform in {1..(W−1)/2} and a sign uniform in
    {−1, +1}; the positive is the token of s at position p ± d. If no token of s sits there (outside the
    block, or a removed special token), it is a uniformly random *other* token of s.
    Negatives: K tokens drawn uniformly with replacement from all tokens of the *other* sequences.

    Args:
        seq_ids: (n,) block id per token. Every sequence needs ≥ 2 tokens, and there must be ≥ 2 sequences.
        positions: (n,) position in the block, unique within a sequence.
        window: odd W ≥ 3. negatives: K ≥ 1.
        generator: CPU torch.Generator for reproducible draws (the draws are made on the CPU).
    Returns:
        pos_idx (n,) int64 and neg_idx (n, K) int64, indices into the n tokens (on the CPU).
    """
    half = _check_window(window)
    if negatives < 1:
        raise ValueError(f"negatives must be >= 1; got {negatives}")
    cpu = torch.device("cpu")
    raw = torch.as_tensor(seq_ids)
    if raw.dim() != 1 or raw.numel() == 0:
        raise ValueError(f"seq_ids must be 1-D (n,) and non-empty; got shape {tuple(raw.shape)}")
    n = raw.numel()
    s = as_labels(raw, n, "seq_ids", device=cpu)
    p = as_labels(positions, n, "positions", device=cpu)
    groups, n_groups = dense_groups(s)
    counts = torch.bincount(groups, minlength=n_groups)
    if n_groups < 2:
        raise ValueError("sample_tc_indices needs at least 2 sequences (negatives come from other sequences)")
    if bool((counts < 2).any()):
        raise ValueError("every sequence needs at least 2 tokens (the positive is another token of it)")

    # Tokens sorted by sequence: each sequence is a contiguous range [start, start + count) of `order`.
    order = torch.argsort(groups, stable=True)
    rank_in_sorted = torch.empty_like(order)
    rank_in_sorted[order] = torch.arange(n)
    starts = torch.cumsum(counts, 0) - counts
    g_start, g_count = starts[groups], counts[groups]

    # All draws happen up front, in a fixed order, so a generator state fixes every index.
    d = torch.randint(1, half + 1, (n,), generator=generator)
    sign = torch.randint(0, 2, (n,), generator=generator) * 2 - 1
    r_pos = torch.rand(n, generator=generator, dtype=torch.float64)
    r_neg = torch.rand((n, negatives), generator=generator, dtype=torch.float64)

    # In-window positive by (sequence, position) lookup.
    found, in_window = PositionIndex(s, p, half).lookup(d * sign)

    # Fallback: uniform over the other count − 1 tokens of the sequence, skipping the anchor itself.
    self_rank = rank_in_sorted - g_start
    r = torch.minimum((r_pos * (g_count - 1)).long(), g_count - 2)
    fallback = order[g_start + r + (r >= self_rank).long()]
    pos_idx = torch.where(found, in_window, fallback)

    # Negatives: uniform over the n − count positions outside the anchor's range, skipping that range.
    span = (n - g_count).unsqueeze(1)
    v = torch.minimum((r_neg * span).long(), span - 1)
    v = v + (v >= g_start.unsqueeze(1)).long() * g_count.unsqueeze(1)
    neg_idx = order[v]
    return pos_idx, neg_idx


def info_nce_from_indices(
    g: Matrix,
    pos_idx: ArrayLike,
    neg_idx: ArrayLike,
    temperature: float = 0.07,
    max_elements: int = 1 << 22,
) -> float:
    """Mean InfoNCE over anchors on cosine similarity, positive at index 0.

    L_i = −log [exp(cos(g_i, g_{pos_i})/τ) / (exp(cos(g_i, g_{pos_i})/τ) + Σ_k exp(cos(g_i, g_{neg_ik})/τ))]
    and the result is mean_i L_i (every row of g is an anchor). Evaluation only: no gradient. The n·K
    negative cosines are dot products of unit rows at the given index pairs (`indexed_dots`); logits and the
    log-sum-exp are float64.

    Args:
        g: (n, H) context vectors. pos_idx: (n,) and neg_idx: (n, K), indices into the rows of g.
        temperature: τ > 0. max_elements: bound on the gathered (chunk, K, H) negatives per step (where the
            negatives are gathered rather than sampled from a sparse product).
    Returns: float in nats; log(K + 1) when all cosines are equal.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    r = as_rows(g, "g")
    n = r.n
    pi = as_labels(pos_idx, n, "pos_idx", device=r.device)
    ni = torch.as_tensor(neg_idx, device=r.device)
    if ni.dim() != 2 or ni.shape[0] != n or ni.shape[1] < 1:
        raise ValueError(f"neg_idx must have shape ({n}, K) with K >= 1; got {tuple(ni.shape)}")
    ni = ni.long()
    for name, idx in (("pos_idx", pi), ("neg_idx", ni)):
        if bool(((idx < 0) | (idx >= n)).any()):
            raise ValueError(f"{name} must index rows of g, in [0, {n})")
    with torch.no_grad():
        both = _joined(pi, ni)  # (n, 1 + K): positive first
        logits = indexed_dots(r.unit, both, max_elements) / temperature
        return float((torch.logsumexp(logits, dim=1) - logits[:, 0]).sum()) / n


_JOINED: list[tuple[Tensor, Tensor, Tensor]] = []
_CACHE_LOCK = threading.Lock()  # the two small caches below may be used from metric worker threads


def _joined(pos: Tensor, neg: Tensor) -> Tensor:
    """[pos | neg] as one (n, 1 + K) index tensor, the same object for the same pair (so its CSR pattern is
    reused across snapshots)."""
    with _CACHE_LOCK:
        for p, q, both in _JOINED:
            if p is pos and q is neg:
                return both
        both = torch.cat([pos[:, None], neg], 1)
        _JOINED.insert(0, (pos, neg, both))
        del _JOINED[2:]
        return both


def indexed_dots(u: Tensor, index: Tensor, max_elements: int = 1 << 22) -> Tensor:
    """(n, K) float64 u_i · u_{index[i, k]}: the dot products of each row with K other rows, in u's dtype.

    On the CPU, sampled sparse-dense products (`torch.sparse.sampled_addmm`) at the distinct entries
    (i, index[i, k]) of CSR patterns, one per block of `PATTERN_BLOCK_ROWS` partner rows, so the partner rows
    a product reads at random stay in cache while the anchor rows stream (≈ 2× faster than one product over
    all rows, and nothing is gathered). The patterns depend on `index` only and are kept for the next call with
    the same index tensor (e.g. the next snapshot's). Elsewhere the rows are gathered, at most `max_elements`
    numbers at a time, and multiplied in a batch.
    """
    n, h = u.shape
    k = index.shape[1]
    if u.device.type == "cpu" and n > 0:
        blocks, back = _csr_patterns(index)
        parts = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            for crow, cols, lo, hi in blocks:
                pattern = torch.sparse_csr_tensor(crow, cols, torch.zeros(cols.numel(), dtype=u.dtype),
                                                  size=(n, hi - lo), check_invariants=False)
                parts.append(torch.sparse.sampled_addmm(pattern, u, u[lo:hi].T, beta=0.0).values())
        return torch.cat(parts)[back].to(torch.float64)
    out = torch.empty(n, k, dtype=torch.float64, device=u.device)
    chunk = max(1, max_elements // (k * h))
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        out[sl] = torch.bmm(u[index[sl]], u[sl].unsqueeze(2)).squeeze(2)
    return out


PATTERN_BLOCK_ROWS = 4096
_PATTERNS: list[tuple[Tensor, tuple[list[tuple[Tensor, Tensor, int, int]], Tensor]]] = []


def _csr_patterns(index: Tensor) -> tuple[list[tuple[Tensor, Tensor, int, int]], Tensor]:
    """Per block [lo, hi) of partner rows: a valid CSR pattern (crow (n + 1,), local columns, sorted and
    distinct within each row) of the entries (i, index[i, k]) with lo ≤ index[i, k] < hi; and `back` (n, K), the
    slot of each (i, k) in the blocks' concatenated values (a repeated entry shares its first copy's slot).
    Cached for the last few index tensors."""
    with _CACHE_LOCK:
        for held, pattern in _PATTERNS:
            if held is index:
                return pattern
    n, k = index.shape
    rows = torch.arange(n, device=index.device).repeat_interleave(k)
    cols = index.reshape(-1)
    block = cols // PATTERN_BLOCK_ROWS
    order = torch.argsort((block * n + rows) * n + cols)  # by block, then row, then column
    r, c, b = rows[order], cols[order], block[order]
    first = torch.ones(order.numel(), dtype=torch.bool, device=index.device)
    first[1:] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
    slot = torch.cumsum(first.long(), 0) - 1
    back = torch.empty_like(slot)
    back[order] = slot
    r, c, b = r[first], c[first], b[first]
    blocks = []
    for blk in torch.unique(b).tolist():
        sel = b == blk
        crow = torch.zeros(n + 1, dtype=torch.int64, device=index.device)
        crow[1:] = torch.bincount(r[sel], minlength=n).cumsum(0)
        lo = blk * PATTERN_BLOCK_ROWS
        blocks.append((crow, (c[sel] - lo).contiguous(), lo, min(n, lo + PATTERN_BLOCK_ROWS)))
    pattern = (blocks, back.view(n, k))
    with _CACHE_LOCK:
        _PATTERNS.insert(0, (index, pattern))
        del _PATTERNS[2:]
    return pattern


def tc_loss(
    h_last: ArrayLike,
    e: ArrayLike,
    seq_ids: ArrayLike,
    positions: ArrayLike,
    window: int = 5,
    negatives: int = 50,
    temperature: float = 0.07,
    generator: torch.Generator | None = None,
) -> float:
    """TACO's token-alignment (TC) loss evaluated on probe tokens, every token an anchor.

    g = h_last − e; indices from `sample_tc_indices`, loss from `info_nce_from_indices`. Meaningful for
    MLM runs too (how TACO-like their context vectors are). Differs from training only in the pool:
    negatives come from all other probe sequences rather than the other sequences of one batch, and there
    is no dropout. The value is random through the sampling: pass a seeded `generator` to compare
    snapshots on identical draws.

    Args:
        h_last: (n, H) last-layer hidden states; e: (n, H) embedding-layer outputs, same tokens.
        seq_ids, positions: (n,) as in `sample_tc_indices`.
        window W (odd, default 5), negatives K (default 50), temperature τ (default 0.07).
    Returns: float, mean loss in nats.
    """
    h, emb = as_matrix(h_last, "h_last"), as_matrix(e, "e")
    same_rows(h, emb, "h_last", "e")
    pos_idx, neg_idx = sample_tc_indices(seq_ids, positions, window, negatives, generator)
    return info_nce_from_indices(h - emb.to(h.device), pos_idx, neg_idx, temperature)


def sequence_identification_accuracy(g: Matrix, seq_ids: ArrayLike, max_elements: int = 1 << 24,
                                     recheck: float = 1e-4) -> float:
    """Fraction of tokens whose context vector is closest (by cosine) to its own sequence's centroid.

    Centroid of sequence t: the sum of the unit vectors u_j = g_j/‖g_j‖ of its tokens (the mean direction;
    its scale does not matter to a cosine). Leave-one-out: token i is compared with its own sequence's
    centroid *without itself* (Σ_{j∈s, j≠i} u_j) — otherwise every token would partly match itself and
    short sequences would look trivially identifiable — and with the full centroids of the other sequences.
    Token i counts as correct only if its own score is strictly the highest (ties, e.g. g ≡ 0, count as
    wrong). Tokens of one-token sequences have no leave-one-out centroid and are skipped, though their
    sequence still competes as a candidate. Chance level is about 1/(number of sequences).

    Centroids are float64. The scores against all centroids are one matrix product in the dtype of g's `Rows`
    (the own score from the same product: u·C_own = (u·Ĉ_own)‖C_own‖); where that is float32, every token whose
    own and best other score lie within `recheck` of each other is scored again in float64, so the count
    equals the float64 one.

    Args: g (n, H); seq_ids (n,); max_elements bounds the (chunk, n_sequences) score block; recheck.
    Returns: float in [0, 1] (NaN if no sequence has two tokens).
    """
    r, s, _ = _inputs(g, seq_ids)
    u = r.unit
    grouping = r.grouped(s)
    groups, n_groups = grouping.ids, grouping.n_groups
    cent = grouping.unit_sums  # (G, H) float64
    cent_norm = torch.linalg.vector_norm(cent, dim=1)
    safe_norm = torch.where(cent_norm > 0, cent_norm, torch.ones_like(cent_norm))
    cent_hat = cent / safe_norm[:, None]
    cent_hat_t = cent_hat.to(u.dtype).T.contiguous()
    eligible = grouping.counts[groups] >= 2
    if not bool(eligible.any()):
        return math.nan
    sq = r.unit_sq.to(u.dtype)
    norm_c, safe_c = cent_norm.to(u.dtype), safe_norm.to(u.dtype)
    correct = 0
    chunk = max(1, min(max_elements // max(1, n_groups), chunk_rows(max(n_groups, u.shape[1]))))

    def own_scores(own_dot: Tensor, gi: Tensor, uu: Tensor) -> Tensor:
        # Own centroid without the token: u·(C − u) / ‖C − u‖, ‖C − u‖² = ‖C‖² − 2u·C + ‖u‖².
        loo_norm = (norm_c[gi].to(own_dot.dtype) ** 2 - 2 * own_dot + uu).clamp_min(0).sqrt()
        loo_dot = own_dot - uu
        return torch.where(loo_norm > 1e-12, loo_dot / loo_norm.clamp_min(1e-12), torch.zeros_like(loo_dot))

    for start in range(0, u.shape[0], chunk):
        ui, gi = u[start : start + chunk], groups[start : start + chunk]
        scores = matmul(ui, cent_hat_t)  # (chunk, G): cosines with every centroid
        own_dot = scores.gather(1, gi[:, None]).squeeze(1) * safe_c[gi]
        own = own_scores(own_dot, gi, sq[start : start + chunk])
        scores.scatter_(1, gi[:, None], -math.inf)
        best_other = scores.amax(1)
        if u.dtype != torch.float64:
            near = torch.nonzero((own - best_other).abs() <= recheck).squeeze(1)
            own, best_other = own.to(torch.float64), best_other.to(torch.float64)
            if near.numel():
                u64, g64 = ui[near].to(torch.float64), gi[near]
                exact = u64 @ cent_hat.T
                own[near] = own_scores(row_dots(u64, cent[g64]), g64, sq[start : start + chunk][near].double())
                exact.scatter_(1, g64[:, None], -math.inf)
                best_other[near] = exact.amax(1)
        ok = (own > best_other) & eligible[start : start + chunk]
        correct += int(ok.sum())
    return correct / int(eligible.sum())
