"""Linear centred kernel alignment (CKA) between two representations of the same tokens.

CKA(X, Y) = HSIC(K, L) / √(HSIC(K, K) · HSIC(L, L)) with linear kernels K = XXᵀ, L = YYᵀ over the n
tokens (rows of X (n, p) and Y (n, q) must be the same tokens in the same order: DESIGN.md compares a
layer across snapshots, or layers within a snapshot, on identical probe tokens).

- debiased (default, DESIGN.md): HSIC is the unbiased estimator of Song et al. (2012), as used for
  debiased CKA by Nguyen et al. (2021); with K̃, L̃ the kernels with their diagonals set to 0,
      HSIC₁(K, L) = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3)).
  Its expectation is 0 for independent representations, where the biased CKA is inflated by
  ≈ (p, q)/n terms; it can be slightly negative and needs n ≥ 4.
- biased: with column-centred X, Y: ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) (Kornblith et al. 2019).

Both are computed in feature space (p×q cross products, O(n·p·q)), so no n×n matrix is needed; the
n×n form of HSIC₁ is the reference the tests compare against (tests/unit/test_metrics_cka.py). Arithmetic is float64; with
`dtype=torch.float32` (the probe) only the cross products of the centred matrices are float32 matrix
products (half the cost; the Frobenius sums, means and the HSIC terms stay float64, which keeps CKA within
~1e-8 of the float64 value on the probe's samples).
Both are invariant to orthogonal transforms and isotropic scaling of either side and to adding a
constant vector to all rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .checks import ArrayLike, as_matrix
from .registry import ALL_LAYERS, CONTEXT_LAYERS, register


@dataclass
class _Prepared:
    """A centred representation and the per-matrix parts of HSIC₁ that do not depend on the partner."""

    x: Tensor  # (n, p) column-centred
    xc: Tensor  # x in the dtype of the cross products
    diag: Tensor  # (n,) K_ii = ‖x_i‖²
    row_sums: Tensor  # (n,) (K̃1)_i = x_i · Σ_j x_j − ‖x_i‖²
    total: float  # 1ᵀK̃1


def _prepare(x: ArrayLike, name: str, dtype: torch.dtype = torch.float64) -> _Prepared:
    xm = as_matrix(x, name, min_rows=2)
    xc = xm - xm.mean(0, keepdim=True)  # HSIC is shift-invariant; centring keeps the products well scaled
    diag = (xc * xc).sum(1)
    row_sums = xc @ xc.sum(0) - diag
    return _Prepared(xc, xc.to(dtype), diag, row_sums, float(row_sums.sum()))


def _cross_frobenius(a: Tensor, b: Tensor) -> float:
    """tr(KL) = ‖AᵀB‖²_F = Σ_ij (AAᵀ)_ij (BBᵀ)_ij, by whichever side is cheaper (products in the inputs'
    dtype, the sum in float64)."""
    n, p = a.shape
    q = b.shape[1]
    if n * (p + q) < p * q:  # few tokens, wide features: the (n, n) Grams are smaller
        return float(((a @ a.T).double() * (b @ b.T).double()).sum())
    return float((a.T @ b).double().pow(2).sum())


def _hsic(a: _Prepared, b: _Prepared, cross: float, debiased: bool) -> float:
    n = a.x.shape[0]
    if not debiased:
        return cross  # ‖YᵀX‖²_F on centred data; the 1/(n−1)² factors cancel in CKA
    tr = cross - float((a.diag * b.diag).sum())
    return (tr + a.total * b.total / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(a.row_sums @ b.row_sums)) / (
        n * (n - 3)
    )


def _cka(a: _Prepared, b: _Prepared, cross: float, self_a: float, self_b: float, debiased: bool) -> float:
    """CKA from the cross term ‖AᵀB‖²_F (`_cross_frobenius`) and both self-HSIC values."""
    denom = self_a * self_b
    if not denom > 0:
        return math.nan  # a constant representation (or a degenerate debiased estimate)
    return _hsic(a, b, cross, debiased) / math.sqrt(denom)


def _check_pair(a: _Prepared, b: _Prepared, debiased: bool) -> None:
    if a.x.shape[0] != b.x.shape[0]:
        raise ValueError(
            f"x and y must have the same number of rows (tokens); got {a.x.shape[0]} and {b.x.shape[0]}"
        )
    if debiased and a.x.shape[0] < 4:
        raise ValueError(f"debiased CKA needs at least 4 tokens; got {a.x.shape[0]}")


def linear_cka(x: ArrayLike, y: ArrayLike, debiased: bool = True, dtype: torch.dtype = torch.float64) -> float:
    """Linear CKA between two representations of the same n tokens (the off-diagonal entry of `cka_matrices`).

    Args:
        x: (n, p), y: (n, q); row i of both is the same token.
        debiased: True for the unbiased-HSIC (debiased) CKA, False for the biased feature-space form.
        dtype: of the cross products (see the module docstring).
    Returns: float; 1 for x = y·Q·c (Q orthogonal, c ≠ 0, plus any shift); ≈ 0 (debiased) for independent
    representations; NaN if either side is constant.
    """
    form = "debiased" if debiased else "biased"
    xt = torch.as_tensor(x)
    return float(cka_matrices([xt, torch.as_tensor(y).to(xt.device)], dtype, forms=(form,))[form][0, 1])


def cka_matrix(xs: Sequence[ArrayLike], debiased: bool = True, dtype: torch.dtype = torch.float64) -> np.ndarray:
    """Pairwise linear CKA of k representations of the same n tokens (layers, or snapshots of a layer).

    Args: xs: k matrices (n, p_i), same n and token order; debiased as in `linear_cka`; dtype of the cross
    products. Returns: (k, k) float64 symmetric array with 1 on the diagonal (NaN rows for a constant input).
    """
    form = "debiased" if debiased else "biased"
    return cka_matrices(xs, dtype, forms=(form,))[form]


def cka_matrices(xs: Sequence[ArrayLike], dtype: torch.dtype = torch.float64,
                 forms: Sequence[str] = ("debiased", "biased")) -> dict[str, np.ndarray]:
    """`cka_matrix` in each of `forms` ("debiased", "biased"), from one set of cross products ‖X_iᵀX_j‖²_F."""
    if len(xs) == 0:
        raise ValueError("cka_matrix needs at least one matrix")
    prepared = [_prepare(x, f"xs[{i}]", dtype) for i, x in enumerate(xs)]
    for i, p in enumerate(prepared[1:], start=1):
        if p.x.shape[0] != prepared[0].x.shape[0]:
            raise ValueError(
                f"all matrices need the same number of rows; xs[0] has {prepared[0].x.shape[0]}, "
                f"xs[{i}] has {p.x.shape[0]}"
            )
    if any(f not in ("debiased", "biased") for f in forms):
        raise ValueError(f"forms must be 'debiased' and/or 'biased'; got {list(forms)}")
    k = len(prepared)
    cross = np.zeros((k, k))
    for i in range(k):
        for j in range(i, k):
            cross[i, j] = cross[j, i] = _cross_frobenius(prepared[i].xc, prepared[j].xc)
    out = {}
    for form in forms:
        debiased = form == "debiased"
        _check_pair(prepared[0], prepared[0], debiased)
        selfs = [_hsic(p, p, cross[i, i], debiased) for i, p in enumerate(prepared)]
        m = np.eye(k)
        for i in range(k):
            if not selfs[i] > 0:
                m[i, :] = m[:, i] = np.nan
            for j in range(i + 1, k):
                m[i, j] = m[j, i] = _cka(prepared[i], prepared[j], cross[i, j], selfs[i], selfs[j], debiased)
        out[form] = m
    return out


# --------------------------------------------------------------------------------------- registered metrics

def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(float(value)) else None


@register("cka_prev_layer", family="geometry", scope="layer_pair", page="cka", layers=CONTEXT_LAYERS, unit="CKA in [0, 1]",
          label="CKA with the previous layer", definition="Debiased linear CKA between layer l and layer l − 1.")
def cka_prev_layer(cka_layers: np.ndarray, layer: int) -> float | None:
    """Debiased linear CKA of layer l with layer l − 1 on the snapshot's fixed CKA token sample: entry
    [l, l − 1] of the layer × layer `cka_matrix(samples, debiased=True)` that is stored as the `cka_layers`
    array (None where a layer is constant)."""
    return _finite(cka_layers[layer, layer - 1])


@register("cka_prev_snapshot", family="cka_steps", scope="series", page="cka", layers=ALL_LAYERS, unit="CKA in [0, 1]",
          label="CKA with the previous snapshot",
          definition="Debiased linear CKA of a layer between this snapshot and the previous measured one.")
def cka_prev_snapshot(cka_steps: np.ndarray) -> dict[int, float | None]:
    """Per measured snapshot k ≥ 1 (in step order): debiased linear CKA of the layer's CKA sample at snapshot k
    with the one at snapshot k − 1, entry [k, k − 1] of the step × step `cka_matrices(...)["debiased"]` stored as
    the `cka_steps` array. Returns {k: value}."""
    return {k: _finite(cka_steps[k, k - 1]) for k in range(1, cka_steps.shape[0])}


@register("cka_final", family="cka_steps", scope="series", page="cka", layers=ALL_LAYERS, unit="CKA in [0, 1]",
          label="CKA with the final snapshot",
          definition="Debiased linear CKA of a layer between this snapshot and the last one.")
def cka_final(cka_steps: np.ndarray) -> dict[int, float | None]:
    """Per measured snapshot k: debiased linear CKA of the layer's CKA sample with the last measured snapshot's,
    entry [k, S − 1] of the step × step debiased CKA matrix (1 for the last snapshot itself). Returns {k: value}."""
    last = cka_steps.shape[0] - 1
    return {k: _finite(cka_steps[k, last]) for k in range(cka_steps.shape[0])}
