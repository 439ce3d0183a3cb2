"""Rogue dimensions (Timkey & van Schijndel, EMNLP 2021, "All bark and no bite"): how much of a layer's
anisotropy a few dimensions carry, and what is left of it once every dimension is standardised.

With unit rows u_i = x_i/‖x_i‖, the mean cosine over the n(n − 1)/2 unordered pairs of distinct tokens (the
layer's `anisotropy`) is a sum over dimensions, Σ_d C_d, with each dimension's contribution

    C_d = ((Σ_i u_id)² − Σ_i u_id²) / (n(n − 1)),

the mean of u_id·u_jd over the pairs. A rogue dimension is one whose C_d is a large share of the sum.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .geometry import Matrix, centred_gram
from .registry import ALL_LAYERS, register
from .rows import as_rows, chunk_rows, unit_rows


def dimension_contributions(h: Matrix) -> Tensor:
    """(H,) float64 C_d, each dimension's contribution to the mean pairwise cosine (module docstring); they sum
    to `anisotropy(h)`. Args: h (n, H), n ≥ 2."""
    r = as_rows(h, "h", min_rows=2)
    sums = r.unit_column_sums
    squares = _column_squares(r.unit)
    return (sums * sums - squares) / (r.n * (r.n - 1))


def _column_squares(x: Tensor) -> Tensor:
    """(H,) float64 Σ_i x_id², a chunk of rows at a time in float64 (no float64 copy of x)."""
    squares = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    step = chunk_rows(x.shape[1])
    for start in range(0, x.shape[0], step):
        chunk = x[start : start + step].to(torch.float64)
        squares += (chunk * chunk).sum(0)
    return squares


def _top_share(c: Tensor, k: int) -> float | None:
    total = float(c.sum())
    if total <= 0:
        return None  # no positive anisotropy to apportion
    return float(torch.topk(c, min(k, c.numel())).values.sum()) / total


@register("rogue_top1_share", family="geometry", page="geometry", layers=ALL_LAYERS,
          unit="share (> 1 when others are negative)", label="Anisotropy share of the top dimension",
          definition="Largest per-dimension contribution C_d to the mean pairwise cosine, over their sum "
                     "(Timkey & van Schijndel 2021); undefined when the mean cosine is ≤ 0.")
@register("rogue_top3_share", family="geometry", page="geometry", layers=ALL_LAYERS,
          unit="share (> 1 when others are negative)", label="Anisotropy share of the top 3 dimensions",
          definition="Sum of the 3 largest per-dimension contributions C_d to the mean pairwise cosine, over their "
                     "sum; undefined when the mean cosine is ≤ 0.")
def rogue_shares(h: Matrix) -> dict[str, float | None]:
    """The shares of the layer's mean pairwise cosine carried by its most contributing dimensions, from one set of
    contributions C_d (`dimension_contributions`, module docstring):

        rogue_top1_share = max_d C_d / Σ_d C_d,   rogue_top3_share = (sum of the 3 largest C_d) / Σ_d C_d;

    None when Σ_d C_d ≤ 0 (no positive anisotropy to apportion)."""
    c = dimension_contributions(h)
    return {"rogue_top1_share": _top_share(c, 1), "rogue_top3_share": _top_share(c, 3)}


@register("anisotropy_standardised", family="geometry", page="geometry", layers=ALL_LAYERS, unit="cosine in [−1, 1]",
          label="Anisotropy after standardising dimensions",
          definition="Mean pairwise cosine after z-scoring every dimension over the probe tokens (a dimension "
                     "with no variance set to 0): what is left once no dimension dominates.")
def anisotropy_standardised(h: Matrix) -> float:
    """`anisotropy` of z_i = (x_i − μ) / σ, μ and σ the per-dimension mean and (population) standard deviation
    over the n tokens; a dimension with σ = 0 becomes 0. Args: h (n, H), n ≥ 2.

    σ² is the diagonal of the centred Gram matrix the spectra decompose (`centred_gram`, float64); z and its unit
    rows are formed a chunk of rows at a time in the rows' dtype, their sum accumulated in float64, so no (n, H)
    temporary is made."""
    r = as_rows(h, "h", min_rows=2)
    mean = r.column_sums / r.n
    std = (torch.diagonal(centred_gram(r)) / r.n).sqrt()
    scale = torch.where(std > 0, 1 / std, torch.zeros_like(std))
    m, s = mean.to(r.dtype), scale.to(r.dtype)
    total = torch.zeros(r.dim, dtype=torch.float64, device=r.device)
    nonzero = 0  # Σ‖u_i‖²: 1 per non-zero row
    step = chunk_rows(r.dim)
    for start in range(0, r.n, step):
        u = unit_rows((r.x[start : start + step] - m).mul_(s))
        nonzero += int(u.any(1).sum())
        total += u.sum(0).double()
    return (float(total @ total) - nonzero) / (r.n * (r.n - 1))  # as `anisotropy`: pair sum / pairs


# ---------------------------------------------------------------------------- LayerNorm outlier dimensions
# Kovaleva et al. (Findings of ACL 2021, "BERT Busters"): a few dimensions of the LayerNorm scale vectors γ are far
# from the rest in every layer, and they line up with the rogue dimensions of the hidden states. Layer l's γ is
# the last norm inside transformer block l − 1 (layer 0: the embedding block's), `dynamics.measure.extract.layer_norm_weights`.

OUTLIER_STD = 3.0


def outlier_dimensions(weight: Tensor | np.ndarray) -> np.ndarray:
    """(H,) bool: |γ_d − mean(γ)| > 3·std(γ), population std over the H dimensions, in float64 (none when std = 0)."""
    w = np.asarray(torch.as_tensor(weight).detach().cpu().numpy(), dtype=np.float64)
    if w.ndim != 1 or w.size < 2 or not np.isfinite(w).all():
        raise ValueError(f"a LayerNorm weight must be a finite (H,) vector with H ≥ 2; got shape {w.shape}")
    std = w.std()
    return np.abs(w - w.mean()) > OUTLIER_STD * std if std > 0 else np.zeros(w.size, dtype=bool)


@register("ln_outlier_dims", family="geometry", page="geometry", layers=ALL_LAYERS, unit="dimensions",
          label="LayerNorm outlier dimensions",
          definition="Number of dimensions whose LayerNorm scale γ_d is more than 3 standard deviations from the "
                     "mean of γ (Kovaleva et al. 2021); layer l's norm is the last one inside block l − 1.")
def ln_outlier_dims(norm_weight: Tensor) -> float:
    """#{d : |γ_d − mean γ| > 3·std γ} (`outlier_dimensions`) of the layer's norm."""
    return float(outlier_dimensions(norm_weight).sum())


@register("ln_outlier_persistence", family="ln_outliers", page="geometry", layers=ALL_LAYERS, scope="series",
          unit="fraction in [0, 1]", label="LayerNorm outliers already in place",
          definition="Share of the last measured snapshot's LayerNorm outlier dimensions of a layer that are outlier "
                     "dimensions at this snapshot already.")
def ln_outlier_persistence(outlier_masks: np.ndarray) -> dict[int, float | None]:
    """Per snapshot k: |O_k ∩ O_last| / |O_last| with O the outlier dimensions (`outlier_dimensions`); None for every
    snapshot when the last has none. Args: outlier_masks (S, H) bool, one row per measured snapshot in step order."""
    masks = np.asarray(outlier_masks, dtype=bool)
    final = masks[-1]
    if not final.any():
        return {k: None for k in range(masks.shape[0])}
    return {k: float((m & final).sum() / final.sum()) for k, m in enumerate(masks)}
