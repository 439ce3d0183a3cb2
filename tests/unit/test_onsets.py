"""Onset detection on analytic curves whose halfway point is known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dynamics.results.onsets import onset_index, onset_step, series_onsets

STEPS = np.unique(np.round(np.logspace(0, 5, 60)).astype(int))  # 1 … 100,000, log-spaced like a snapshot schedule


def _first_at_or_after(x: float) -> int:
    return int(STEPS[np.searchsorted(STEPS, x - 1e-9)])


@pytest.mark.parametrize(("midpoint", "slope", "low", "high"),
                         [(300.0, 2.0, 0.1, 0.9), (5_000.0, 1.2, 3.0, -1.0), (40.0, 4.0, -2.0, 5.0)])
def test_sigmoid_in_log_step(midpoint: float, slope: float, low: float, high: float) -> None:
    """v(s) = low + (high − low) σ(slope · ln(s / midpoint)); half of the measured change v(s_n) − v(s_1) is reached
    at σ⁻¹ of the measured endpoints' mean, solved in closed form."""
    def sig(z):
        return 1 / (1 + np.exp(-z))

    v = low + (high - low) * sig(slope * np.log(STEPS / midpoint))
    target = (v[0] + v[-1]) / 2
    p = (target - low) / (high - low)
    s_half = midpoint * math.exp(math.log(p / (1 - p)) / slope)
    assert onset_step(list(STEPS), list(v)) == _first_at_or_after(s_half)


def test_exponential_decay_and_its_sign() -> None:
    tau = 2_000.0
    v = 4.0 * np.exp(-STEPS / tau) + 1.0
    half = (v[0] + v[-1]) / 2  # decreasing: the onset is where v first falls to the midpoint
    s_half = -tau * math.log((half - 1.0) / 4.0)
    assert onset_step(list(STEPS), list(v)) == _first_at_or_after(s_half)
    assert onset_step(list(STEPS), list(-v)) == _first_at_or_after(s_half)


def test_no_change_too_few_values_and_gaps() -> None:
    assert onset_index([0.3, 0.3, 0.3]) is None
    assert onset_index([0.3, 0.3 + 1e-15, 0.3]) is None  # float noise is no change
    assert onset_index([None, 0.5, math.nan]) is None
    assert onset_index([]) is None
    assert onset_index([None, 0.0, math.nan, 0.4, 1.0]) == 4  # skipped points never count
    assert onset_index([0.0, None, 0.6, 1.0]) == 2


def test_overshoot_counts_the_first_crossing_of_half_the_net_change() -> None:
    assert onset_index([0.0, 0.2, 1.5, 1.0]) == 2
    assert onset_index([0.0, 0.49, 0.5, 1.0]) == 2  # exactly half counts
    assert onset_index([1.0, 0.6, 0.5, 0.0]) == 2


def test_steps_in_any_order() -> None:
    assert onset_step([8, 0, 4, 2], [1.0, 0.0, 0.9, 0.1]) == 4
    with pytest.raises(ValueError, match="differ in length"):
        onset_step([0, 1], [0.0])


def test_series_onsets_groups_curves() -> None:
    rows = [("a", s, 10 * s, layer, "m", "all", float(s >= 4) * (layer + 1)) for s in (0, 2, 4, 8) for layer in (0, 1)]
    rows += [("b", s, None, 0, "m", "all", 1.0) for s in (0, 2)]  # flat: no onset
    got = {(o.run, o.layer): o for o in series_onsets(rows)}
    assert got[("a", 0)].step == 4 and got[("a", 0)].tokens_seen == 40 and got[("a", 0)].change == 1.0
    assert got[("a", 1)].step == 4 and got[("a", 1)].change == 2.0
    assert got[("b", 0)].step is None and got[("b", 0)].change == 0.0
