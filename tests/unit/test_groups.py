"""Seed groups from run configs, and the Student-t interval: exact values, and coverage on simulated experiments
with a known difference (against a percentile bootstrap, which undercovers at the 3 seeds a study here has)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dynamics.results.groups import paired_difference, recipe, seed_groups, t_interval, t_intervals

T_975_DF2 = 4.3026527  # Student's t quantile 0.975 with 2 degrees of freedom (tables)


def _cfg(**kw):
    base = {"objective": "mlm", "preset": "mini", "lr": 5e-4, "seed": 1, "output_dir": "runs/x", "device": "auto",
            "progress": True}
    return {**base, **kw}


def test_runs_that_differ_only_by_seed_form_one_group() -> None:
    configs = {
        "mlm-mini-s2": _cfg(seed=2, output_dir="runs/mlm-mini-s2"),
        "mlm-mini-s1": _cfg(seed=1, output_dir="runs/mlm-mini-s1", device="cpu", progress=False),
        "mlm-mini-s3": _cfg(seed=3, output_dir="elsewhere/s3"),
        "taco-mini-seed1": _cfg(objective="taco", seed=1),
        "taco-mini-seed2": _cfg(objective="taco", seed=2),
        "mlm-lr": _cfg(lr=1e-3, seed=1),
        "no-config": None,
    }
    groups = {g.label: g for g in seed_groups(configs)}
    assert set(groups) == {"mlm-mini", "taco-mini", "mlm-lr", "no-config"}
    assert groups["mlm-mini"].runs == ("mlm-mini-s1", "mlm-mini-s2", "mlm-mini-s3")  # by seed
    assert groups["mlm-mini"].seeds == (1, 2, 3) and groups["mlm-mini"].objective == "mlm"
    assert groups["taco-mini"].runs == ("taco-mini-seed1", "taco-mini-seed2")
    assert groups["mlm-lr"].size == 1 and groups["no-config"].runs == ("no-config",)
    assert "seed" not in recipe(_cfg()) and "lr" in recipe(_cfg())


def test_same_stem_gets_unique_labels() -> None:
    configs = {"a-s1": _cfg(seed=1), "a-s2": _cfg(seed=2), "a-s3": _cfg(seed=3, lr=1.0), "a-s4": _cfg(seed=4, lr=1.0)}
    labels = sorted(g.label for g in seed_groups(configs))
    assert labels == ["a", "a #2"]


def test_t_interval_exact_values() -> None:
    iv = t_interval([1.0, 2.0, 3.0, math.nan])
    half = T_975_DF2 * 1.0 / math.sqrt(3)
    assert iv.n == 3 and iv.mean == pytest.approx(2.0) and iv.std == pytest.approx(1.0)
    assert iv.low == pytest.approx(2.0 - half, rel=1e-7) and iv.high == pytest.approx(2.0 + half, rel=1e-7)
    one = t_interval([0.5])
    assert one.mean == 0.5 and math.isnan(one.low) and "no interval" in one.describe()
    assert math.isnan(t_interval([]).mean)


def test_column_wise_intervals_ignore_missing_seeds() -> None:
    x = np.array([[1.0, 0.0, np.nan], [2.0, 0.0, np.nan], [3.0, np.nan, 4.0]])
    mean, low, high, std = t_intervals(x)
    assert mean[0] == pytest.approx(2.0) and high[0] - mean[0] == pytest.approx(T_975_DF2 / math.sqrt(3), rel=1e-7)
    assert mean[1] == 0.0 and low[1] == 0.0 and high[1] == 0.0  # two equal values: a zero-width interval
    assert mean[2] == 4.0 and math.isnan(low[2]) and math.isnan(std[2])


def test_paired_difference_pairs_by_seed() -> None:
    a = {1: 10.0, 2: 11.0, 3: 12.0, 4: 99.0}
    b = {1: 11.0, 2: 13.0, 3: 15.0, 5: -99.0}
    iv = paired_difference(a, b)
    assert iv.n == 3 and iv.mean == pytest.approx(2.0) and iv.std == pytest.approx(1.0)


def _coverage_t(n: int, experiments: int, rng: np.random.Generator, delta: float = 0.7, sigma: float = 2.0) -> float:
    diffs = rng.normal(delta, sigma, size=(n, experiments))
    _, low, high, _ = t_intervals(diffs)
    return float(((low <= delta) & (delta <= high)).mean())


def _coverage_bootstrap(n: int, experiments: int, rng: np.random.Generator, delta: float = 0.7,
                        sigma: float = 2.0, resamples: int = 2000) -> float:
    diffs = rng.normal(delta, sigma, size=(experiments, n))
    idx = rng.integers(0, n, size=(experiments, resamples, n))
    means = np.take_along_axis(diffs[:, None, :].repeat(resamples, 1), idx, 2).mean(2)
    low, high = np.quantile(means, [0.025, 0.975], axis=1)
    return float(((low <= delta) & (delta <= high)).mean())


@pytest.mark.parametrize("n", [20, 3])
def test_t_interval_covers_a_known_difference_at_its_level(n: int) -> None:
    cover = _coverage_t(n, 2000, np.random.default_rng(n))
    assert 0.93 <= cover <= 0.97, cover


def test_a_bootstrap_over_three_seeds_undercovers_which_is_why_the_t_interval_is_used() -> None:
    rng = np.random.default_rng(7)
    assert _coverage_bootstrap(3, 2000, rng) < 0.85
    assert _coverage_bootstrap(20, 2000, rng, resamples=1000) > 0.90
