"""Word acquisition (`dynamics.metrics.acquisition`) on cases whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from dynamics.metrics import acquisition as A

X = np.log10(np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024], dtype=np.float64))
CHANCE = math.log(8192)


def test_token_surprisal_is_minus_log_softmax() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [2.0, 0.0, -1.0, 3.0]], dtype=torch.float32)
    got = A.token_surprisal(logits, torch.tensor([1, 3]))
    assert got.dtype == torch.float64
    assert got[0].item() == pytest.approx(math.log(4), abs=1e-12)  # uniform over 4 tokens
    z = [2.0, 0.0, -1.0, 3.0]
    assert got[1].item() == pytest.approx(math.log(sum(math.exp(v) for v in z)) - 3.0, abs=1e-12)
    with pytest.raises(ValueError):
        A.token_surprisal(logits, torch.tensor([1]))


def test_word_surprisal_means_over_each_types_occurrences() -> None:
    means, counts = A.word_surprisal(np.array([1.0, 3.0, 5.0, 7.0, 9.0]), np.array([0, 0, -1, 2, 0]), 4)
    assert counts.tolist() == [3, 0, 1, 0]
    assert means[0] == pytest.approx(13.0 / 3) and means[2] == 7.0
    assert np.isnan(means[1]) and np.isnan(means[3])


def _expected_aoa(hi: float, lo: float, k: float, x0: float) -> float:
    floor = lo + (hi - lo) / (1 + math.exp(k * (X[-1] - x0)))
    mid = (CHANCE + floor) / 2
    return x0 + math.log((hi - lo) / (mid - lo) - 1) / k  # solve f(x) = mid


@pytest.mark.parametrize(("hi", "lo", "k", "x0"), [(9.0, 3.0, 3.0, 1.5), (8.5, 1.0, 8.0, 2.2), (9.2, 4.0, 1.5, 1.0)])
def test_a_noiseless_sigmoid_is_recovered_with_its_age(hi: float, lo: float, k: float, x0: float) -> None:
    fit = A.fit_curve(X, A.sigmoid(X, hi, lo, k, x0), CHANCE)
    assert fit.status == 0, fit.reason
    assert (fit.hi, fit.lo, fit.k, fit.x0) == pytest.approx((hi, lo, k, x0), rel=1e-6)
    assert fit.aoa == pytest.approx(_expected_aoa(hi, lo, k, x0), abs=1e-6)
    # AoA is where the fitted curve is halfway between chance and its minimum over the measured steps
    floor = A.sigmoid(X[-1:], fit.hi, fit.lo, fit.k, fit.x0)[0]
    assert A.sigmoid(np.array([fit.aoa]), fit.hi, fit.lo, fit.k, fit.x0)[0] == pytest.approx((CHANCE + floor) / 2)


def test_noise_and_a_missing_point_still_fit() -> None:
    y = A.sigmoid(X, 9.0, 3.0, 3.0, 1.5) + np.random.default_rng(0).normal(0, 0.05, X.size)
    y[4] = np.nan
    fit = A.fit_curve(X, y, CHANCE)
    assert fit.status == 0 and abs(fit.aoa - _expected_aoa(9.0, 3.0, 3.0, 1.5)) < 0.1


def test_curves_without_an_age_say_why() -> None:
    assert A.fit_curve(X[:4], A.sigmoid(X[:4], 9, 3, 3, 0.3), CHANCE).reason == "too few points"
    flat = A.fit_curve(X, np.full(X.size, 2.0), CHANCE)  # already far below chance at the first step
    assert flat.status == 3 and np.isnan(flat.aoa)
    rising = A.fit_curve(X, np.linspace(3.0, 8.0, X.size), CHANCE)  # k ≥ 0: a rising curve is fitted flat
    assert np.isnan(rising.aoa) and rising.status in (3, 4)
    early = A.fit_curve(X, A.sigmoid(X, 9.0, 2.0, 4.0, -0.8), CHANCE)  # crossed before step 1
    assert np.isnan(early.aoa) and early.status in (3, 4)
    assert [A.STATUS[i] for i in range(5)] == list(A.STATUS)


def test_the_fit_s_jacobian_is_the_sigmoid_s_derivative() -> None:
    """The analytic Jacobian handed to curve_fit against central differences of `sigmoid` (a wrong sign or factor
    would steer the refinement off the least-squares optimum)."""
    theta = np.array([9.0, 2.5, 3.0, 1.2])
    jac = A._sigmoid_jacobian(X, *theta)
    eps = 1e-6
    for j in range(4):
        up, down = theta.copy(), theta.copy()
        up[j] += eps
        down[j] -= eps
        numeric = (A.sigmoid(X, *up) - A.sigmoid(X, *down)) / (2 * eps)
        np.testing.assert_allclose(jac[:, j], numeric, rtol=1e-6, atol=1e-8)


def test_the_grid_start_recovers_a_sigmoid_on_its_grid_also_beyond_the_measured_steps() -> None:
    """A noiseless curve whose (k, x0) is a grid point — x0 half a decade past the last step, inside the grid's
    x_min − 1 … x_max + 1 — is the grid's start exactly, (lo, hi) from the closed-form normal equations."""
    k = float(A._GRID_K[12])
    x0 = float(np.linspace(X.min() - 1.0, X.max() + 1.0, 61)[55])
    assert x0 > X.max()
    y = A.sigmoid(X, 9.0, 2.0, k, x0)[None, :]
    start = A._grid_start(X, y, np.ones_like(y), np.array([X.min()]), np.array([X.max()]))
    np.testing.assert_allclose(start[0], [9.0, 2.0, k, x0], rtol=1e-9, atol=1e-9)


def test_refinement_leaves_a_bound_it_starts_on_when_the_optimum_is_inside() -> None:
    """Started with lo on its lower bound 0 (and hi on its upper bound), the bounded Levenberg–Marquardt steps
    reach the interior optimum of a noiseless curve: a bound is held only while the gradient pushes against it."""
    y = A.sigmoid(X, 9.0, 2.0, 3.0, 1.5)[None, :]
    lower = np.array([[0.0, 0.0, 0.0, X.min() - 2]])
    upper = np.array([[19.0, 19.0, 100.0, X.max() + 2]])
    got = A._refine(X, y, np.ones_like(y), np.array([[19.0, 0.0, 2.0, 1.2]]), lower, upper)
    np.testing.assert_allclose(got[0], [9.0, 2.0, 3.0, 1.5], rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("case", ["interior", "k at its bound", "lo at its bound"])
def test_the_fit_reaches_scipy_s_bounded_least_squares_optimum(case: str) -> None:
    """The sum of squares of the fit is no larger than scipy's trust-region reflective solver's from the same
    grid start within the same bounds (an independent bounded solver), on noisy curves with and without an
    active bound."""
    from scipy.optimize import least_squares

    rng = np.random.default_rng(7)
    hi, lo, k, x0 = {"interior": (9.0, 3.0, 3.0, 1.5), "k at its bound": (9.0, 3.0, 400.0, 1.37),
                     "lo at its bound": (9.0, -1.0, 2.0, 2.6)}[case]
    y = A.sigmoid(X, hi, lo, k, x0) + rng.normal(0, 0.1, X.size)
    fit = A.fit_curve(X, y, CHANCE)
    top = 2 * max(y.max(), CHANCE) + 1
    lower, upper = [0, 0, 0, X.min() - 2], [top, top, 100, X.max() + 2]
    start = np.clip(A._grid_start(X, y[None], np.ones((1, X.size)), X[:1], X[-1:])[0], lower, upper)
    ref = least_squares(lambda t: A.sigmoid(X, *t) - y, start, bounds=(lower, upper), method="trf",
                        xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=20000)
    ours = float(((A.sigmoid(X, fit.hi, fit.lo, fit.k, fit.x0) - y) ** 2).sum())
    assert ours <= 2 * ref.cost + 1e-9
    if case == "k at its bound":
        assert fit.k == pytest.approx(100.0)
    if case == "lo at its bound":
        assert fit.lo == 0.0


def test_curves_fitted_together_equal_curves_fitted_one_by_one() -> None:
    """fit_curves on a (T, S) batch with gaps (NaN points) gives each row's fit_curve result."""
    rng = np.random.default_rng(4)
    y = np.stack([A.sigmoid(X, 9.0, lo, k, x0) + rng.normal(0, 0.2, X.size)
                  for lo, k, x0 in ((2.0, 3.0, 1.5), (4.0, 6.0, 2.2), (1.0, 1.5, 0.8))])
    y[1, [0, 4]] = np.nan
    together = A.fit_curves(X, y, CHANCE)
    for row, fit in zip(y, together, strict=True):
        alone = A.fit_curve(X, row, CHANCE)
        assert fit.status == alone.status == 0
        np.testing.assert_allclose([fit.hi, fit.lo, fit.k, fit.x0, fit.aoa],
                                   [alone.hi, alone.lo, alone.k, alone.x0, alone.aoa], rtol=1e-9)


def test_spearman_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, 40).astype(float), rng.normal(size=40)
    assert A.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(A.spearman(np.ones(5), b[:5])) and np.isnan(A.spearman(a[:2], b[:2]))


def test_spearman_of_resamples_is_each_resample_s() -> None:
    """The bootstrap ranks all resamples in one call: each row's ρ is scipy's for that row (constant → NaN)."""
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 6, (7, 30)).astype(float), rng.normal(size=(7, 30))
    a[3] = 1.0
    rows = A.spearman(a, b)
    assert rows.shape == (7,) and np.isnan(rows[3])
    for i in (0, 1, 2, 4, 5, 6):
        assert rows[i] == pytest.approx(spearmanr(a[i], b[i]).statistic, abs=1e-12)


def _curves(aoa_x0: np.ndarray, frequency: np.ndarray, counts: np.ndarray | None = None) -> A.WordCurves:
    steps = np.concatenate([[0], 10 ** X]).round().astype(np.int64)
    x = np.concatenate([[np.nan], X])
    surprisal = np.stack([A.sigmoid(x, 9.0, 3.0, 4.0, x0) for x0 in aoa_x0])
    counts = np.ones(len(aoa_x0), np.int64) if counts is None else counts
    return A.WordCurves(steps, surprisal, counts, frequency, 8192, seed=0)


def test_frequent_words_learned_first_give_rho_minus_one() -> None:
    x0 = np.linspace(0.8, 2.4, 12)
    wc = _curves(x0, np.array([10 ** (6 - i) for i in range(12)]))  # the most frequent word has the earliest x0
    out = A.aoa_frequency_spearman(wc)
    assert out["all"] == pytest.approx(-1.0) and out["ci_low"] == pytest.approx(-1.0)
    assert out["ci_high"] == pytest.approx(-1.0)
    assert A.aoa_fitted_share(wc) == 1.0
    assert A.aoa_median(wc) == pytest.approx(np.median(wc.aoa))
    assert np.all(np.diff(wc.aoa) > 0)  # later x0, later age


def test_bootstrap_interval_brackets_rho_and_is_seeded() -> None:
    rng = np.random.default_rng(2)
    x0 = rng.uniform(0.8, 2.4, 30)
    freq = (10 ** (6 - 2 * x0 + rng.normal(0, 0.5, 30))).astype(np.int64) + 1
    a, b = A.aoa_frequency_spearman(_curves(x0, freq)), A.aoa_frequency_spearman(_curves(x0, freq))
    assert a == b and a["ci_low"] < a["all"] < a["ci_high"] < 0


def test_types_without_occurrences_or_frequency_are_left_out() -> None:
    x0 = np.linspace(0.8, 2.4, 6)
    wc = _curves(x0, np.array([100, 0, 50, 40, 30, 20]), counts=np.array([1, 1, 1, 0, 1, 1]))
    assert A.aoa_fitted_share(wc) == 1.0  # the type with no masked occurrence does not count
    aoa, logf = wc.correlated()
    assert aoa.size == 4 and np.allclose(logf, np.log10([100, 50, 30, 20]))  # frequency 0: unknown
    with pytest.raises(ValueError, match="need 3"):
        A.aoa_frequency_spearman(_curves(x0[:2], np.array([5, 4])))
