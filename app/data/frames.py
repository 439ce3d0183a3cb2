"""Pure reshaping of loaded frames for the charts: training logs in long form, thinning long series, the
difference of two runs, coverage gaps in words, and distance variants as numbers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from app.definitions import distance


def tidy_log(logs: dict[str, pd.DataFrame], quantities: Sequence[str], max_points: int = 1500) -> pd.DataFrame:
    """Long form of several runs' logs for plotting: run, split, step, tokens_seen, quantity, value; each
    (run, split, quantity) series thinned to at most `max_points` points (first and last kept)."""
    parts = []
    for run, log in logs.items():
        have = [q for q in quantities if q in log and log[q].notna().any()]
        if not have or log.empty:
            continue
        long = log.melt(id_vars=["step", "tokens_seen", "split"], value_vars=have, var_name="quantity")
        long = long.dropna(subset=["value"])
        long.insert(0, "run", run)
        parts.append(long)
    if not parts:
        return pd.DataFrame(columns=["run", "split", "step", "tokens_seen", "quantity", "value"])
    df = pd.concat(parts, ignore_index=True)
    df = thin(df, ["run", "split", "quantity"], max_points)
    return df[["run", "split", "step", "tokens_seen", "quantity", "value"]]


def thin(df: pd.DataFrame, by: Sequence[str], max_points: int) -> pd.DataFrame:
    """At most about `max_points` evenly spaced rows per group of `by` (each group's first and last row kept)."""
    if df.empty:
        return df
    pos = df.groupby(list(by), sort=False).cumcount()
    size = df.groupby(list(by), sort=False)[df.columns[0]].transform("size")
    stride = np.maximum(1, np.ceil(size / max_points)).astype(int)
    keep = (pos % stride == 0) | (pos == size - 1)
    return df[keep.to_numpy()].reset_index(drop=True)


def difference(df: pd.DataFrame, run_a: str, run_b: str) -> pd.DataFrame:
    """`run_a − run_b` per (step, layer, variant) at the steps both runs measured: step, tokens_seen (run a's),
    layer, variant, a, b, value."""
    cols = ["step", "tokens_seen", "layer", "variant", "a", "b", "value"]
    a = df[df["run"] == run_a][["step", "tokens_seen", "layer", "variant", "value"]]
    b = df[df["run"] == run_b][["step", "layer", "variant", "value"]]
    joined = a.merge(b, on=["step", "layer", "variant"], suffixes=("_a", "_b"))
    joined = joined.rename(columns={"value_a": "a", "value_b": "b"})
    joined["value"] = joined["a"] - joined["b"]
    return joined[cols].sort_values(["variant", "layer", "step"]).reset_index(drop=True)


def coverage(df: pd.DataFrame, done: pd.DataFrame, families: Sequence[str], runs: Sequence[str]) -> list[str]:
    """Sentences about gaps: snapshots measured (any of `families`) where this metric has no value, per run."""
    out = []
    for run in runs:
        steps = set(done[(done["run"] == run) & done["family"].isin(families) & (done["step"] >= 0)]["step"])
        rows = df[df["run"] == run]
        have = set(rows[rows["value"].notna()]["step"])
        if not steps and rows.empty:
            out.append(f"{run}: not measured for this metric yet")
            continue
        gap = sorted(steps - have)
        if gap:
            shown = ", ".join(map(str, gap[:8])) + (", …" if len(gap) > 8 else "")
            out.append(f"{run}: no value at {len(gap)} of {len(steps | have)} measured snapshots (steps {shown})")
    return out


def with_distance(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose variant is a distance (d001, d002, …) with a numeric `distance` column."""
    d = df["variant"].map(distance)
    out = df[d.notna()].copy()
    out["distance"] = d[d.notna()].astype(int)
    return out
