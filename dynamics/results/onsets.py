"""Onsets: when a metric's curve has made half of its change over training.

For one run, metric, layer and variant, with the measured snapshots' steps s_1 < … < s_n and finite values
v_1 … v_n (snapshots with no value are skipped), the change is Δ = v_n − v_1 and the onset is the first step s_k at
which (v_k − v_1) / Δ ≥ 1/2 — the first *measured* snapshot at or past the halfway point, no interpolation. It is
undefined (None, NULL in the store) with fewer than two values or no change (|Δ| ≤ `ATOL` + `RTOL` · max |v|). A
curve that overshoots and comes back still has its onset where it first crossed half of the net change.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HALF = 0.5
ATOL = 1e-12  # a change below this (plus RTOL of the values' scale) is no change: float noise, not learning
RTOL = 1e-9


def onset_index(values: Sequence[float | None]) -> int | None:
    """Index (into `values`, in step order) of the onset, or None; see the module docstring."""
    finite = [(i, float(v)) for i, v in enumerate(values) if v is not None and math.isfinite(float(v))]
    if len(finite) < 2:
        return None
    first, last = finite[0][1], finite[-1][1]
    change = last - first
    scale = max(abs(v) for _, v in finite)
    if abs(change) <= ATOL + RTOL * scale:
        return None
    for i, v in finite:
        if (v - first) / change >= HALF:
            return i
    return finite[-1][0]  # unreachable: the last value covers all of the change


def onset_step(steps: Sequence[int], values: Sequence[float | None]) -> int | None:
    """The onset's step for values measured at `steps` (any order; sorted here), or None."""
    if len(steps) != len(values):
        raise ValueError(f"steps and values differ in length: {len(steps)} vs {len(values)}")
    order = np.argsort(np.asarray(steps, dtype=np.int64), kind="stable")
    k = onset_index([values[i] for i in order])
    return None if k is None else int(np.asarray(steps)[order[k]])


@dataclass(frozen=True)
class Onset:
    """One stored onset row: `step`/`tokens_seen` None where the curve has no onset."""

    run: str
    metric: str
    layer: int
    variant: str
    step: int | None
    tokens_seen: int | None
    change: float | None  # v_n − v_1 (None with fewer than two values)


def series_onsets(rows: Sequence[tuple[str, int, int | None, int, str, str, float | None]]) -> list[Onset]:
    """Onsets of every (run, metric, layer, variant) curve in `rows` = (run, step, tokens_seen, layer, metric,
    variant, value) — the store's metric rows of one probe set."""
    curves: dict[tuple[str, str, int, str], list[tuple[int, int | None, float | None]]] = {}
    for run, step, tokens, layer, metric, variant, value in rows:
        curves.setdefault((run, metric, int(layer), variant), []).append((int(step), tokens, value))
    out = []
    for (run, metric, layer, variant), points in sorted(curves.items()):
        points.sort(key=lambda p: p[0])
        values = [None if p[2] is None else float(p[2]) for p in points]
        k = onset_index(values)
        finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        change = finite[-1] - finite[0] if len(finite) >= 2 else None
        step, tokens = (points[k][0], points[k][1]) if k is not None else (None, None)
        known = tokens is not None and math.isfinite(float(tokens))
        out.append(Onset(run, metric, layer, variant, step, int(tokens) if known else None, change))
    return out
