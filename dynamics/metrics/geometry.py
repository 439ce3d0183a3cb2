"""Geometry of one layer's token representations: anisotropy, contextuality (Ethayarajh 2019), rank,
isotropy, intrinsic dimension, alignment/uniformity and norms.

Inputs are (n, H) matrices of content-token vectors of one layer ([CLS]/[SEP]/[PAD] and other special
tokens already removed by the caller; layer 0 is the embedding-layer output). Arithmetic is float64.
"Mean cosine over pairs" is over unordered pairs of distinct tokens, computed from sums of unit vectors
(O(n·H)); a zero vector has cosine 0 with everything. Estimators that need neighbours or all pairwise
distances (TwoNN, uniformity) work on a fixed, seeded subsample when n is large.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ._common import (
    ArrayLike,
    as_labels,
    as_matrix,
    dense_groups,
    eigvalsh,
    group_pair_sums,
    pair_sums,
    shifted_pair_sums,
    unit_rows,
)


def _subsample(n: int, max_samples: int | None, seed: int) -> np.ndarray | None:
    """Sorted row indices of a seeded subsample without replacement, or None to keep all rows."""
    if max_samples is None or n <= max_samples:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))


def anisotropy(x: ArrayLike) -> float:
    """Mean cosine similarity over all unordered pairs of distinct tokens.

    (‖Σ_i u_i‖² − Σ_i ‖u_i‖²) / (n(n − 1)) with u_i = x_i/‖x_i‖: the exact all-pairs mean that "mean
    cosine of random token pairs" estimates, at O(n·H) and without sampling noise.

    Args: x (n, H), n ≥ 2. Returns a float in [−1/(n−1), 1]; ≈ 0 for isotropic data, → 1 when all vectors
    share one direction.
    """
    u = unit_rows(as_matrix(x, "x", min_rows=2))
    s, pairs = pair_sums(u)
    return s / pairs


def _type_groups(x: Tensor, type_ids: ArrayLike) -> tuple[Tensor, Tensor, Tensor]:
    """Rows with type_id ≥ 0, their dense type index, and the occurrence count of each type."""
    t = as_labels(type_ids, x.shape[0], "type_ids", device=x.device)
    keep = t >= 0
    groups, n_types = dense_groups(t[keep])
    counts = torch.bincount(groups, minlength=n_types)
    return x[keep], groups, counts


def self_similarity(x: ArrayLike, type_ids: ArrayLike, adjust: bool = False) -> float:
    """Ethayarajh's self-similarity: mean over word types of the mean pairwise cosine of its occurrences.

    SelfSim(w) = 1/(n_w(n_w − 1)) Σ_{j≠k} cos(x_j, x_k) over the n_w occurrences of w (from sums of unit
    vectors), then the unweighted mean over types with n_w ≥ 2. The adjusted form subtracts the layer's
    anisotropy, `anisotropy(x)` over *all* rows of x (Ethayarajh's baseline: random token pairs).

    Args:
        x: (n, H) all content tokens of one layer.
        type_ids: (n,) word-type id per token, −1 for tokens not counted. The caller decides eligibility
            (DESIGN.md: whole words that are a single wordpiece and occur ≥ 5 times in the probe set).
        adjust: subtract the anisotropy baseline.
    Returns: float (NaN if no type has two occurrences).
    """
    xm = as_matrix(x, "x")
    rows, groups, counts = _type_groups(xm, type_ids)
    sums, pairs = group_pair_sums(unit_rows(rows), groups, counts.numel())
    ok = pairs > 0
    if not bool(ok.any()):
        return math.nan
    value = float((sums[ok] / pairs[ok]).mean())
    return value - anisotropy(xm) if adjust else value


def intra_sentence_similarity(x: ArrayLike, seq_ids: ArrayLike, adjust: bool = False) -> float:
    """Ethayarajh's intra-sentence similarity: mean cosine between each token and its sentence's mean vector.

    IntraSim(s) = 1/n_s Σ_{i∈s} cos(x_i, m_s) with m_s = 1/n_s Σ_{i∈s} x_i (the mean of the raw vectors),
    then the unweighted mean over sequences with ≥ 2 tokens (a one-token sentence gives 1 trivially). Here
    a "sentence" is whatever `seq_ids` groups — in the probe, one block. The adjusted form subtracts
    `anisotropy(x)`.

    Args: x (n, H); seq_ids (n,); adjust. Returns a float (NaN if no sequence has two tokens).
    """
    xm = as_matrix(x, "x")
    s = as_labels(seq_ids, xm.shape[0], "seq_ids", device=xm.device)
    groups, n_groups = dense_groups(s)
    counts = torch.bincount(groups, minlength=n_groups).to(xm.dtype)
    means = torch.zeros(n_groups, xm.shape[1], dtype=xm.dtype, device=xm.device).index_add_(0, groups, xm)
    cos = (unit_rows(xm) * unit_rows(means)[groups]).sum(1)  # the 1/n_s scale does not change a cosine
    per_seq = torch.zeros(n_groups, dtype=xm.dtype, device=xm.device).index_add_(0, groups, cos) / counts
    ok = counts >= 2
    if not bool(ok.any()):
        return math.nan
    value = float(per_seq[ok].mean())
    return value - anisotropy(xm) if adjust else value


def explained_variance_pc1(x: ArrayLike, singular_values: Tensor | None = None) -> float:
    """σ₁² / Σ_k σ_k² of the *uncentred* matrix x (n, H): the share of Σ‖x_i‖² along its top direction.

    Used as Ethayarajh's baseline for MEV (the first-component share of random token representations).
    `singular_values`: x's singular values (descending), e.g. from `spectra(x)`, to skip recomputing them.
    Returns a float in [1/min(n, H), 1] (NaN for an all-zero matrix).
    """
    sv = singular_values
    if sv is None:
        sv = _singular_values(as_matrix(x, "x"))
    sv = torch.as_tensor(sv, dtype=torch.float64)
    total = float((sv * sv).sum())
    if total == 0:
        return math.nan
    return float(sv[0] ** 2) / total


def max_explainable_variance(
    x: ArrayLike, type_ids: ArrayLike, adjust: bool = False, baseline: str = "pc1"
) -> float:
    """Ethayarajh's maximum explainable variance, averaged over word types.

    MEV(w) = σ₁² / Σ_k σ_k² for the uncentred (n_w, H) matrix of w's occurrences: how much of the word's
    contextual variation one static vector could explain. Unweighted mean over types with n_w ≥ 2
    (a single occurrence gives 1 trivially). Adjusted form: MEV minus a layer baseline —
    baseline="pc1" (default, as in Ethayarajh 2019 §3.4): `explained_variance_pc1(x)` over all rows of x;
    baseline="anisotropy": `anisotropy(x)`, the baseline DESIGN.md names for all three measures.

    Args: x (n, H); type_ids (n,) with −1 for tokens not counted (see `self_similarity`); adjust; baseline.
    Returns: float in (0, 1] unadjusted (NaN if no type has two occurrences).
    """
    if baseline not in ("pc1", "anisotropy"):
        raise ValueError(f"baseline must be 'pc1' or 'anisotropy'; got {baseline!r}")
    xm = as_matrix(x, "x")
    rows, groups, counts = _type_groups(xm, type_ids)
    values = _type_top_shares(rows, groups, counts)
    if values.numel() == 0:
        return math.nan
    value = float(values.mean())
    if not adjust:
        return value
    return value - (explained_variance_pc1(xm) if baseline == "pc1" else anisotropy(xm))


def _type_top_shares(rows: Tensor, groups: Tensor, counts: Tensor) -> Tensor:
    """σ₁² / Σσ² of each type's occurrence matrix, for the types with ≥ 2 occurrences and a non-zero total.

    σ₁² is the top eigenvalue of the smaller Gram matrix. Types are batched by occurrence count rounded up
    to a power of two: each type's rows are zero-padded to that count, which adds only zero eigenvalues to
    the (c × c) Gram matrix, so one batched eigvalsh serves every type of a bucket. Types with more
    occurrences than dimensions use their (H × H) Gram matrix instead.
    """
    dim = rows.shape[1]
    order = torch.argsort(groups, stable=True)
    rows, groups = rows[order], groups[order]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(rows.shape[0], device=rows.device) - starts[groups]
    totals = torch.zeros(counts.numel(), dtype=rows.dtype, device=rows.device).index_add_(0, groups, (rows * rows).sum(1))
    ok = (counts >= 2) & (totals > 0)
    top = torch.full((counts.numel(),), math.nan, dtype=rows.dtype, device=rows.device)
    cap = torch.ones_like(counts)
    while bool((cap < counts).any()):
        cap = torch.where(cap < counts, cap * 2, cap)
    for size in torch.unique(cap[ok & (counts <= dim)]).tolist():
        types = torch.nonzero(ok & (counts <= dim) & (cap == size)).squeeze(1)
        local = torch.full((counts.numel(),), -1, dtype=torch.int64, device=rows.device)
        local[types] = torch.arange(types.numel(), device=rows.device)
        sel = local[groups] >= 0
        padded = rows.new_zeros(types.numel(), int(size), dim)
        padded[local[groups[sel]], slot[sel]] = rows[sel]
        top[types] = eigvalsh(padded @ padded.transpose(1, 2))[:, -1]
    for t in torch.nonzero(ok & (counts > dim)).squeeze(1).tolist():
        block = rows[int(starts[t]) : int(starts[t] + counts[t])]  # rows are sorted by type
        top[t] = eigvalsh(block.T @ block)[-1]
    return (top / totals)[ok]


def spectra(x: ArrayLike) -> dict[str, Tensor]:
    """Singular values of x (n, H) and of its column-centred form, and the eigenvalues of its sample
    covariance, from one (H × H) Gram matrix XᵀX (the centred one is XᵀX − n·m mᵀ), descending.

    Returns {"singular_values", "singular_values_centred", "covariance_eigenvalues"}, to pass to
    `effective_rank`, `explained_variance_pc1` and `isoscore` so that a layer is decomposed once.
    """
    xm = as_matrix(x, "x")
    n = xm.shape[0]
    if n < xm.shape[1]:
        c = xm - xm.mean(0, keepdim=True)
        sv, svc = _singular_values(xm), _singular_values(c)
        cov = (svc * svc) / max(n - 1, 1)
        return {"singular_values": sv, "singular_values_centred": svc, "covariance_eigenvalues": cov}
    gram = xm.T @ xm
    m = xm.mean(0)
    centred = gram - n * torch.outer(m, m)
    ev = eigvalsh(gram).clamp_min(0).flip(0)
    evc = eigvalsh(centred).clamp_min(0).flip(0)
    return {"singular_values": ev.sqrt(), "singular_values_centred": evc.sqrt(),
            "covariance_eigenvalues": evc / max(n - 1, 1)}


def _singular_values(x: Tensor) -> Tensor:
    """Singular values of x (n, H), descending, via the eigenvalues of the smaller Gram matrix (float64).

    Much cheaper than an SVD for n ≫ H; the lost relative precision of tiny σ does not matter to the
    entropy-type measures here (RankMe adds 1e-7 to every p_k anyway).
    """
    gram = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T
    return eigvalsh(gram).clamp_min(0).sqrt().flip(0)


def effective_rank(x: ArrayLike, center: bool = False, singular_values: Tensor | None = None) -> float:
    """RankMe effective rank (Garrido et al. 2023): exp(−Σ_k p_k log p_k), p_k = σ_k / Σ_j σ_j + 1e-7.

    σ_k are the singular values of the *uncentred* (n, H) matrix (DESIGN.md); `center=True` subtracts the
    column means first (the variant that ignores a shared offset). Ranges from ≈ 1 to min(n, H); equals k
    for a rank-k matrix with equal non-zero singular values (up to the 1e-7 smoothing).

    Args: x (n, H); center; singular_values: those of x (or of centred x when `center`), e.g. from
    `spectra(x)`, to skip recomputing them. Returns a float (NaN for an all-zero matrix).
    """
    if singular_values is None:
        xm = as_matrix(x, "x")
        if center:
            xm = xm - xm.mean(0, keepdim=True)
        s = _singular_values(xm)
    else:
        s = torch.as_tensor(singular_values, dtype=torch.float64)
    if float(s.sum()) == 0:
        return math.nan
    p = s / s.sum() + 1e-7
    return float(torch.exp(-(p * torch.log(p)).sum()))


def isoscore(x: ArrayLike, covariance_eigenvalues: Tensor | None = None) -> float:
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

    Args: x (n_samples, H), n_samples ≥ 2, H ≥ 2; covariance_eigenvalues: those of x's sample covariance,
    e.g. from `spectra(x)`, to skip recomputing them. Returns a float in [0, 1] (NaN if x has no variance).
    """
    xm = as_matrix(x, "x", min_rows=2)
    n = xm.shape[1]
    if n < 2:
        raise ValueError(f"isoscore needs dim >= 2; got shape {tuple(xm.shape)}")
    if covariance_eigenvalues is not None:
        var = torch.as_tensor(covariance_eigenvalues, dtype=torch.float64).clamp_min(0)
        if var.numel() < n:  # fewer samples than dimensions: the remaining eigenvalues are zero
            var = torch.cat([var, var.new_zeros(n - var.numel())])
    else:
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
    x: ArrayLike, discard_fraction: float = 0.1, seed: int = 0, max_samples: int | None = 5000
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
    unique rows.

    Args: x (n, H); discard_fraction in [0, 1); seed; max_samples (None = all unique rows).
    Returns: float; NaN if fewer than 3 unique rows.
    """
    if not 0 <= discard_fraction < 1:
        raise ValueError(f"discard_fraction must be in [0, 1); got {discard_fraction}")
    xm = as_matrix(x, "x").cpu().numpy()
    uniq = np.unique(xm, axis=0)
    idx = _subsample(uniq.shape[0], max_samples, seed)
    pts = uniq if idx is None else uniq[idx]
    if pts.shape[0] < 3:
        return math.nan
    from sklearn.neighbors import NearestNeighbors  # imported here: sklearn takes seconds to import

    # kneighbors() without a query excludes each point itself from its neighbours.
    dist, _ = NearestNeighbors(n_neighbors=2).fit(pts).kneighbors()
    r1, r2 = dist[:, 0], dist[:, 1]
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


def alignment(x: ArrayLike, seq_ids: ArrayLike, positions: ArrayLike) -> float:
    """Wang–Isola alignment with positive pairs by proximity: mean ‖u_i − u_j‖² over adjacent tokens.

    Pairs are tokens of one block at positions p and p + 1 (TACO's notion of a positive; a gap left by a
    removed special token breaks adjacency). u = x/‖x‖; ‖u_i − u_j‖² = 2 − 2cos for non-zero rows.
    Lower is more aligned; 0 when neighbours coincide in direction, 2 for orthogonal neighbours.

    Args: x (n, H); seq_ids (n,); positions (n,) unique within a sequence. Returns a float in [0, 4]
    (NaN if no adjacent pair).
    """
    xm = as_matrix(x, "x")
    s = as_labels(seq_ids, xm.shape[0], "seq_ids", device=xm.device)
    p = as_labels(positions, xm.shape[0], "positions", device=xm.device)
    sums, counts = shifted_pair_sums(unit_rows(xm), s, p, 1, squared_difference=True)
    if counts[0] == 0:
        return math.nan
    return float(sums[0] / counts[0])


def uniformity(
    x: ArrayLike, t: float = 2.0, max_samples: int | None = 4096, seed: int = 0, chunk_rows: int = 1024
) -> float:
    """Wang–Isola uniformity: log of the mean of exp(−t‖u_i − u_j‖²) over distinct pairs of unit vectors.

    u = x/‖x‖ (zero rows stay zero); DESIGN.md fixes t = 2. The mean over unordered distinct pairs equals
    the mean over ordered pairs i ≠ j, which is what is summed here, block by block, so no (n, n) matrix is
    held. Lower (more negative) is more uniform: 0 when all vectors coincide, and by Jensen never below
    −t·(2 + 2/(n−1)) (≈ −4 for t = 2), approached by vectors spread evenly over a high-dimensional sphere.

    Args: x (n, H), n ≥ 2; t > 0; max_samples: seeded subsample size (None = all rows); seed;
    chunk_rows: rows per block. Returns a float ≤ 0.
    """
    if t <= 0:
        raise ValueError(f"t must be > 0; got {t}")
    xm = as_matrix(x, "x", min_rows=2)
    idx = _subsample(xm.shape[0], max_samples, seed)
    u = unit_rows(xm if idx is None else xm[torch.as_tensor(idx, device=xm.device)])
    n = u.shape[0]
    sq = (u * u).sum(1)
    total = 0.0
    for start in range(0, n, chunk_rows):
        block = u[start : start + chunk_rows]
        d2 = (sq[start : start + chunk_rows, None] + sq[None, :] - 2 * block @ u.T).clamp_min(0)
        k = torch.exp(-t * d2)
        k.diagonal(offset=start).zero_()  # drop i == j
        total += float(k.sum())
    return math.log(total / (n * (n - 1)))


def mean_norm(x: ArrayLike) -> float:
    """Mean L2 norm of the rows of x (n, H), in the units of x (e.g. of h, e or g = h − e)."""
    xm = as_matrix(x, "x")
    return float(torch.linalg.vector_norm(xm, dim=1).mean())
