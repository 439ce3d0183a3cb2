"""2-D PCA projections (`dynamics.metrics.projection`): against numpy's eigendecomposition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynamics.metrics.projection import pca2, top_eigenvectors


def test_top_eigenvectors_match_eigh_including_a_degenerate_pair() -> None:
    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.standard_normal((12, 12)))[0]
    for spectrum in (np.linspace(1, 10, 12), np.r_[np.ones(10), 5.0, 5.0]):
        a = torch.from_numpy(q @ np.diag(spectrum) @ q.T)
        vals, vecs = top_eigenvectors(a, 2)
        np.testing.assert_allclose(vals.numpy(), np.sort(spectrum), atol=1e-10)
        ref_vals, ref_vecs = np.linalg.eigh(a.numpy())
        top = ref_vecs[:, -2:]  # the span of the top two eigenvectors
        proj = top @ top.T
        np.testing.assert_allclose(proj @ vecs.numpy(), vecs.numpy(), atol=1e-8)
        np.testing.assert_allclose(vecs.numpy().T @ vecs.numpy(), np.eye(2), atol=1e-10)
        rayleigh = np.diag(vecs.numpy().T @ a.numpy() @ vecs.numpy())
        np.testing.assert_allclose(rayleigh, ref_vals[-2:][::-1], atol=1e-8)


def test_pca2_projects_on_the_two_largest_axes_with_positive_skew() -> None:
    rng = np.random.default_rng(1)
    n = 400
    x = np.zeros((n, 5))
    x[:, 2] = rng.exponential(3.0, n)  # the largest variance, right-skewed
    x[:, 4] = -rng.exponential(1.5, n)  # the second, left-skewed: its axis must flip
    x[:, [0, 1, 3]] = 0.1 * rng.standard_normal((n, 3))
    xy, ratio = pca2(torch.from_numpy(x).float())
    c = x - x.mean(0)
    vals = np.linalg.eigvalsh(c.T @ c)
    np.testing.assert_allclose(ratio, vals[::-1][:2] / vals.sum(), rtol=1e-5)
    assert xy.shape == (n, 2) and xy.dtype == np.float32
    assert np.corrcoef(xy[:, 0], x[:, 2])[0, 1] > 0.99 and np.corrcoef(xy[:, 1], x[:, 4])[0, 1] < -0.99
    assert ((xy - xy.mean(0)) ** 3).sum(0).min() > 0  # the sign convention


def test_pca2_pads_a_one_dimensional_input() -> None:
    xy, ratio = pca2(torch.arange(6, dtype=torch.float32)[:, None])
    assert xy.shape == (6, 2) and ratio[0] == pytest.approx(1.0) and ratio[1] == 0 and (xy[:, 1] == 0).all()
