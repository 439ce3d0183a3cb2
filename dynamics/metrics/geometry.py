"""Geometry of one layer's token representations: anisotropy, contextuality (Ethayarajh 2019), rank,
isotropy, intrinsic dimension, alignment/uniformity and norms.

Inputs are (n, H) matrices of content-token vectors of one layer ([CLS]/[SEP]/[PAD] and other special
tokens already removed by the caller; layer 0 is the embedding-layer output), or a `Rows` of one (shares row
norms, unit rows and groupings between the metrics of a layer; see `rows` for its float32 arithmetic).
Plain arrays are computed on in float64. "Mean cosine over pairs" is over unordered pairs of distinct
tokens, computed from sums of unit vectors (O(n·H)); a zero vector has cosine 0 with everything. Estimators
that need neighbours or all pairwise distances (TwoNN, uniformity) work on a fixed, seeded subsample when n
is large.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .blas import add_gram, eigvalsh, gram_matrix
from .checks import ArrayLike, as_labels
from .grids import BlockLayout, shifted_pair_sums
from .registry import ALL_LAYERS, CONTEXT_LAYERS, EMBEDDING_LAYER, register
from .rows import Rows, as_rows, chunk_rows, dense_groups, structural, sum_rows, unit_rows

Matrix = ArrayLike | Rows


def _subsample(n: int, max_samples: int | None, seed: int) -> np.ndarray | None:
    """Sorted row indices of a seeded subsample without replacement, or None to keep all rows."""
    if max_samples is None or n <= max_samples:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))


@register("anisotropy", family="geometry", page="geometry", layers=ALL_LAYERS, unit="cosine in [−1, 1]", label="Anisotropy",
          definition="Mean cosine similarity over all unordered pairs of distinct tokens.")
def anisotropy(h: Matrix) -> float:
    """Mean cosine similarity over all unordered pairs of distinct tokens.

    (‖Σ_i u_i‖² − Σ_i ‖u_i‖²) / (n(n − 1)) with u_i = x_i/‖x_i‖: the exact all-pairs mean that "mean
    cosine of random token pairs" estimates, at O(n·H) and without sampling noise.

    Args: h (n, H), n ≥ 2. Returns a float in [−1/(n−1), 1]; ≈ 0 for isotropic data, → 1 when all vectors
    share one direction.
    """
    r = as_rows(h, "h", min_rows=2)
    return _ratio(*r.unit_pair_sums())  # from Σ u_i kept on the `Rows`: cheap again for the adjusted measures


def _ratio(total: float, pairs: float) -> float:
    return total / pairs


@register("self_similarity", family="geometry", page="geometry", layers=ALL_LAYERS, unit="cosine in [−1, 1]",
          label="Self-similarity",
          definition="Mean pairwise cosine of the occurrences of one word type, averaged over types (Ethayarajh "
                     "2019).")
@register("self_similarity_adj", family="geometry", page="geometry", layers=ALL_LAYERS,
          unit="cosine difference in [−2, 2]", label="Self-similarity (anisotropy-adjusted)",
          definition="Self-similarity minus the layer's anisotropy.")
def self_similarity(h: Matrix, word_type: ArrayLike) -> dict[str, float]:
    """Ethayarajh's self-similarity: mean over word types of the mean pairwise cosine of its occurrences, and the
    same less its baseline.

    SelfSim(w) = 1/(n_w(n_w − 1)) Σ_{j≠k} cos(x_j, x_k) over the n_w occurrences of w (from sums of unit
    vectors); self_similarity is the unweighted mean over types with n_w ≥ 2, and self_similarity_adj =
    self_similarity − `anisotropy(x)` over *all* rows of x (Ethayarajh's baseline: random token pairs).

    Args:
        h: (n, H) all content tokens of one layer.
        word_type: (n,) word-type id per token, −1 for tokens not counted. The caller decides eligibility
            (DESIGN.md: whole words that are a single wordpiece and occur ≥ 5 times in the probe set).
    Returns: {"self_similarity", "self_similarity_adj"}, floats (NaN if no type has two occurrences).
    """
    r = as_rows(h, "h")
    grouping = r.grouped(as_labels(word_type, r.n, "word_type", device=r.device))
    sums, pairs = grouping.unit_pair_sums()
    ok = (pairs > 0) & (grouping.labels >= 0)  # −1 marks tokens not counted
    if not bool(ok.any()):
        return {"self_similarity": math.nan, "self_similarity_adj": math.nan}
    value = float((sums[ok] / pairs[ok]).mean())
    return {"self_similarity": value, "self_similarity_adj": value - anisotropy(r)}


@register("intra_similarity", family="geometry", page="geometry", layers=ALL_LAYERS, unit="cosine in [−1, 1]",
          label="Intra-sentence similarity",
          definition="Mean cosine between each token and its sequence's mean vector (Ethayarajh 2019).")
@register("intra_similarity_adj", family="geometry", page="geometry", layers=ALL_LAYERS,
          unit="cosine difference in [−2, 2]", label="Intra-sentence similarity (anisotropy-adjusted)",
          definition="Intra-sentence similarity minus the layer's anisotropy.")
def intra_similarity(h: Matrix, seq_ids: ArrayLike) -> dict[str, float]:
    """Ethayarajh's intra-sentence similarity: mean cosine between each token and its sentence's mean vector, and
    the same less its baseline.

    IntraSim(s) = 1/n_s Σ_{i∈s} cos(x_i, m_s) with m_s = 1/n_s Σ_{i∈s} x_i (the mean of the raw vectors);
    intra_similarity is the unweighted mean over sequences with ≥ 2 tokens (a one-token sentence gives 1
    trivially), intra_similarity_adj = intra_similarity − `anisotropy(x)`. Here a "sentence" is whatever `seq_ids`
    groups — in the probe, one block. Computed as (Σ_{i∈s} u_i)·m_s/‖m_s‖ / n_s: a cosine is linear in its unit
    vector.

    Args: h (n, H); seq_ids (n,). Returns {"intra_similarity", "intra_similarity_adj"}, floats (NaN if no
    sequence has two tokens).
    """
    r = as_rows(h, "h")
    grouping = r.grouped(as_labels(seq_ids, r.n, "seq_ids", device=r.device))
    counts = grouping.counts.to(torch.float64)
    # the 1/n_s scale of the mean does not change a cosine
    per_seq = (grouping.unit_sums * unit_rows(grouping.sums)).sum(1) / counts
    ok = counts >= 2
    if not bool(ok.any()):
        return {"intra_similarity": math.nan, "intra_similarity_adj": math.nan}
    value = float(per_seq[ok].mean())
    return {"intra_similarity": value, "intra_similarity_adj": value - anisotropy(r)}


def explained_variance_pc1(x: Matrix, singular_values: Tensor | None = None) -> float:
    """σ₁² / Σ_k σ_k² of the *uncentred* matrix x (n, H): the share of Σ‖x_i‖² along its top direction.

    Used as Ethayarajh's baseline for MEV (the first-component share of random token representations, `mev_adj_pc1`).
    `singular_values`: x's singular values (descending), e.g. from `spectra(x)`, to skip recomputing them.
    Returns a float in [1/min(n, H), 1] (NaN for an all-zero matrix).
    """
    sv = singular_values
    if sv is None:
        sv = spectra(x)["singular_values"]  # kept on a `Rows`, shared with RankMe and IsoScore
    sv = torch.as_tensor(sv, dtype=torch.float64)
    total = float((sv * sv).sum())
    if total == 0:
        return math.nan
    return float(sv[0] ** 2) / total


@register("mev", family="geometry", page="geometry", layers=ALL_LAYERS, unit="share in (0, 1]",
          label="Maximum explainable variance",
          definition="σ₁²/Σσ² of a word type's uncentred occurrence matrix, averaged over types (Ethayarajh 2019).")
@register("mev_adj", family="geometry", page="geometry", layers=ALL_LAYERS, unit="share difference in [−1, 1]",
          label="MEV (anisotropy-adjusted)", definition="Maximum explainable variance minus the layer's anisotropy.")
@register("mev_adj_pc1", family="geometry", page="geometry", layers=ALL_LAYERS, unit="share difference in [−1, 1]",
          label="MEV (first-PC-adjusted)",
          definition="Maximum explainable variance minus the variance share of the layer's first principal "
                     "component.")
def mev(h: Matrix, word_type: ArrayLike) -> dict[str, float]:
    """Ethayarajh's maximum explainable variance, averaged over word types, and the same less either baseline.

    MEV(w) = σ₁² / Σ_k σ_k² for the uncentred (n_w, H) matrix of w's occurrences: how much of the word's
    contextual variation one static vector could explain. mev is the unweighted mean over types with n_w ≥ 2
    (a single occurrence gives 1 trivially); mev_adj = mev − `anisotropy(x)` (the baseline DESIGN.md names for
    all three of Ethayarajh's measures) and mev_adj_pc1 = mev − `explained_variance_pc1(x)` (Ethayarajh 2019 §3.4:
    σ₁²/Σσ² of the layer's uncentred token matrix), both baselines over all rows of x.

    Args: h (n, H); word_type (n,) with −1 for tokens not counted (see `self_similarity`).
    Returns: {"mev", "mev_adj", "mev_adj_pc1"}, floats, mev in (0, 1] (all NaN if no type has two occurrences).
    """
    r = as_rows(h, "h")
    shares = _type_top_shares(r, as_labels(word_type, r.n, "word_type", device=r.device))
    value = float(shares.mean()) if shares.numel() else math.nan
    if math.isnan(value):
        return {"mev": math.nan, "mev_adj": math.nan, "mev_adj_pc1": math.nan}
    return {"mev": value,
            "mev_adj": value - anisotropy(r),
            "mev_adj_pc1": value - explained_variance_pc1(r)}


def _type_top_shares(r: Rows, labels: Tensor) -> Tensor:
    """σ₁² / Σσ² of each type's occurrence matrix, for the types with ≥ 2 occurrences and a non-zero total.

    σ₁² is the top eigenvalue of the smaller Gram matrix (`top_eigenvalues`). Types are batched by occurrence
    count rounded up to the next of `BUCKET_CAPS`: each type's rows are zero-padded to that count, which adds only zero
    eigenvalues to the (c × c) Gram matrix, so one batched product serves every type of a bucket. Types with
    more occurrences than dimensions use their (H × H) Gram matrix instead. The Gram matrices are formed in
    the rows' dtype, decomposed in float64.
    """
    dim = r.dim
    lay = structural(labels, f"types/{dim}", lambda: _TypeLayout.build(labels, dim))
    sq = r.norms[lay.index].to(torch.float64) ** 2
    totals = torch.zeros(lay.n_types, dtype=torch.float64, device=sq.device).index_add_(0, lay.groups, sq)
    ok = lay.repeated & (totals > 0)
    top = torch.full((lay.n_types,), math.nan, dtype=torch.float64, device=sq.device)
    for size, types, rows, where in lay.buckets:
        padded = r.x.new_zeros(types.numel(), size, dim)
        padded[where] = r.x[rows]
        gram = (padded @ padded.transpose(1, 2)).to(torch.float64)
        # small matrices: LAPACK is as fast as the iteration's overhead
        top[types] = eigvalsh(gram)[:, -1] if size <= SMALL_EIGEN else top_eigenvalues(gram)
    if lay.big:
        top[lay.big] = top_eigenvalues(torch.stack(block_grams(r, lay.big_rows)))
    return (top / totals)[ok]


@dataclass
class _TypeLayout:
    """Which rows go where in `_type_top_shares`, from the type labels alone (kept across layers and snapshots)."""

    n_types: int
    index: Tensor  # rows of counted tokens, sorted by type
    groups: Tensor  # their dense type ids
    repeated: Tensor  # (n_types,) bool: ≥ 2 occurrences
    buckets: list[tuple[int, Tensor, Tensor, tuple[Tensor, Tensor]]]  # (cap, types, rows, (type slot, row slot))
    big: list[int]  # types with more occurrences than dimensions
    big_rows: list[Tensor]  # their rows

    @staticmethod
    def build(labels: Tensor, dim: int) -> _TypeLayout:
        keep = torch.nonzero(labels >= 0).squeeze(1)
        groups, n_types = dense_groups(labels[keep])
        counts = torch.bincount(groups, minlength=n_types)
        order = torch.argsort(groups, stable=True)
        index, groups = keep[order], groups[order]
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(index.numel(), device=index.device) - starts[groups]
        repeated = counts >= 2
        caps = torch.tensor(sorted({c for c in BUCKET_CAPS if c < dim} | {dim}), device=index.device)
        cap = caps[torch.searchsorted(caps, counts.clamp_max(dim))]
        buckets = []
        for size in torch.unique(cap[repeated & (counts <= dim)]).tolist():
            types = torch.nonzero(repeated & (counts <= dim) & (cap == size)).squeeze(1)
            local = torch.full((n_types,), -1, dtype=torch.int64, device=index.device)
            local[types] = torch.arange(types.numel(), device=index.device)
            sel = torch.nonzero(local[groups] >= 0).squeeze(1)
            buckets.append((int(size), types, index[sel], (local[groups[sel]], slot[sel])))
        big = torch.nonzero(repeated & (counts > dim)).squeeze(1).tolist()
        big_rows = [index[int(starts[t]) : int(starts[t] + counts[t])] for t in big]  # rows are sorted by type
        return _TypeLayout(n_types, index, groups, repeated, buckets, big, big_rows)


SMALL_EIGEN = 32
# Occurrence counts are padded up to the next of these (and H): ≤ 1.5× padding per side at a few buckets.
BUCKET_CAPS = (2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)


def top_eigenvalues(a: Tensor, tol: float = 1e-13, max_iter: int = 64, check_every: int = 3) -> Tensor:
    """Largest eigenvalue of each symmetric positive semi-definite matrix of the batch a (B, m, m), float64.

    Power iteration from the all-ones vector, each matrix stopped once its value is certified to a relative
    `tol`: the Rayleigh quotient ρ = vᵀAv (‖v‖ = 1) never exceeds λ_max, and λ_max is at most
    max_i (Av)_i / v_i when A is entrywise non-negative and v > 0 (Collatz–Wielandt), and at most
    ρ + ‖Av − ρv‖² / (2ρ − tr A) when ρ > tr A / 2 (Kato–Temple, with λ₂ ≤ tr A − λ_max ≤ tr A − ρ for a
    PSD matrix). Matrices not certified within `max_iter` steps (a small gap between the two largest
    eigenvalues) go to `eigvalsh`. So the result equals `eigvalsh`'s to `tol` (relative) either way; the
    iteration is only faster when, as for occurrences of one word, one direction dominates. The bounds are
    evaluated every `check_every` steps (they cost more than a step).
    """
    b, m, _ = a.shape
    out = torch.empty(b, dtype=torch.float64, device=a.device)
    if b == 0:
        return out
    a = a.to(torch.float64)
    trace = torch.diagonal(a, dim1=1, dim2=2).sum(1)
    nonneg = (a >= 0).flatten(1).all(1)
    live = torch.diagonal(a, dim1=1, dim2=2) > 0  # a zero diagonal entry of a PSD matrix: a zero row and column
    active = torch.arange(b, device=a.device)
    mat, v = a, live.to(torch.float64).unsqueeze(2)
    v = v / torch.linalg.vector_norm(v, dim=1, keepdim=True).clamp_min(1e-300)
    for step in range(max_iter):
        av = mat @ v
        if (step + 1) % check_every and step + 1 < max_iter:
            v = av / torch.linalg.vector_norm(av, dim=1, keepdim=True).clamp_min(1e-300)
            continue
        rho = (v * av).sum((1, 2))
        res = ((av - rho[:, None, None] * v) ** 2).sum((1, 2))
        gap = 2 * rho - trace[active]
        kt = torch.where(gap > 0, rho + res / gap.clamp_min(1e-300), torch.full_like(rho, math.inf))
        ratio = torch.where(v > 0, av / v.clamp_min(1e-300), torch.full_like(v, math.inf))
        ratio = torch.where(live[active].unsqueeze(2), ratio, torch.full_like(v, -math.inf))
        cw = torch.where(nonneg[active], ratio.amax((1, 2)), torch.full_like(rho, math.inf))
        upper = torch.minimum(kt, cw)
        done = (upper - rho <= tol * rho.abs()) | (trace[active] <= 0)
        if bool(done.any()):
            out[active[done]] = torch.where(trace[active[done]] > 0, rho[done], torch.zeros_like(rho[done]))
            keep = ~done
            active, mat, av = active[keep], mat[keep], av[keep]
        if active.numel() == 0:
            return out
        v = av / torch.linalg.vector_norm(av, dim=1, keepdim=True).clamp_min(1e-300)
    out[active] = eigvalsh(a[active])[:, -1]
    return out


def spectra(x: Matrix) -> dict[str, Tensor]:
    """Singular values of x (n, H) and of its column-centred form, and the eigenvalues of its sample
    covariance, from one (H × H) Gram matrix, descending.

    The centred Gram matrix C = Σ (x_i − m)(x_i − m)ᵀ (m: the rows' mean) is formed in float64, a chunk of
    rows at a time, and the uncentred one is C + n m mᵀ, exactly. Float64 matters for float32 rows: a float32
    product rounds every entry at ≈ 1e-7 × the largest, which turns an eigenvalue below that level (LayerNorm
    outputs have an exact null direction) into noise of √(1e-7) × σ_max in the singular values that RankMe
    (σ, not σ²) sees; centring first keeps a large shared offset from swamping the rest. Returns
    {"singular_values", "singular_values_centred", "covariance_eigenvalues"}, to pass to `effective_rank`,
    `explained_variance_pc1` and `isoscore` so that a layer is decomposed once.
    """
    r = as_rows(x, "x")
    if "spectra" not in r.cache:
        r.cache["spectra"] = _spectra(r)
    return r.cache["spectra"]


def _spectra(r: Rows) -> dict[str, Tensor]:
    n = r.n
    if n < r.dim:
        xm = r.x.to(torch.float64)
        c = xm - xm.mean(0, keepdim=True)
        sv, svc = _singular_values(xm), _singular_values(c)
        cov = (svc * svc) / max(n - 1, 1)
        return {"singular_values": sv, "singular_values_centred": svc, "covariance_eigenvalues": cov}
    mean = r.column_sums / n
    centred = centred_gram(r)
    ev = eigvalsh(centred + n * torch.outer(mean, mean)).clamp_min(0).flip(0)
    evc = eigvalsh(centred).clamp_min(0).flip(0)
    return {"singular_values": ev.sqrt(), "singular_values_centred": evc.sqrt(),
            "covariance_eigenvalues": evc / max(n - 1, 1)}


def centred_gram(r: Rows) -> Tensor:
    """(H × H) float64 Σ_i (x_i − m)(x_i − m)ᵀ, m the rows' mean: a chunk of rows at a time converted to float64
    (no float64 copy of x), each chunk's product symmetric (`add_gram`: syrk under `numpy_blas`). Kept on the
    `Rows`: `spectra` decomposes it and `anisotropy_standardised` takes the per-dimension variances from its
    diagonal."""
    if "centred_gram" not in r.cache:
        mean = r.column_sums / r.n
        centred = torch.zeros(r.dim, r.dim, dtype=torch.float64, device=r.device)
        step = chunk_rows(r.dim)
        for start in range(0, r.n, step):
            add_gram(centred, r.x[start : start + step].to(torch.float64) - mean)  # not in place: float64 rows
        r.cache["centred_gram"] = centred
    return r.cache["centred_gram"]


def block_grams(r: Rows, blocks: Sequence[Tensor]) -> list[Tensor]:
    """For each index tensor in `blocks`, the uncentred Gram matrix of those rows, (H × H) float64:
    X_bᵀX_b = C_b + a s_bᵀ + s_b aᵀ + n_b a aᵀ, with C_b = Σ_b (x_i − a)(x_i − a)ᵀ formed by a product in the
    rows' dtype, s_b = Σ_b (x_i − a) and a the rows' mean rounded to their dtype (exact in float64 given C_b;
    centring first keeps a shared offset from costing precision)."""
    a = (r.column_sums / r.n).to(r.dtype)
    a64 = a.to(torch.float64)
    order = torch.cat(list(blocks))
    c = torch.index_select(r.x, 0, order, out=r.scratch("centred")[: order.numel()]).sub_(a)
    grams, offset = [], 0
    for b in blocks:
        cb = c[offset : offset + b.numel()]
        offset += b.numel()
        sb = sum_rows(cb)
        grams.append(gram_matrix(cb).to(torch.float64) + torch.outer(a64, sb) + torch.outer(sb, a64)
                     + b.numel() * torch.outer(a64, a64))
    return grams


def _singular_values(x: Tensor) -> Tensor:
    """Singular values of x (n, H), descending, via the eigenvalues of the smaller Gram matrix (float64).

    Much cheaper than an SVD for n ≫ H; the lost relative precision of tiny σ does not matter to the
    entropy-type measures here (RankMe adds 1e-7 to every p_k anyway).
    """
    gram = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T
    return eigvalsh(gram).clamp_min(0).sqrt().flip(0)


def effective_rank(h: Matrix, center: bool = False, singular_values: Tensor | None = None) -> float:
    """RankMe effective rank (Garrido et al. 2023): exp(−Σ_k p_k log p_k), p_k = σ_k / Σ_j σ_j + 1e-7.

    σ_k are the singular values of the *uncentred* (n, H) matrix (DESIGN.md); `center=True` subtracts the
    column means first (the variant that ignores a shared offset). Ranges from ≈ 1 to min(n, H); equals k
    for a rank-k matrix with equal non-zero singular values (up to the 1e-7 smoothing).

    Args: h (n, H); center; singular_values: those of h (or of centred h when `center`), to skip recomputing
    them; a `Rows` takes them from `spectra` (one decomposition per layer). Returns a float (NaN for an all-zero
    matrix).
    """
    if singular_values is None and isinstance(h, Rows):
        singular_values = spectra(h)["singular_values_centred" if center else "singular_values"]
    if singular_values is None:
        xm = as_rows(h, "h").x.to(torch.float64)
        if center:
            xm = xm - xm.mean(0, keepdim=True)
        s = _singular_values(xm)
    else:
        s = torch.as_tensor(singular_values, dtype=torch.float64)
    if float(s.sum()) == 0:
        return math.nan
    p = s / s.sum() + 1e-7
    return float(torch.exp(-(p * torch.log(p)).sum()))


@register("rankme", family="geometry", page="geometry", layers=ALL_LAYERS, unit="dimensions in [1, min(N, H)]",
          label="Effective rank (RankMe)",
          definition="exp(−Σ p_k log p_k), p_k = σ_k/Σσ + 1e-7, of the uncentred token matrix.")
@register("rankme_centred", family="geometry", page="geometry", layers=ALL_LAYERS,
          unit="dimensions in [1, min(N, H)]", label="Effective rank (centred)",
          definition="RankMe of the mean-centred token matrix.")
def rankme(h: Matrix) -> dict[str, float]:
    """RankMe effective rank exp(−Σ_k p_k log p_k), p_k = σ_k / Σ_j σ_j + 1e-7 (`effective_rank`), of the layer's
    uncentred token matrix (rankme) and of the same with its column means subtracted (rankme_centred, which
    ignores a shared offset), both from the one decomposition of the layer (`spectra`)."""
    return {"rankme": effective_rank(h), "rankme_centred": effective_rank(h, center=True)}


@register("isoscore", family="geometry", page="geometry", layers=ALL_LAYERS, unit="score in [0, 1]", label="IsoScore",
          definition="How uniformly variance spreads over all dimensions (Rudman et al. 2022); 1 = isotropic.")
def isoscore(h: Matrix, covariance_eigenvalues: Tensor | None = None) -> float:
    """IsoScore (Rudman et al. 2022): how uniformly the variance of x is spread over all H dimensions.

    Steps of the paper, with n = H the ambient dimension:
      1-2. Reorient by PCA and take the diagonal of the covariance in that basis: Σ_D = the eigenvalues of
           the (centred, sample) covariance matrix of x.
      3.   Normalise to the length of the identity diagonal: Σ̂_D = √n · Σ_D / ‖Σ_D‖.
      4.   Isotropy defect δ = ‖Σ̂_D − 1‖ / √(2(n − √n)) ∈ [0, 1] (1 = the all-ones vector).
      5.   Fraction of dimensions used φ = (n − δ²(n − √n))² / n².
      6.   Rescale to [0, 1]: ι = (n·φ − 1) / (n − 1).
    ι = 1 when the variance is equal in every direction, 0 when it lies along one direction. IsoScore is
    computed on centred data, so a large shared offset (high anisotropy) does not by itself lower it.

    Args: h (n_samples, H), n_samples ≥ 2, H ≥ 2; covariance_eigenvalues: those of h's sample covariance, to
    skip recomputing them (a `Rows` takes them from `spectra`). Returns a float in [0, 1] (NaN if h has no
    variance).
    """
    r = as_rows(h, "h", min_rows=2)
    n = r.dim
    if n < 2:
        raise ValueError(f"isoscore needs dim >= 2; got shape {tuple(r.x.shape)}")
    if covariance_eigenvalues is None and isinstance(h, Rows):
        covariance_eigenvalues = spectra(r)["covariance_eigenvalues"]
    if covariance_eigenvalues is not None:
        var = torch.as_tensor(covariance_eigenvalues, dtype=torch.float64).clamp_min(0)
        if var.numel() < n:  # fewer samples than dimensions: the remaining eigenvalues are zero
            var = torch.cat([var, var.new_zeros(n - var.numel())])
    else:
        xm = r.x.to(torch.float64)
        c = xm - xm.mean(0, keepdim=True)
        var = eigvalsh(c.T @ c / (xm.shape[0] - 1)).clamp_min(0)
    norm = float(torch.linalg.vector_norm(var))
    if norm == 0:
        return math.nan
    scaled = math.sqrt(n) * var / norm
    defect = float(torch.linalg.vector_norm(scaled - 1)) / math.sqrt(2 * (n - math.sqrt(n)))
    phi = (n - defect**2 * (n - math.sqrt(n))) ** 2 / n**2
    return (n * phi - 1) / (n - 1)


def twonn_dimension(
    x: Matrix, discard_fraction: float = 0.1, seed: int = 0, max_samples: int | None = 5000
) -> float:
    """TwoNN intrinsic dimension (Facco et al. 2017).

    For each point, μ = r₂/r₁ (distances to its second and first nearest neighbours, Euclidean). Under local
    uniformity μ is Pareto with F(μ) = 1 − μ^(−d), so −log(1 − F(μ)) = d·log μ. With the μ sorted
    ascending and the empirical F(μ_(i)) = i/N, the largest `discard_fraction` of the μ are dropped (they
    are noisy, and the last one has F = 1) and d is the slope of the least-squares line *through the
    origin*: d = Σ x_i y_i / Σ x_i², x = log μ, y = −log(1 − F).

    Duplicate vectors are collapsed first: identical rows occur (the same token at the same position in two
    blocks has the same layer-0 vector), they give r₁ = 0 and an infinite μ, and they carry no information
    about the dimension of the data's support. The subsample (`max_samples`, seeded) is drawn from the
    unique rows (in lexicographic order, as `np.unique(x, axis=0)` sorts them).

    Neighbours are found exactly (`nearest_two`): candidates from the Gram matrix in the rows' dtype, their
    distances recomputed in float64 from the vectors.

    Args: x (n, H); discard_fraction in [0, 1); seed; max_samples (None = all unique rows).
    Returns: float; NaN if fewer than 3 unique rows.
    """
    if not 0 <= discard_fraction < 1:
        raise ValueError(f"discard_fraction must be in [0, 1); got {discard_fraction}")
    r = as_rows(x, "x")
    r1 = r2 = None
    if (max_samples is None or r.n <= max_samples) and r.n >= 3:
        # Without duplicates, collapsing them changes nothing: try all rows first (a zero distance to the
        # nearest neighbour, computed exactly, means an identical row).
        r1, r2 = nearest_two(r, torch.arange(r.n, device=r.device))
        if not (r1 > 0).all():
            r1 = r2 = None
    if r1 is None:
        uniq, inverse = torch.unique(r.x, dim=0, return_inverse=True)
        first = torch.full((uniq.shape[0],), r.n, dtype=torch.int64, device=r.device)
        first.scatter_reduce_(0, inverse, torch.arange(r.n, device=r.device), reduce="amin")
        idx = _subsample(uniq.shape[0], max_samples, seed)
        rows = first if idx is None else first[torch.as_tensor(idx, device=r.device)]
        if rows.numel() < 3:
            return math.nan
        r1, r2 = nearest_two(r, torch.sort(rows).values)
    ok = r1 > 0
    mu = np.sort(r2[ok] / r1[ok])
    n = mu.size
    keep = int(math.floor(n * (1 - discard_fraction)))
    keep = min(keep, n - 1)  # F = 1 at the largest μ: −log(0) is infinite
    if keep < 1:
        return math.nan
    xs = np.log(mu[:keep])
    ys = -np.log(1 - np.arange(1, keep + 1) / n)
    denom = float((xs * xs).sum())
    return float((xs * ys).sum() / denom) if denom > 0 else math.nan


def nearest_two(r: Rows, index: Tensor, candidates: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each row r.x[index] to its nearest and second-nearest other row among r.x[index].

    The `candidates` nearest by the Gram-matrix form ‖a‖² + ‖b‖² − 2a·b (in the rows' dtype; from the Gram
    matrix if the `Rows` holds one, else by chunks) are re-measured as ‖a − b‖ in float64 and the two smallest kept, so
    the distances are float64-exact; only a neighbour whose Gram-form distance is off by more than the gap to
    the `candidates`-th nearest could be missed, i.e. among near-ties, which changes the distance by no more
    than the float32 error. Returns (r₁, r₂) as float64 numpy arrays (n_index,).
    """
    m = index.numel()
    k = min(candidates, m - 1)
    x = r.x[index]
    half = r.norms[index] ** 2 / 2
    cand = torch.empty(m, k, dtype=torch.int64, device=r.device)
    step = chunk_rows(m)
    whole = r.cached_gram()
    if whole is not None and not (m == r.n and bool((index == torch.arange(m, device=r.device)).all())):
        whole = whole[index][:, index]  # the Gram matrix of the selected rows
    for start in range(0, m, step):
        stop = min(m, start + step)
        dots = whole[start:stop] if whole is not None else x[start:stop] @ x.T
        # ‖x_i − x_j‖² = ‖x_i‖² − 2(x_i·x_j − ‖x_j‖²/2): per row, the nearest have the largest x_i·x_j − ‖x_j‖²/2
        score = dots - half[None, :]
        score[torch.arange(stop - start), torch.arange(start, stop)] = -math.inf  # not its own neighbour
        cand[start:stop] = torch.topk(score, k, dim=1, sorted=False).indices
    x64 = x.to(torch.float64)
    dist = torch.empty(m, k, dtype=torch.float64, device=r.device)
    for j in range(k):
        dist[:, j] = torch.linalg.vector_norm(x64 - x64[cand[:, j]], dim=1)
    two = torch.topk(dist, min(2, k), dim=1, largest=False).values
    if two.shape[1] < 2:
        two = torch.cat([two, two], 1)
    return two[:, 0].cpu().numpy(), two[:, 1].cpu().numpy()


@register("alignment", family="geometry", page="geometry", layers=ALL_LAYERS, unit="squared distance in [0, 4]",
          label="Alignment (Wang–Isola)",
          definition="Mean ‖u_i − u_{i+1}‖² over adjacent tokens of a block, unit vectors.")
def alignment(h: Matrix, seq_ids: ArrayLike, positions: ArrayLike, layout: BlockLayout | None = None) -> float:
    """Wang–Isola alignment with positive pairs by proximity: mean ‖u_i − u_j‖² over adjacent tokens.

    Pairs are tokens of one block at positions p and p + 1 (TACO's notion of a positive; a gap left by a
    removed special token breaks adjacency). u = x/‖x‖; ‖u_i − u_j‖² = 2 − 2cos for non-zero rows.
    Lower is more aligned; 0 when neighbours coincide in direction, 2 for orthogonal neighbours.

    Args: h (n, H); seq_ids (n,); positions (n,) unique within a sequence; layout: their `BlockLayout`, if
    already built. Returns a float in [0, 4] (NaN if no adjacent pair).
    """
    r = as_rows(h, "h")
    s = as_labels(seq_ids, r.n, "seq_ids", device=r.device)
    p = as_labels(positions, r.n, "positions", device=r.device)
    sums, counts = shifted_pair_sums(r.unit, s, p, 1, squared_difference=True, layout=layout, sq=r.unit_sq)
    if counts[0] == 0:
        return math.nan
    return float(sums[0] / counts[0])


def uniformity_loss(
    x: Matrix, t: float = 2.0, max_samples: int | None = 4096, seed: int = 0, chunk_rows: int = 1024
) -> float:
    """Wang–Isola uniformity loss: log of the mean of exp(−t‖u_i − u_j‖²) over distinct pairs of unit vectors.

    u = x/‖x‖ (zero rows stay zero); DESIGN.md fixes t = 2. The mean over unordered distinct pairs equals
    the mean over ordered pairs i ≠ j, which is what is summed here, block by block, so no (n, n) matrix is
    held (unless a `Rows` already holds its Gram matrix, whose entries give the cosines). Lower (more
    negative) is more uniform: 0 when all vectors coincide, and by Jensen never below −t·(2 + 2/(n−1))
    (≈ −4 for t = 2), approached by vectors spread evenly over a high-dimensional sphere.

    Args: x (n, H), n ≥ 2; t > 0; max_samples: seeded subsample size (None = all rows); seed;
    chunk_rows: rows per block. Returns a float ≤ 0.
    """
    if t <= 0:
        raise ValueError(f"t must be > 0; got {t}")
    r = as_rows(x, "x", min_rows=2)
    idx = _subsample(r.n, max_samples, seed)
    if idx is not None:
        r = r.subset(torch.as_tensor(idx, device=r.device))
    n = r.n
    # exp(−t‖u_i − u_j‖²) = w_i w_j exp(2t·cos_ij) with w_i = exp(−t‖u_i‖²) (‖u_i‖² is 1, or 0 for a zero row),
    # cos_ij capped at 1 (rounding can exceed it for near-identical rows, where ‖u_i − u_j‖² ≥ 0 is the bound)
    w = torch.exp(-t * r.unit_sq).to(r.dtype)
    inv = 1 / r.safe_norms
    gram = r.cached_gram()
    u = r.unit if gram is None else None
    total = 0.0
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        if gram is not None:  # cosines from the Gram matrix: x_i·x_j / (‖x_i‖‖x_j‖), 0 for a zero row
            k = gram[start:stop] * inv[start:stop, None]
            k.mul_(inv[None, :] * (2 * t))
        else:
            k = (u[start:stop] @ u.T).mul_(2 * t)
        k = torch.exp_(k.clamp_max_(2 * t))
        k.diagonal(offset=start).zero_()  # drop i == j
        total += float(w[start:stop].to(torch.float64) @ (k @ w).to(torch.float64))
    return math.log(total / (n * (n - 1)))


def mean_norm(x: Matrix) -> float:
    """Mean L2 norm of the rows of x (n, H), in the units of x (e.g. of h, e or g = h − e)."""
    r = as_rows(x, "x")
    return float(r.norms.to(torch.float64).mean())


# --------------------------------------------------------------------------------------- registered metrics

@register("twonn", family="geometry", page="geometry", layers=ALL_LAYERS, unit="dimensions", label="Intrinsic dimension (TwoNN)",
          definition="Facco et al. 2017: from the ratio of second to first neighbour distances (duplicates "
                     "collapsed).")
def twonn(neighbours: Matrix, seed: int) -> float:
    """`twonn_dimension` on all (unique) rows of the probe's fixed neighbour subsample, 10 % of the ratios
    discarded."""
    return twonn_dimension(neighbours, seed=seed, max_samples=None)


@register("uniformity", family="geometry", page="geometry", layers=ALL_LAYERS, unit="log-mean ≤ 0",
          label="Uniformity (Wang–Isola)",
          definition="log mean exp(−2‖u_i − u_j‖²) over distinct pairs of unit vectors.")
def uniformity(neighbours: Matrix) -> float:
    """`uniformity_loss` (t = 2): log mean exp(−2‖u_i − u_j‖²) over all distinct pairs of the probe's fixed
    neighbour subsample."""
    return uniformity_loss(neighbours, max_samples=None)


@register("norm_h", family="geometry", page="geometry", layers=ALL_LAYERS, unit="L2 norm", label="Norm of h",
          definition="Mean L2 norm of the hidden states h_l.")
def norm_h(h: Matrix) -> float:
    """`mean_norm(h)`: mean ‖h_l(i)‖ over content tokens."""
    return mean_norm(h)


@register("norm_e", family="geometry", page="geometry", layers=EMBEDDING_LAYER, unit="L2 norm", label="Norm of e",
          definition="Mean L2 norm of the embedding-layer output e (layer 0).")
def norm_e(e: Matrix) -> float:
    """`mean_norm(e)`: mean ‖e(i)‖ over content tokens (stored at layer 0)."""
    return mean_norm(e)


@register("norm_g", family="geometry", page="geometry", layers=CONTEXT_LAYERS, unit="L2 norm", label="Norm of g",
          definition="Mean L2 norm of the context vectors g_l = h_l − e.")
def norm_g(g: Matrix) -> float:
    """`mean_norm(g)`: mean ‖h_l(i) − e(i)‖ over content tokens (layers ≥ 1)."""
    return mean_norm(g)
