"""Runs as seed groups (`dynamics.results.groups`): the store's groups, one metric's rows per group (mean and band), the
difference of two groups paired by seed with its Student-t interval, the stored onsets, and the
group-scope rows (agreement between seeds) with the runs behind each group."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import streamlit as st

from app.data.errors import named
from app.data.stamps import Stamp
from app.data.store_open import open_store
from app.data.store_tables import typed
from dynamics.results.groups import LEVEL, Group, seed_groups, stored_configs, t_intervals

BANDS = {"minmax": "min – max over seeds", "std": "mean ± 1 std over seeds"}
KEYS = ["step", "layer", "variant"]


@named("the runs' configs (table `runs`)")
@st.cache_data(show_spinner=False, max_entries=64)
def store_groups(db: str, stamp: Stamp) -> list[Group]:
    """The seed groups of the store's runs, from the `run.json` each run's row keeps (`runs.meta`)."""
    with open_store(db) as s:
        runs = s.runs()
    return seed_groups(stored_configs(runs["name"], runs["meta"]))


def restrict(groups: Sequence[Group], runs: Sequence[str]) -> list[Group]:
    """The groups cut down to `runs` (the selected ones); groups left empty are dropped."""
    keep = set(runs)
    out = []
    for g in groups:
        members = [(r, s) for r, s in zip(g.runs, g.seeds, strict=True) if r in keep]
        if members:
            out.append(Group(g.label, g.key, tuple(r for r, _ in members), tuple(s for _, s in members), g.objective))
    return out


def group_frame(df: pd.DataFrame, groups: Sequence[Group], band: str = "minmax") -> pd.DataFrame:
    """Per group, step, layer and variant of the metric rows `df`: the mean over the group's runs (`value`), the
    band (`low`, `high`: min and max, or mean ∓ sample std with `band="std"`), `n` runs with a value, and
    tokens_seen (the runs' mean). Columns: group, objective, step, tokens_seen, layer, variant, value, low, high, n."""
    if band not in BANDS:
        raise ValueError(f"band must be one of {', '.join(BANDS)}; got {band!r}")
    cols = ["group", "objective", "step", "tokens_seen", "layer", "variant", "value", "low", "high", "n"]
    of = {r: g for g in groups for r in g.runs}
    part = df[df["run"].isin(list(of))].assign(group=lambda d: d["run"].map(lambda r: of[r].label))
    if part.empty:
        return pd.DataFrame(columns=cols)
    agg = part.groupby(["group", *KEYS], sort=True).agg(
        value=("value", "mean"), low=("value", "min"), high=("value", "max"), std=("value", "std"),
        n=("value", "count"), tokens_seen=("tokens_seen", "mean")).reset_index()
    if band == "std":
        agg["low"], agg["high"] = agg["value"] - agg["std"], agg["value"] + agg["std"]
    agg["objective"] = agg["group"].map({g.label: g.objective for g in groups})
    return agg[cols]


def group_difference(df: pd.DataFrame, a: Group, b: Group, level: float = LEVEL) -> tuple[pd.DataFrame, int]:
    """Group a − group b per step, layer and variant, paired by seed (the seeds both groups have): the mean
    difference (`value`), its Student-t interval (`low`, `high`; NaN with fewer than 2 pairs) and `n` pairs with
    values at that step. Returns (frame, number of seed pairs)."""
    cols = ["step", "tokens_seen", "layer", "variant", "value", "low", "high", "n"]
    seeds_a = {s: r for r, s in zip(a.runs, a.seeds, strict=True) if s is not None}
    seeds_b = {s: r for r, s in zip(b.runs, b.seeds, strict=True) if s is not None}
    pairs = [(seeds_a[s], seeds_b[s]) for s in sorted(set(seeds_a) & set(seeds_b))]
    if not pairs:
        return pd.DataFrame(columns=cols), 0
    diffs = []
    for k, (ra, rb) in enumerate(pairs):
        left = df[df["run"] == ra][[*KEYS, "tokens_seen", "value"]]
        right = df[df["run"] == rb][[*KEYS, "value"]]
        joined = left.merge(right, on=KEYS, suffixes=("_a", "_b"))
        diffs.append(joined.assign(pair=k, diff=joined["value_a"] - joined["value_b"]))
    long = pd.concat(diffs, ignore_index=True)
    if long.empty:
        return pd.DataFrame(columns=cols), len(pairs)
    wide = long.pivot_table(index=KEYS, columns="pair", values="diff", aggfunc="first")
    mean, low, high, _ = t_intervals(wide.to_numpy(dtype=np.float64).T, level)
    out = wide.index.to_frame(index=False)
    out["value"], out["low"], out["high"] = mean, low, high
    out["n"] = np.isfinite(wide.to_numpy(dtype=np.float64)).sum(1)
    tokens = long.groupby(KEYS)["tokens_seen"].mean()
    out["tokens_seen"] = tokens.reindex(pd.MultiIndex.from_frame(out[KEYS])).to_numpy()
    return out[cols].sort_values(["variant", "layer", "step"]).reset_index(drop=True), len(pairs)


@named("table `onsets`")
@st.cache_data(show_spinner=False, max_entries=64)
def onset_rows(db: str, stamp: Stamp, metric: str, runs: tuple[str, ...], probe_hash: str | None = None
               ) -> pd.DataFrame:
    """The stored onsets of `metric` for `runs` (run, layer, variant, step, tokens_seen; no rows where the curve
    has no onset, or for a store written before onsets were stored)."""
    with open_store(db) as s:
        df = typed(s.onsets(probe_hash, run=list(runs), metric=metric), whole=("layer",),
                   numbers=("step", "tokens_seen"))
    cols = ["run", "layer", "variant", "step", "tokens_seen"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    return df[df["step"].notna()][cols].reset_index(drop=True)


@named("table `group_metrics`")
@st.cache_data(show_spinner=False, max_entries=64)
def group_rows(db: str, stamp: Stamp, probe_hash: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The store's group-scope rows (grp, step, tokens_seen, layer, metric, variant, value, n_runs) and the runs
    behind each group (grp, run, seed)."""
    with open_store(db) as s:
        rows, members = s.group_metrics(probe_hash=probe_hash), s.group_members(probe_hash)
    rows = typed(rows, whole=("step", "layer", "n_runs"), numbers=("value", "tokens_seen"))
    return rows, members
