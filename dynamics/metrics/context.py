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
arithmetic with float64 sums and float64 re-checks of near-ties; see `rows`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from taco.objectives import info_nce_of_cosines, negative_cosine, sample_tc_indices

from .blas import matmul
from .checks import ArrayLike, as_labels
from .grids import BlockLayout, shifted_pair_sums
from .registry import CONTEXT_LAYERS, DISTANCES, LAST_LAYER, register
from .rows import Rows, as_rows, chunk_rows, row_dots

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
    all_sum, all_pairs = r.unit_pair_sums()
    grp_sum, grp_pairs = r.grouped(s).unit_pair_sums()
    same_sum, same_pairs = float(grp_sum.sum()), float(grp_pairs.sum())
    other_sum, other_pairs = all_sum - same_sum, all_pairs - same_pairs
    same = same_sum / same_pairs if same_pairs > 0 else math.nan
    other = other_sum / other_pairs if other_pairs > 0 else math.nan
    return {"same": same, "other": other, "gap": same - other}


def distance_sums(g: Matrix, seq_ids: ArrayLike, positions: ArrayLike, max_distance: int,
                  layout: BlockLayout | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per distance d = 1..max_distance: the sum of cos(g_i, g_j) over unordered same-sequence pairs with
    |p_i − p_j| = d, and the number of such pairs ((max_distance,) float64 each). `cosine_by_distance` is
    sums / counts and `window_cosine` pools the first (W − 1)/2 entries, so one call serves both (the sums
    at a distance do not depend on how far the pass reaches). `layout`: the tokens' `BlockLayout`, if already built
    (it depends on seq_ids and positions only)."""
    if max_distance < 1:
        raise ValueError(f"max_distance must be >= 1; got {max_distance}")
    r, s, p = _inputs(g, seq_ids, positions)
    return shifted_pair_sums(r.unit, s, p, max_distance, layout=layout)


def _by_distance(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean cosine per distance from `distance_sums`, NaN where a distance has no pair."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _pooled(sums: np.ndarray, counts: np.ndarray) -> float:
    """Pair-weighted mean cosine over the distances of `distance_sums` given, NaN without pairs."""
    return float(sums.sum() / counts.sum()) if counts.sum() > 0 else math.nan


def cosine_by_distance(g: Matrix, seq_ids: ArrayLike, positions: ArrayLike, max_distance: int,
                       layout: BlockLayout | None = None) -> np.ndarray:
    """Mean cosine of context vectors as a function of distance within a sequence.

    out[d − 1] = mean cos(g_i, g_j) over unordered pairs in the same sequence with |p_i − p_j| = d.

    Args: g (n, H); seq_ids (n,); positions (n,) unique within a sequence; max_distance ≥ 1; layout: the
    tokens' `BlockLayout`, if built. Returns: (max_distance,) float64, NaN for a distance without pairs.
    """
    return _by_distance(*distance_sums(g, seq_ids, positions, max_distance, layout))


def window_cosine(g: Matrix, seq_ids: ArrayLike, positions: ArrayLike, window: int = 5,
                  layout: BlockLayout | None = None) -> float:
    """Mean cosine of context vectors over same-sequence pairs inside TACO's window.

    Pairs (i, j) of one sequence with 1 ≤ |p_i − p_j| ≤ (W − 1)/2, each unordered pair once, pooled over
    distances (a pair-weighted mean, not the mean of the per-distance means).

    Args: g (n, H); seq_ids (n,); positions (n,); window W odd ≥ 3; layout: the tokens' `BlockLayout`, if
    built. Returns a float (NaN if no pairs).
    """
    return _pooled(*distance_sums(g, seq_ids, positions, _check_window(window), layout))


# --------------------------------------------------------------------------------------- registered metrics

@register("ctx_same_all", family="context", page="context", layers=CONTEXT_LAYERS, unit="cosine in [−1, 1]",
          label="Context alignment, same sequence",
          definition="Mean cosine of g = h − e over pairs of distinct tokens of the same sequence.")
@register("ctx_other", family="context", page="context", layers=CONTEXT_LAYERS, unit="cosine in [−1, 1]",
          label="Context alignment, other sequences",
          definition="Mean cosine of g = h − e over pairs of tokens from different sequences.")
@register("ctx_gap_all", family="context", page="context", layers=CONTEXT_LAYERS, unit="cosine difference in [−2, 2]",
          label="Context alignment gap",
          definition="Same-sequence minus other-sequence mean cosine of g = h − e.")
@register("ctx_cos_by_distance", family="context", page="context", layers=CONTEXT_LAYERS, variants=DISTANCES,
          unit="cosine in [−1, 1]", label="Context cosine by distance",
          definition="Mean cosine of g = h − e between tokens of one sequence as a function of their distance d.")
@register("ctx_same_window", family="context", page="context", layers=CONTEXT_LAYERS, unit="cosine in [−1, 1]",
          label="Context alignment, within the window",
          definition="Mean cosine of g = h − e over same-sequence pairs within TACO's window W.")
@register("ctx_gap_window", family="context", page="context", layers=CONTEXT_LAYERS,
          unit="cosine difference in [−2, 2]", label="Context alignment gap, within the window",
          definition="Within-window minus other-sequence mean cosine of g = h − e.")
def context_alignment(g: Rows, seq_ids: Tensor, positions: Tensor, window: int, max_distance: int,
                      layout: BlockLayout | None = None) -> dict[str, float | dict[str, float | None]]:
    """How the context vectors g = h − e of one sequence align, from one pass over all pairs and one over pairs
    by distance (u = g/‖g‖; means over unordered pairs of distinct tokens):

        ctx_same_all        = mean cos(g_i, g_j) over pairs of one sequence (`same_vs_other_cosine`),
        ctx_other           = the same over pairs from two different sequences,
        ctx_gap_all         = ctx_same_all − ctx_other (0 when g carries no sequence identity),
        ctx_cos_by_distance = mean cos over pairs of one sequence with |Δposition| = d, d = 1…max_distance, as
                              variants "d001", "d002", … (None where no pair has that distance; `cosine_by_distance`),
        ctx_same_window     = mean cos over pairs of one sequence with 1 ≤ |Δposition| ≤ (W − 1)/2, pooled over
                              distances (`window_cosine`),
        ctx_gap_window      = ctx_same_window − ctx_other: TACO's target (neighbours in the window agree) against
                              the baseline of unrelated tokens.

    NaN for a mean without pairs. Raises ValueError (all names undefined) for an even or too small window or
    max_distance < 1.
    """
    pairs = same_vs_other_cosine(g, seq_ids)
    half = _check_window(window)
    sums, counts = distance_sums(g, seq_ids, positions, max_distance, layout)
    # the window's distances are the first (W − 1)/2 of the curve's, unless it reaches further
    near = (sums[:half], counts[:half]) if half <= max_distance else distance_sums(g, seq_ids, positions, half, layout)
    in_window = _pooled(*near)
    curve = _by_distance(sums, counts)
    return {"ctx_same_all": pairs["same"], "ctx_other": pairs["other"], "ctx_gap_all": pairs["gap"],
            "ctx_cos_by_distance": {f"d{d:03d}": None if math.isnan(v) else float(v)
                                    for d, v in enumerate(curve, start=1)},
            "ctx_same_window": in_window, "ctx_gap_window": in_window - pairs["other"]}


@register("seq_id_accuracy", family="context", page="context", layers=CONTEXT_LAYERS, unit="fraction in [0, 1]",
          label="Sequence identification accuracy",
          definition="Fraction of tokens whose g = h − e is closest (cosine) to its own sequence's centroid.")
def seq_id_accuracy(g: Matrix, seq_ids: ArrayLike, max_elements: int = 1 << 24, recheck: float = 1e-4) -> float:
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


@dataclass(frozen=True)
class TCDraws:
    """The probe's fixed TC-loss draws, as indices into its N content tokens: `anchors` (A,), `positives` (A,)
    and `negatives` (A, K). Drawn once per probe run by `draw_tc` so every snapshot is scored on the same draws."""

    anchors: Tensor
    positives: Tensor
    negatives: Tensor

    def to(self, device: torch.device | str) -> TCDraws:
        return TCDraws(self.anchors.to(device), self.positives.to(device), self.negatives.to(device))


def draw_tc(seq_ids: ArrayLike, positions: ArrayLike, window: int, negatives: int,
            generator: torch.Generator | None = None) -> TCDraws:
    """TACO's positives and negatives for every probe token as an anchor, by training's own sampler.

    The probe's tokens are laid out on their (block, position) grid as a batch of blocks and drawn with
    `taco.objectives.sample_tc_indices` (every content token an anchor; the negative pool is all other probe
    blocks), so the probe-set TC loss and the training loss are one implementation. Raises ValueError when a
    block has fewer than 2 tokens or there is only one block.

    Args: seq_ids, positions (N,) of the probe tokens (positions unique within a block); window W; negatives K;
    generator: a seeded CPU generator. Returns `TCDraws` on the CPU.
    """
    _check_window(window)
    if negatives < 1:
        raise ValueError(f"negatives must be >= 1; got {negatives}")
    s = torch.as_tensor(seq_ids).long().cpu()
    p = torch.as_tensor(positions).long().cpu()
    if s.dim() != 1 or s.numel() == 0 or p.shape != s.shape:
        raise ValueError(f"seq_ids and positions must be 1-D (n,) of the same length; got {tuple(s.shape)} and "
                         f"{tuple(p.shape)}")
    blocks, row = torch.unique(s, return_inverse=True)
    if blocks.numel() < 2:
        raise ValueError("the TC loss needs at least 2 sequences (negatives come from other sequences)")
    if bool((p < 0).any()):
        raise ValueError("positions must be >= 0")
    width = int(p.max()) + 1
    cell = row * width + p
    if torch.unique(cell).numel() != cell.numel():
        raise ValueError("positions must be unique within a sequence")
    valid = torch.zeros(blocks.numel() * width, dtype=torch.bool)
    valid[cell] = True
    valid = valid.view(blocks.numel(), width)
    if bool((valid.sum(1) < 2).any()):
        raise ValueError("every sequence needs at least 2 tokens (the positive is another token of it)")
    # compact index k (row-major over the grid) → probe token
    token_of = torch.argsort(cell)
    idx = sample_tc_indices(valid, valid, window, negatives, generator)
    return TCDraws(token_of[idx.anchors], token_of[idx.positives], token_of[idx.negatives])


@register("tc_loss", family="context", page="context", layers=LAST_LAYER, unit="nats",
          label="TC loss on the probe set",
          definition="TACO's InfoNCE over g = h − e with fixed positives and negatives (meaningful for MLM runs "
                     "too).")
def tc_loss(g: Rows, tc_draws: TCDraws, tc_temperature: float) -> float:
    """TACO's token-alignment loss on the probe set, by training's implementation (`taco.objectives`).

    L = mean over anchors i of −log [exp(cos(g_i, g_p)/τ) / (exp(cos(g_i, g_p)/τ) + Σ_k exp(cos(g_i, g_nk)/τ))]
    with g = h_L − e, the positive p and negatives n_k from `draw_tc` (the same draws for every snapshot), no
    dropout; the negatives' cosines by training's float32 kernel (unit rows: each within ≈ 1e-7), the positive's
    cosine and the logits in float64. Differs from a training batch only in the pool (all other probe blocks).
    Returns nats; log(K + 1) when all cosines are equal.
    """
    if tc_temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {tc_temperature}")
    r = as_rows(g, "g")
    u = r.unit
    draws = tc_draws.to(u.device)
    anchors = u[draws.anchors]
    with torch.no_grad():
        neg = negative_cosine(anchors, u, draws.negatives).to(torch.float64)
        pos = row_dots(anchors, u[draws.positives], dtype=torch.float64)
        return float(info_nce_of_cosines(pos, neg, tc_temperature))

