"""Onsets: when a metric's curve has made half of its change over training.

For one run, metric, layer and variant, with the measured snapshots' steps s_1 < … < s_n and finite values
v_1 … v_n (snapshots with no value are skipped), the change is Δ = v_n − v_1 and the onset is the first step s_k at
which (v_k − v_1) / Δ ≥ 1/2 — the first *measured* snapshot at or past the halfway point, no interpolation. It is
undefined (None, NULL in the store) with fewer than two values or no change (|Δ| ≤ `ATOL` + `RTOL` · max |v|). A
curve that overshoots and comes back still has its onset where it first crossed half of the net change.

A seed group's onset (`group_onsets`) is the mean of log10(onset step) over the group's runs whose curve has an
onset, with its Student-t interval over those seeds (`dynamics.results.groups.t_intervals`): log steps, because
snapshots are log-spaced early and onsets of one metric differ between seeds by factors, not by amounts. Runs
without an onset for the curve (flat, or a single value) are left out and counted: `n` of `runs`; the interval
needs n ≥ 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dynamics.results.groups import LEVEL, Group, t_intervals

if TYPE_CHECKING:
    import pandas as pd

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


CurveRow = tuple[str, int, "int | None", int, str, str, "float | None"]  # run, step, tokens_seen, layer, metric,
# variant, value: one stored metric row as the onsets and the phases read it


def curve_rows(metrics: pd.DataFrame) -> list[CurveRow]:
    """The rows of a `Store.metrics` frame as `CurveRow`s, for `series_onsets` and `phases.series_phases`."""
    return list(zip(metrics["run"], metrics["step"], metrics["tokens_seen"], metrics["layer"], metrics["metric"],
                    metrics["variant"], metrics["value"], strict=True))


def series_onsets(rows: Sequence[CurveRow]) -> list[Onset]:
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


GROUP_COLUMNS = ["group", "objective", "metric", "layer", "variant", "mean", "low", "high", "n", "runs", "step",
                 "step_low", "step_high"]
_CURVE = ["metric", "layer", "variant"]


def group_onsets(onsets: pd.DataFrame, groups: Sequence[Group], level: float = LEVEL) -> pd.DataFrame:
    """Per seed group and curve (metric, layer, variant) of the stored onset rows `onsets` (`Store.onsets`: run,
    metric, layer, variant, step, …): `mean` of log10(onset step) over the group's runs with an onset, its
    Student-t interval `low`–`high` at `level` (NaN with n < 2), `n` runs with an onset of `runs` with a row, and
    the same three as steps (`step` = 10^mean, the geometric mean onset step; `step_low`, `step_high`). A group of
    one run gives that run's onset, n = 1 and no interval."""
    import pandas as pd  # here: only the group views (app, report, figures) need frames

    rows: list[pd.DataFrame] = []
    for g in groups:
        part = onsets[onsets["run"].isin(list(g.runs))]
        if part.empty:
            continue
        step = pd.to_numeric(part["step"], errors="coerce").to_numpy(dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(step > 0, np.log10(step), np.nan)
        wide = part.assign(x=x).groupby([*_CURVE, "run"], sort=True)["x"].first().unstack("run")
        mean, low, high, _ = t_intervals(wide.to_numpy(dtype=np.float64).T, level)
        out = wide.index.to_frame(index=False)
        out.insert(0, "objective", g.objective)
        out.insert(0, "group", g.label)
        out["mean"], out["low"], out["high"] = mean, low, high
        out["n"] = np.isfinite(wide.to_numpy(dtype=np.float64)).sum(1)
        out["runs"] = part.groupby(_CURVE)["run"].nunique().reindex(wide.index).to_numpy()
        rows.append(out)
    if not rows:
        return pd.DataFrame(columns=GROUP_COLUMNS)
    df = pd.concat(rows, ignore_index=True)
    for name, src in (("step", "mean"), ("step_low", "low"), ("step_high", "high")):
        df[name] = np.power(10.0, df[src].to_numpy(dtype=np.float64))
    return df[GROUP_COLUMNS]


def order_of_learning(table: pd.DataFrame, variant: str = "all") -> pd.DataFrame:
    """The timeline's rows: `group_onsets` rows of `variant`, each metric at its last stored layer, curves with an
    onset in at least one group, sorted by the earliest group's mean log10 onset (ties by name), then by group;
    `rank` numbers the curves in that order."""
    t = table[table["variant"] == variant]
    t = t[t["layer"] == t.groupby("metric")["layer"].transform("max")]
    first = t[t["n"] > 0].groupby("metric")["mean"].min().reset_index().sort_values(["mean", "metric"])
    rank = {m: k for k, m in enumerate(first["metric"])}
    t = t[t["metric"].isin(rank)]
    return t.assign(rank=t["metric"].map(rank)).sort_values(["rank", "group"]).reset_index(drop=True)
