"""Linear CKA (debiased and biased) against Gram-matrix and U-statistic formulations."""

import itertools
import math

import numpy as np
import pytest
import torch

from dynamics.metrics.checks import ArrayLike, as_matrix
from dynamics.metrics.cka import cka_matrix, linear_cka


def hsic_unbiased(k: ArrayLike, l: ArrayLike) -> float:  # noqa: E741 - L is the paper's name
    """Unbiased HSIC estimator HSIC₁(K, L) (Song et al. 2012) from two (n, n) kernel matrices, n ≥ 4.

    The diagonals of K and L are ignored (set to 0), as the estimator prescribes.
    """
    km, lm = as_matrix(k, "k", min_rows=4), as_matrix(l, "l", min_rows=4)
    n = km.shape[0]
    if km.shape != (n, n) or lm.shape != (n, n):
        raise ValueError(f"k and l must both be square (n, n); got {tuple(km.shape)} and {tuple(lm.shape)}")
    lm = lm.to(km.device)
    kt = km - torch.diag(torch.diagonal(km))
    lt = lm - torch.diag(torch.diagonal(lm))
    ones = torch.ones(n, dtype=km.dtype, device=km.device)
    term1 = (kt * lt).sum()  # tr(K̃L̃) for symmetric kernels
    term2 = (ones @ kt @ ones) * (ones @ lt @ ones) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (ones @ kt @ (lt @ ones))
    return float((term1 + term2 - term3) / (n * (n - 3)))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _orthogonal(d, seed):
    return torch.linalg.qr(torch.randn(d, d, generator=_gen(seed), dtype=torch.float64))[0]


def test_cka_is_one_under_orthogonal_transform_scaling_and_shift():
    x = torch.randn(300, 20, generator=_gen(), dtype=torch.float64)
    y = -2.5 * x @ _orthogonal(20, 1) + 7.0
    assert linear_cka(x, y) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, y, debiased=False) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_debiased_cka_of_independent_matrices_is_near_zero_while_biased_is_inflated():
    x = torch.randn(500, 50, generator=_gen(2))
    y = torch.randn(500, 50, generator=_gen(3))
    assert abs(linear_cka(x, y)) < 0.02
    assert linear_cka(x, y, debiased=False) > 0.05


def test_hsic_unbiased_equals_the_u_statistic():
    # HSIC₁ = mean k_ij l_ij + mean k_ij l_qr − 2 mean k_ij l_iq over distinct index tuples (Song et al. 2012).
    n = 7
    x = torch.randn(n, 3, generator=_gen(4), dtype=torch.float64)
    y = torch.randn(n, 2, generator=_gen(5), dtype=torch.float64) + x[:, :2]
    k, l = x @ x.T, y @ y.T  # noqa: E741
    perms = itertools.permutations
    a = np.mean([k[i, j] * l[i, j] for i, j in perms(range(n), 2)])
    b = np.mean([k[i, j] * l[q, r] for i, j, q, r in perms(range(n), 4)])
    c = np.mean([k[i, j] * l[i, q] for i, j, q in perms(range(n), 3)])
    assert hsic_unbiased(k, l) == pytest.approx(float(a + b - 2 * c), rel=1e-12)


def _gram_cka(x, y, debiased):
    x, y = x.double(), y.double()
    n = x.shape[0]
    if debiased:
        k, l = x @ x.T, y @ y.T  # noqa: E741
        return hsic_unbiased(k, l) / math.sqrt(hsic_unbiased(k, k) * hsic_unbiased(l, l))
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    kc, lc = h @ x @ x.T @ h, h @ y @ y.T @ h
    return ((kc * lc).sum() / (kc.norm() * lc.norm())).item()


@pytest.mark.parametrize("shape", [(60, 8, 5), (12, 40, 30)])  # feature-space and Gram paths
def test_feature_space_cka_matches_gram_formulation(shape):
    n, p, q = shape
    x = torch.randn(n, p, generator=_gen(6))
    y = x[:, :q] @ torch.randn(q, q, generator=_gen(7)) + 0.8 * torch.randn(n, q, generator=_gen(8)) + 3.0
    for debiased in (True, False):
        assert linear_cka(x, y, debiased=debiased) == pytest.approx(_gram_cka(x, y, debiased), rel=1e-9)


def test_cka_matrix_is_symmetric_with_unit_diagonal_and_matches_pairs():
    base = torch.randn(80, 6, generator=_gen(9))
    xs = [
        base,
        base @ torch.randn(6, 10, generator=_gen(10)),
        torch.randn(80, 4, generator=_gen(11)),
        base * 3,
    ]
    for debiased in (True, False):
        m = cka_matrix(xs, debiased=debiased)
        assert m.shape == (4, 4)
        np.testing.assert_allclose(m, m.T)
        np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-12)
        for i, j in itertools.combinations(range(4), 2):
            assert m[i, j] == pytest.approx(linear_cka(xs[i], xs[j], debiased=debiased), abs=1e-12)
        assert m[0, 3] == pytest.approx(1.0)


def test_constant_representation_gives_nan():
    x = torch.randn(10, 3, generator=_gen(12))
    assert math.isnan(linear_cka(x, torch.ones(10, 4)))
    assert np.isnan(cka_matrix([x, torch.ones(10, 4)])[1]).all()


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="same number of rows"):
        linear_cka(torch.randn(10, 3), torch.randn(9, 3))
    with pytest.raises(ValueError, match="at least 4 tokens"):
        linear_cka(torch.randn(3, 3), torch.randn(3, 3))
    with pytest.raises(ValueError, match="must be 2-D"):
        linear_cka(torch.randn(10), torch.randn(10, 3))
    with pytest.raises(ValueError, match="same number of rows"):
        cka_matrix([torch.randn(10, 3), torch.randn(8, 3)])
    with pytest.raises(ValueError, match="square"):
        hsic_unbiased(torch.randn(5, 4), torch.randn(5, 5))
    with pytest.raises(ValueError, match="at least one"):
        cka_matrix([])
