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
    x_min − 1 … x_max + 1 — is the start of its band of k exactly, (lo, hi) from the closed-form normal equations;
    every band's start lies in its band."""
    k = float(A._GRID_K[12])
    x0 = float(np.linspace(X.min() - 1.0, X.max() + 1.0, 61)[55])
    assert x0 > X.max()
    y = A.sigmoid(X, 9.0, 2.0, k, x0)[None, :]
    start = A._grid_start(X, y, np.ones_like(y), np.array([X.min()]), np.array([X.max()]), np.array([19.0]))
    assert start.shape == (1, len(A._K_BANDS), 4)
    np.testing.assert_allclose(start[0, 0], [9.0, 2.0, k, x0], rtol=1e-9, atol=1e-9)
    for band, ks in enumerate(A._K_BANDS):
        assert start[0, band, 2] in A._GRID_K[ks]
    assert [A._GRID_K[ks.start] for ks in A._K_BANDS[1:]] == pytest.approx([1.0, 10.0, 100.0])  # the documented bands


def test_the_grid_s_lo_hi_are_the_least_squares_solution_within_the_bounds() -> None:
    """At each grid point (lo, hi) minimise Σ w (lo·(1 − s) + hi·s − y)² over [0, top]², as scipy's bounded linear
    least squares does — whether the unconstrained solution lies inside the box or past any of its sides (a start
    outside the bounds, clipped, is a poor start: the grid compared the points by the sums of squares they do not
    have)."""
    from scipy.optimize import lsq_linear

    rng = np.random.default_rng(11)
    top = 8.0
    sides = {"inside": 0, "lo < 0": 0, "lo > top": 0, "hi < 0": 0, "hi > top": 0}
    for _ in range(200):
        s = 1.0 / (1.0 + np.exp(rng.uniform(2, 20) * (X - rng.uniform(-0.5, 3.5))))
        y = rng.uniform(0.0, 7.0, X.size) if rng.random() < 0.5 else rng.uniform(-30.0, 40.0, X.size)
        w = rng.choice([0.0, 1.0], X.size, p=[0.2, 0.8])
        a = 1.0 - s
        sums = [(w * u).sum() for u in (a * a, a * s, s * s, a * y, s * y)]
        (lo,), (hi,), (ok,) = A._bounded_lo_hi(*(np.array([v]) for v in sums), top)
        if not ok:
            continue
        free = np.linalg.lstsq(np.sqrt(w)[:, None] * np.stack([a, s], 1), np.sqrt(w) * y, rcond=None)[0]
        for name, hit in (("lo < 0", free[0] < 0), ("lo > top", free[0] > top), ("hi < 0", free[1] < 0),
                          ("hi > top", free[1] > top), ("inside", 0 <= free.min() and free.max() <= top)):
            sides[name] += bool(hit)
        ref = lsq_linear(np.sqrt(w)[:, None] * np.stack([a, s], 1), np.sqrt(w) * y, bounds=(0.0, top),
                         method="bvls", tol=1e-14)
        assert 0.0 <= lo <= top and 0.0 <= hi <= top
        ours = float((w * (lo * a + hi * s - y) ** 2).sum())
        assert ours <= 2 * ref.cost + 1e-9 * (1 + 2 * ref.cost)
        np.testing.assert_allclose([lo, hi], ref.x, atol=1e-6)
    assert min(sides.values()) >= 5, sides  # every side of the box was exercised


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
    starts = np.clip(A._grid_start(X, y[None], np.ones((1, X.size)), X[:1], X[-1:], np.array([top]))[0], lower, upper)
    ref = min(2 * least_squares(lambda t: A.sigmoid(X, *t) - y, start, bounds=(lower, upper), method="trf",
                                xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=20000).cost for start in starts)
    ours = float(((A.sigmoid(X, fit.hi, fit.lo, fit.k, fit.x0) - y) ** 2).sum())
    assert ours <= ref + 1e-9
    if case == "k at its bound":
        assert fit.k == pytest.approx(100.0)
    if case == "lo at its bound":
        assert fit.lo == 0.0


# Short noisy curves (x = log10 of steps 1 … 64, V = 600: the reference suite's word-acquisition case) whose sum of
# squares has several local minima; the fit used to stop in a higher one (by the amount noted) when its grid start
# compared (lo, hi) outside their bounds and refined one start only.
SHORT_X = np.log10(np.array([1, 2, 4, 8, 16, 32, 64], dtype=np.float64))
HARD_CURVES = {
    "a flank through the last point (4e-7)": [5.8854, 5.8841, 5.7885, 5.2005, 5.2978, 5.9085, 4.2465],
    "a late drop (8e-3)": [5.152, 3.799, 3.968, 3.456, 4.439, 3.106, 2.54],
    "noisy with a late rise (2e-6)": [7.833, 5.376, 5.848, 5.031, 5.531, 5.713, 6.768],
    "a step after the first point (1e-6)": [5.555, 0.67, 0.697, 0.716, 0.735, 0.706, 0.716],
    "a noisy plateau falling late (3e-3)": [6.063, 5.592, 5.941, 6.225, 5.72, 5.643, 5.424],
    "a step after the second point (2e-3)": [5.981, 5.752, 0.718, 0.596, 0.6, 0.805, 0.654],
}


@pytest.mark.parametrize("name", list(HARD_CURVES))
def test_the_fit_finds_the_lowest_of_several_local_optima(name: str) -> None:
    """The fit's sum of squares is no larger than the lowest that scipy's bounded trust-region solver (its own
    finite-difference Jacobian) reaches from 52 starts spread over (k, x0), within the same bounds."""
    from scipy.optimize import least_squares

    y = np.array(HARD_CURVES[name])
    chance = math.log(600)
    fit = A.fit_curve(SHORT_X, y, chance)
    top = 2 * max(y.max(), chance) + 1
    lower, upper = [0, 0, 0, SHORT_X.min() - 2], [top, top, 100, SHORT_X.max() + 2]
    best = math.inf
    for x0 in np.linspace(SHORT_X.min() - 1, SHORT_X.max() + 1, 13):
        for k in (0.3, 3.0, 30.0, 100.0):
            start = np.clip([y.max(), y.min(), k, x0], lower, upper)
            res = least_squares(lambda t: A.sigmoid(SHORT_X, *t) - y, start, bounds=(lower, upper), method="trf",
                                xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=2000)
            best = min(best, 2 * res.cost)
    ours = float(((A.sigmoid(SHORT_X, fit.hi, fit.lo, fit.k, fit.x0) - y) ** 2).sum())
    assert ours <= best + 1e-9, f"{name}: {ours!r} > {best!r}"


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
    out = A.aoa_freq_spearman(wc)
    assert out["all"] == pytest.approx(-1.0) and out["ci_low"] == pytest.approx(-1.0)
    assert out["ci_high"] == pytest.approx(-1.0)
    assert A.aoa_fitted_share(wc) == 1.0
    assert A.aoa_median(wc) == pytest.approx(np.median(wc.aoa))
    assert np.all(np.diff(wc.aoa) > 0)  # later x0, later age


def test_bootstrap_interval_brackets_rho_and_is_seeded() -> None:
    rng = np.random.default_rng(2)
    x0 = rng.uniform(0.8, 2.4, 30)
    freq = (10 ** (6 - 2 * x0 + rng.normal(0, 0.5, 30))).astype(np.int64) + 1
    a, b = A.aoa_freq_spearman(_curves(x0, freq)), A.aoa_freq_spearman(_curves(x0, freq))
    assert a == b and a["ci_low"] < a["all"] < a["ci_high"] < 0


def test_types_without_occurrences_or_frequency_are_left_out() -> None:
    x0 = np.linspace(0.8, 2.4, 6)
    wc = _curves(x0, np.array([100, 0, 50, 40, 30, 20]), counts=np.array([1, 1, 1, 0, 1, 1]))
    assert A.aoa_fitted_share(wc) == 1.0  # the type with no masked occurrence does not count
    aoa, logf = wc.correlated()
    assert aoa.size == 4 and np.allclose(logf, np.log10([100, 50, 30, 20]))  # frequency 0: unknown
    with pytest.raises(ValueError, match="need 3"):
        A.aoa_freq_spearman(_curves(x0[:2], np.array([5, 4])))
