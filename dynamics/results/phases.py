"""Phases: where a metric's curve changes course, found as change points of the curve against log step.

For one run, metric, layer and variant, with the measured snapshots' steps s_1 < … < s_n (step 0 left out: it has
no place on a log axis, and the step-0 → step-1 change is the first phase's start anyway) and finite values v_i:

* x_i = log10(s_i). The model is **piecewise linear in x** (a phase is a stretch over which the curve rises or
  falls at a steady rate per decade of steps, or stays flat); the cost of a segment is the residual sum of squares
  of its least-squares line (ruptures' `CostLinear` on the columns [v, x, 1]).
* The values are standardised by a robust noise scale σ: the median absolute "bend" r_i = v_i − (w_i v_{i−1} +
  (1 − w_i) v_{i+1}), w_i = (x_{i+1} − x_i) / (x_{i+1} − x_{i−1}) — the miss of linear interpolation from the
  two neighbours, zero on any straight stretch — scaled to a standard deviation (1.4826 · median |r_i / √(1 + w_i²
  + (1 − w_i)²)|, the MAD of independent noise of variance σ²). A curve is thus measured in units of how much it
  typically bends between neighbours, and a break is a bend larger than the curve's typical one. σ is floored at
  `FLOOR` × the values' range, so that a noise-free piecewise-linear curve is not divided by zero.
* PELT (ruptures' `Pelt`, exact for a penalised cost) with a minimum segment of `MIN_SIZE` snapshots (a line
  through two points fits exactly and would always be preferred) and the penalty `PENALTY` · log n per break, in
  units of σ²: BIC's 3 log n (3 parameters per extra segment: slope, intercept, location) doubled, because σ is
  estimated from the curve itself (from n − 2 bends: at 12 snapshots it is often too small) and the location is the
  best of n. Measured on white noise at the probe's schedule (log-spaced steps, then every N): a false break in
  ≈ 9 % of 12-point series, ≈ 5 % of 26-point and 1 % of 56-point ones, where BIC's 3 log n breaks 23 %, 20 % and
  13 %; a jump of 10σ is placed within one snapshot in ≥ 90 %. `tests/unit/test_phases.py` checks these rates
  and that a smaller penalty breaks noise.
* Each phase is a segment: it starts at the step of its first snapshot and ends where the next begins (the last
  at the last step), so phases tile the measured steps; `size` is its fitted line's change from its first to its
  last snapshot (in the metric's unit), and its direction is "flat" when |size| is at most max(2σ, `FLAT_SHARE` ×
  the values' range, the onsets' float tolerance), else "rise" or "fall".

Fewer than 2 · `MIN_SIZE` usable snapshots give one phase and no break; fewer than 2, no phase.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dynamics.results.onsets import ATOL, RTOL, CurveRow

PENALTY = 6.0  # × log(n) per break, in units of σ² (module docstring)
MIN_SIZE = 3  # snapshots per phase
FLOOR = 1e-3  # σ ≥ FLOOR × (max − min) of the values
FLAT_SHARE = 0.1  # a phase changing by less than this share of the curve's range (or 2σ) is flat
MAD_TO_STD = 1.4826  # σ of a normal distribution per unit of its median absolute deviation


@dataclass(frozen=True)
class Phase:
    """One phase of one curve (steps are the snapshots' training steps)."""

    index: int
    start_step: int
    end_step: int
    direction: str  # "rise" | "fall" | "flat"
    size: float


@dataclass(frozen=True)
class CurvePhases:
    """The phases of one stored curve (run, metric, layer, variant)."""

    run: str
    metric: str
    layer: int
    variant: str
    phases: tuple[Phase, ...]

    @property
    def breaks(self) -> int:
        return max(0, len(self.phases) - 1)


def noise_scale(x: np.ndarray, y: np.ndarray) -> float:
    """σ: the robust scale of the curve's bends between neighbours (module docstring), floored at `FLOOR` × range."""
    spread = float(y.max() - y.min()) if y.size else 0.0
    if y.size < 3:
        return max(FLOOR * spread, np.finfo(np.float64).tiny)
    w = (x[2:] - x[1:-1]) / (x[2:] - x[:-2])
    r = (y[1:-1] - (w * y[:-2] + (1 - w) * y[2:])) / np.sqrt(1 + w * w + (1 - w) ** 2)
    sigma = MAD_TO_STD * float(np.median(np.abs(r)))
    return max(sigma, FLOOR * spread, np.finfo(np.float64).tiny)


def breaks(x: Sequence[float], y: Sequence[float], penalty: float = PENALTY, min_size: int = MIN_SIZE) -> list[int]:
    """Indices (into x, y, in order) where a new phase begins: PELT on the standardised curve, penalty
    `penalty` · log n, segments of at least `min_size` points."""
    import ruptures as rpt  # here: only the run-level step needs it (its import pulls in scipy)

    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = ys.size
    if n < 2 * min_size:
        return []
    z = (ys - ys.mean()) / noise_scale(xs, ys)
    signal = np.column_stack([z, xs - xs.mean(), np.ones(n)])
    ends = rpt.Pelt(model="linear", min_size=min_size, jump=1).fit(signal).predict(pen=penalty * math.log(n))
    return [int(b) for b in ends[:-1]]


def curve_phases(steps: Sequence[int], values: Sequence[float | None], penalty: float = PENALTY,
                 min_size: int = MIN_SIZE) -> list[Phase]:
    """The phases of one curve measured at `steps` (any order; step 0 and missing or non-finite values left out)."""
    if len(steps) != len(values):
        raise ValueError(f"steps and values differ in length: {len(steps)} vs {len(values)}")
    points = sorted((int(s), float(v)) for s, v in zip(steps, values, strict=True)
                    if int(s) > 0 and v is not None and math.isfinite(float(v)))
    if len(points) < 2:
        return []
    s = np.array([p[0] for p in points], dtype=np.int64)
    y = np.array([p[1] for p in points], dtype=np.float64)
    x = np.log10(s.astype(np.float64))
    cuts = [0, *breaks(x, y, penalty, min_size), len(points)]
    sigma = noise_scale(x, y) if len(points) >= 3 else 0.0
    flat = max(2 * sigma, FLAT_SHARE * float(y.max() - y.min()), ATOL + RTOL * float(np.abs(y).max()))
    out = []
    for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        xa, ya = x[a:b], y[a:b]
        slope = float(np.polyfit(xa, ya, 1)[0]) if b - a >= 2 else 0.0
        size = slope * float(xa[-1] - xa[0])
        direction = "flat" if abs(size) <= flat else ("rise" if size > 0 else "fall")
        end = int(s[b]) if b < len(points) else int(s[-1])
        out.append(Phase(k, int(s[a]), end, direction, size))
    return out


def series_phases(rows: Sequence[CurveRow],
                  penalty: float = PENALTY) -> list[CurvePhases]:
    """The phases of every (run, metric, layer, variant) curve in `rows` = (run, step, tokens_seen, layer, metric,
    variant, value) — the store's metric rows of one probe set (as `dynamics.results.onsets.series_onsets` reads
    them). Curves stored once per run (a single step) have no phase and no entry."""
    curves: dict[tuple[str, str, int, str], list[tuple[int, float | None]]] = {}
    for run, step, _tokens, layer, metric, variant, value in rows:
        curves.setdefault((run, metric, int(layer), variant), []).append((int(step), value))
    out = []
    for (run, metric, layer, variant), points in sorted(curves.items()):
        phases = curve_phases([p[0] for p in points], [None if p[1] is None else float(p[1]) for p in points],
                              penalty)
        if phases:
            out.append(CurvePhases(run, metric, layer, variant, tuple(phases)))
    return out
