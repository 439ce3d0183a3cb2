"""Rogue-dimension metrics on matrices whose answer is known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynamics.metrics.geometry import anisotropy
from dynamics.metrics.rogue import (
    anisotropy_standardised,
    dimension_contributions,
    ln_outlier_persistence,
    outlier_dimensions,
    rogue_shares,
)
from dynamics.metrics.rows import Rows


def _balanced(n: int) -> torch.Tensor:
    """Rows (1, s_i), s_i = ±1 in equal numbers: u = (1, s_i)/√2."""
    s = torch.tensor([1.0, -1.0] * (n // 2), dtype=torch.float64)
    return torch.stack([torch.ones(n, dtype=torch.float64), s], 1)


@pytest.mark.parametrize("n", [4, 10, 50])
def test_contributions_of_a_shared_and_a_balanced_dimension(n: int) -> None:
    # dimension 0: u_i0 u_j0 = 1/2 for every pair; dimension 1: Σ_{i<j} s_i s_j = −n/2 over n(n−1)/2 pairs
    c = dimension_contributions(_balanced(n))
    assert float(c[0]) == pytest.approx(0.5, rel=1e-12)
    assert float(c[1]) == pytest.approx(-1 / (2 * (n - 1)), rel=1e-12)
    assert float(c.sum()) == pytest.approx(anisotropy(_balanced(n)), rel=1e-12)
    shares = rogue_shares(_balanced(n))
    assert shares["rogue_top1_share"] == pytest.approx((n - 1) / (n - 2), rel=1e-12)  # > 1: the other is negative
    assert shares["rogue_top3_share"] == pytest.approx(1.0, rel=1e-12)  # all (both) dimensions


def test_one_rogue_dimension_carries_the_anisotropy_and_float32_rows_agree() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 64, generator=g, dtype=torch.float64)
    x[:, 7] += 20.0  # one dimension with a large shared value
    shares = rogue_shares(x)
    share = shares["rogue_top1_share"]
    assert share > 0.95
    assert shares["rogue_top3_share"] >= share
    assert rogue_shares(Rows(x.float(), torch.float32)) == pytest.approx(shares, rel=1e-5)
    # no positive mean cosine to apportion: undefined
    assert rogue_shares(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)) == {
        "rogue_top1_share": None, "rogue_top3_share": None}


def test_standardising_removes_per_dimension_scale_and_offset() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 16, generator=g, dtype=torch.float64) + torch.randn(500, 1, generator=g, dtype=torch.float64)
    scale = torch.linspace(0.1, 30, 16, dtype=torch.float64)
    offset = torch.linspace(-50, 50, 16, dtype=torch.float64)
    base = anisotropy_standardised(x)
    assert anisotropy_standardised(x * scale + offset) == pytest.approx(base, rel=1e-9)
    assert anisotropy(x * scale + offset) > base + 0.1  # the raw anisotropy is dominated by the offsets
    z = (x - x.mean(0)) / x.std(0, unbiased=False)
    assert base == pytest.approx(anisotropy(z), rel=1e-12)
    const = torch.cat([x, torch.full((500, 1), 3.0, dtype=torch.float64)], 1)  # a dimension without variance
    assert anisotropy_standardised(const) == pytest.approx(base, rel=1e-12) and not math.isnan(base)


def test_outliers_use_the_population_std_of_gamma() -> None:
    """γ₀ is 3.03 population standard deviations from the mean but only 2.90 sample ones: an outlier by the
    documented rule (population std over the H dimensions), not by the sample std."""
    w = np.zeros(12)
    w[0], w[1] = 10.0, -4.7
    assert abs(w[0] - w.mean()) / w.std() > 3 > abs(w[0] - w.mean()) / w.std(ddof=1)
    assert outlier_dimensions(w).tolist() == [True] + [False] * 11
    assert not outlier_dimensions(np.ones(8)).any()  # no spread, no outliers


def test_persistence_is_the_share_of_the_final_outliers_already_present() -> None:
    """|O_k ∩ O_last| / |O_last|: an early outlier that does not last does not count, nor does it enlarge the
    denominator."""
    masks = np.zeros((3, 10), dtype=bool)
    masks[0, [0, 5, 6]] = True  # one of the two final outliers, plus two that go away
    masks[2, [0, 1]] = True
    assert ln_outlier_persistence(masks) == {0: 0.5, 1: 0.0, 2: 1.0}
    assert ln_outlier_persistence(masks[:, 2:4]) == {0: None, 1: None, 2: None}  # the last snapshot has none
