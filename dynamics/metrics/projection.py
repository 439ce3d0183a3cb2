"""2-D projections of token representations (PCA), for the app's token explorer and the report's figures.

Not a stored metric: the projections are arrays (`projection` in the results store), computed on the probe's
fixed projection sample.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .blas import gram_matrix, single_thread
from .rows import sum_rows


def pca2(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Project (n, H) onto its first two principal axes → ((n, 2) float32, (2,) explained-variance ratios).

    The covariance is formed in x's dtype around the float64 mean and decomposed in float64; the ratios divide
    the top two eigenvalues by the sum of all of them. Signs are fixed so that each axis's projections have
    positive skew (a deterministic convention)."""
    c = x - (sum_rows(x) / max(1, x.shape[0])).to(x.dtype)
    cov = gram_matrix(c).to(torch.float64)
    vals, top = top_eigenvectors(cov, 2)
    top = top.to(x.dtype)
    xy = c @ top
    sign = torch.sign((xy.double() ** 3).sum(0))
    sign[sign == 0] = 1
    xy = xy * sign.to(xy.dtype)
    total = float(vals.clamp_min(0).sum())
    ratio = (vals[-2:].flip(0).clamp_min(0) / total).cpu().numpy() if total > 0 else np.zeros(2)
    if ratio.size < 2:
        ratio = np.pad(ratio, (0, 2 - ratio.size))
    if xy.shape[1] < 2:
        xy = torch.nn.functional.pad(xy, (0, 2 - xy.shape[1]))
    return xy.float().cpu().numpy(), np.asarray(ratio, dtype=np.float64)


def top_eigenvectors(a: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All eigenvalues (ascending) of the symmetric float64 matrix `a` and the eigenvectors of its k largest
    (columns, largest first): eigenvalues by LAPACK, the vectors by two steps of inverse iteration shifted just
    past each eigenvalue and a Rayleigh–Ritz step on their span (which also sorts out a degenerate pair); the
    full decomposition where a shifted factorisation fails. About twice as fast as `eigh` for k ≪ H."""
    with single_thread():  # a small (H × H) problem: threads only add overhead
        vals = torch.linalg.eigvalsh(a)
        n = a.shape[0]
        k = min(k, n)
        scale = float(vals.abs().max()) if n else 0.0
        eye = torch.eye(n, dtype=a.dtype, device=a.device)
        start = torch.ones(n, 1, dtype=a.dtype, device=a.device) / math.sqrt(max(n, 1))
        vecs = []
        for j in range(1, k + 1):
            lu, piv, info = torch.linalg.lu_factor_ex(a - (vals[-j] + 1e-10 * scale) * eye)
            if int(info) != 0:
                break
            v = start + 1e-3 * torch.arange(n, dtype=a.dtype, device=a.device)[:, None] / max(n, 1)
            for _ in range(2):
                v = torch.linalg.lu_solve(lu, piv, v)
                v = v / torch.linalg.vector_norm(v).clamp_min(1e-300)
            vecs.append(v)
        if len(vecs) < k or not all(bool(torch.isfinite(v).all()) for v in vecs):
            return vals, torch.linalg.eigh(a)[1][:, -k:].flip(1)
        q = torch.linalg.qr(torch.cat(vecs, 1))[0]
        w, rot = torch.linalg.eigh(q.T @ a @ q)
        return vals, (q @ rot).flip(1)
