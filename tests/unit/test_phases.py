"""Phases (`dynamics.results.phases`): change points of curves against log step, on synthetic piecewise-linear
curves with known breaks (recovered within one snapshot), on pure noise (no break at the stated rate), the penalty's
effect (a smaller one breaks noise), and the store's `phases` table."""

from __future__ import annotations

import numpy as np
import pytest

from dynamics.results import phases as ph
from dynamics.results import store as dstore


def schedule(every: int, last: int) -> np.ndarray:
    """The probe's snapshot steps without step 0: 1, 2, 4, … below `every`, then every `every` up to `last`."""
    steps = [1]
    while steps[-1] * 2 < every:
        steps.append(steps[-1] * 2)
    return np.array(steps + list(range(every, last + 1, every)), dtype=np.int64)


def piecewise(x: np.ndarray, knots: list[int], slopes: list[float]) -> np.ndarray:
    """A continuous piecewise-linear curve in x, slope `slopes[k]` from index knots[k−1] (0 for k = 0)."""
    y = np.zeros_like(x)
    starts = [0, *knots]
    for k, (a, slope) in enumerate(zip(starts, slopes, strict=True)):
        b = starts[k + 1] if k + 1 < len(starts) else len(x)
        y[a:b] = (y[a - 1] if a else 0.0) + slope * (x[a:b] - (x[a - 1] if a else x[0]))
    return y


def noise_break_share(n_every: int, penalty: float, seeds: int) -> float:
    steps = schedule(50, 50 * n_every)
    x = np.log10(steps.astype(float))
    return float(np.mean([bool(ph.breaks(x, np.random.default_rng(s).normal(size=len(x)), penalty))
                          for s in range(seeds)]))


@pytest.mark.parametrize("seed", range(5))
def test_known_breaks_recovered_within_one_snapshot(seed: int) -> None:
    steps = schedule(50, 1000)  # 26 snapshots
    x = np.log10(steps.astype(float))
    knots = [7, 16]  # rise fast, stay flat, fall
    y = piecewise(x, knots, [1.0, 0.0, -2.0]) + np.random.default_rng(seed).normal(scale=0.01, size=len(x))
    found = ph.breaks(x, y)
    assert len(found) == 2 and all(abs(f - k) <= 1 for f, k in zip(found, knots, strict=True)), found
    phases = ph.curve_phases([0, *steps], [5.0, *y])  # step 0 is left out
    assert [p.direction for p in phases] == ["rise", "flat", "fall"]
    assert phases[0].start_step == 1 and phases[-1].end_step == 1000
    assert all(a.end_step == b.start_step for a, b in zip(phases, phases[1:], strict=False))  # they tile the steps
    assert phases[1].start_step == int(steps[found[0]])
    assert phases[0].size == pytest.approx(x[found[0] - 1] - x[0], abs=0.05)


@pytest.mark.parametrize("seed", range(5))
def test_a_jump_is_one_break(seed: int) -> None:
    steps = schedule(50, 1000)
    x = np.log10(steps.astype(float))
    k = 12
    y = np.where(np.arange(len(x)) < k, 0.0, 1.0) + np.random.default_rng(seed).normal(scale=0.05, size=len(x))
    found = ph.breaks(x, y)
    assert len(found) == 1 and abs(found[0] - k) <= 1


def test_scale_and_offset_do_not_move_breaks() -> None:
    steps = schedule(50, 1000)
    x = np.log10(steps.astype(float))
    y = piecewise(x, [9], [0.5, -0.5]) + np.random.default_rng(3).normal(scale=0.01, size=len(x))
    assert ph.breaks(x, y) == ph.breaks(x, 1e4 * y - 7.0) == ph.breaks(x, 1e-4 * y + 2.0)


def test_noise_has_no_break_at_the_stated_rate() -> None:
    # the module docstring's measured rates: ≈ 5 % at 26 points, ≈ 1 % at 56, with 6 · log n
    assert noise_break_share(20, ph.PENALTY, 100) <= 0.08
    assert noise_break_share(50, ph.PENALTY, 60) <= 0.03


def test_the_penalty_matters() -> None:
    # a smaller penalty breaks noise far more often (BIC's 3 log n: ≈ 20 %); no penalty breaks nearly every series
    assert noise_break_share(20, 3.0, 100) >= 0.12
    assert noise_break_share(20, 0.0, 20) >= 0.9
    steps = schedule(50, 1000)
    x = np.log10(steps.astype(float))
    y = piecewise(x, [9], [0.5, -0.5])
    assert ph.breaks(x, y, penalty=1e6) == []  # a huge penalty misses even a clean break


def test_short_or_flat_curves() -> None:
    assert ph.curve_phases([0, 1], [1.0, 2.0]) == []  # one usable point
    one = ph.curve_phases([1, 2, 4, 8, 16], [0.0, 1.0, 2.0, 3.0, 4.0])  # < 2 · MIN_SIZE points: no search
    assert len(one) == 1 and one[0].direction == "rise" and (one[0].start_step, one[0].end_step) == (1, 16)
    flat = ph.curve_phases([1, 2, 4, 8, 16, 32, 64], [2.0] * 7)
    assert len(flat) == 1 and flat[0].direction == "flat" and abs(flat[0].size) < 1e-12
    gaps = ph.curve_phases([1, 2, 4, 8], [None, 1.0, float("nan"), 3.0])
    assert len(gaps) == 1 and (gaps[0].start_step, gaps[0].end_step) == (2, 8)
    with pytest.raises(ValueError, match="differ in length"):
        ph.curve_phases([1, 2], [1.0])


def test_phases_stored_and_replaced(tmp_path) -> None:
    steps = schedule(50, 500)
    x = np.log10(steps.astype(float))
    y = piecewise(x, [7], [1.0, -1.0])
    rows = [("r", int(s), int(s) * 10, 1, "m", "all", float(v)) for s, v in zip(steps, y, strict=True)]
    rows += [("r", 500, 5000, 1, "once", "all", 1.0)]  # a value stored once per run: no phase
    found = ph.series_phases(rows)
    assert [(c.metric, c.breaks) for c in found] == [("m", 1)]
    with dstore.open(tmp_path) as s:
        s.write_phases("h", "r", found)
        s.write_phases("h", "r", found)  # rewriting replaces
        df = s.phases("h")
        with pytest.raises(ValueError, match="another run"):
            s.write_phases("h", "q", found)
    assert list(df["phase"]) == [0, 1] and list(df["direction"]) == ["rise", "fall"]
    # the vertex is snapshot 6, on both lines: the break is found there or at 7
    assert df["start_step"].iloc[0] == 1 and int(df["start_step"].iloc[1]) in (int(steps[6]), int(steps[7]))
    assert int(df["end_step"].iloc[0]) == int(df["start_step"].iloc[1]) and int(df["end_step"].iloc[-1]) == 500
