"""The Timeline page: what is learned first. Every curve's onset (`dynamics.results.onsets`) per seed group — the
geometric mean onset step over the seeds with an onset and its Student-t interval — one row per metric, sorted by
the earliest group's onset, the groups (MLM and TACO) side by side in their palette colours."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from app import charts, ui
from app.data import seed_groups, store_tables, timeline
from app.definitions import describe

LAST = "last layer of each metric"


def main() -> None:
    ui.store_page("Timeline", "The order of learning: for every metric, the step at which its curve has covered half "
                  "of its change (its onset), per seed group, earliest first.", "the Timeline page", _body)


def _body(ctx: ui.Context) -> None:
    assert ctx.db is not None
    runs = ui.store_run_names(ctx)
    if not runs:
        return
    top = st.columns([3, 2])
    picked = top[0].multiselect("Runs", runs, default=runs, key="timeline:runs",
                                help="Runs are grouped by seed (configs equal but for the seed); a run without "
                                     "seeds is a group of its own")
    table = timeline.group_onset_table(ctx.db, ctx.stamp, ctx.probe_hash, tuple(picked))
    table = table[table["variant"] == "all"]
    if table.empty:
        st.info("No onsets for these runs yet: the probe stores them after each run's run-level families.",
                icon=":material/hourglass_empty:")
        return
    layers = sorted(int(v) for v in table["layer"].unique())
    layer = top[1].selectbox("Layer", [LAST, *layers], key="timeline:layer",
                             help="Each metric at its last stored layer, or every metric stored at one layer")
    shown = _at_layer(table, layer)
    only = st.toggle("Only curves with an onset in every group", value=False, key="timeline:complete")
    defs = store_tables.definitions(ctx.db, ctx.stamp)
    shown = shown.assign(label=[f"{describe(m, None, defs).label} (L{int(k)})"
                                for m, k in zip(shown["metric"], shown["layer"], strict=True)])
    order = shown[shown["n"] > 0].groupby("label")["mean"].min().sort_values()
    if only:
        found = shown[shown["n"] > 0].groupby("label")["group"].nunique()
        order = order[order.index.isin(found[found == shown["group"].nunique()].index)]
    shown = shown[shown["label"].isin(order.index)]
    shown = shown.assign(rank=shown["label"].map({k: i for i, k in enumerate(order.index)})).sort_values(
        ["rank", "group"])
    if shown.empty:
        st.info("No curve here has an onset (every curve is flat or has a single value).")
        return
    groups = seed_groups.restrict(seed_groups.store_groups(ctx.db, ctx.stamp), picked)
    ui.chart(charts.timeline(shown, title="Onsets, earliest first", colours=ui.group_colours(groups)), shown,
             "timeline", key="timeline:chart")
    sizes = ", ".join(f"{g.label}: {g.size} run{'s' if g.size > 1 else ''}" for g in groups)
    smallest = min((g.size for g in groups), default=0)
    st.caption("Point: the geometric mean onset step over the group's runs whose curve has an onset (the mean of "
               "log10 step); bar: its Student-t 95% interval over those seeds (needs two of them). Runs whose curve "
               "has no onset (flat, or one value) are left out and counted (n of runs in the table). Sorted by the "
               f"earliest group's onset. Groups — {sizes}."
               + (" With 3 seeds the interval is wide by design." if 2 <= smallest <= 5 else ""))
    st.dataframe(_table(shown), hide_index=True, width="stretch")


def _at_layer(table: pd.DataFrame, layer: object) -> pd.DataFrame:
    """The rows at `layer`, or each metric's rows at its last stored layer (`LAST`)."""
    if layer == LAST:
        last = table.groupby("metric")["layer"].transform("max")
        return table[table["layer"] == last]
    return table[table["layer"] == layer]


def _table(shown: pd.DataFrame) -> pd.DataFrame:
    """The chart's numbers, one row per curve and group."""
    def cell(r: pd.Series) -> str:
        if r["n"] == 0:
            return f"– (n = 0 of {int(r['runs'])})"
        middle = f"{r['step']:.4g}"
        if math.isfinite(r["step_low"]) and math.isfinite(r["step_high"]):
            middle += f" ({r['step_low']:.4g} – {r['step_high']:.4g})"
        return f"{middle}, n = {int(r['n'])} of {int(r['runs'])}"

    out = shown.assign(onset=shown.apply(cell, axis=1))
    wide = out.pivot_table(index=["rank", "label"], columns="group", values="onset", aggfunc="first")
    return wide.reset_index().drop(columns="rank").rename(columns={"label": "curve"})


main()
