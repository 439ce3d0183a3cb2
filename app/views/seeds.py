"""Seeds & LLC: how alike the seeds of one recipe are over training (group scope: the JSD between their output
distributions, CKA between their representations; the store's `group_metrics`), and the local learning coefficient
of each run's snapshots (the opt-in `llc` family) with its spread over SGLD chains and the estimator's warnings."""

from __future__ import annotations

import altair as alt
import numpy as np
import streamlit as st

from app import charts, ui
from app.data import store_tables
from app.data.seed_groups import group_rows
from app.definitions import describe
from dynamics.results.llc_checks import warnings

GROUP_METRICS = ("seed_jsd", "seed_cka")


def main() -> None:
    ui.store_page("Seeds & LLC", "Agreement between the seeds of one recipe at each step (JSD between their output "
                  "distributions, CKA between their representations), and the local learning coefficient of each "
                  "run's snapshots.", "the Seeds & LLC page", _body)


def _body(ctx: ui.Context) -> None:
    assert ctx.db is not None
    defs = store_tables.definitions(ctx.db, ctx.stamp)
    st.subheader("Agreement between seeds")
    with ui.part(ctx, "the agreement between seeds"):
        _agreement(ctx, defs)
    st.subheader("Local learning coefficient")
    with ui.part(ctx, "the local learning coefficient"):
        _llc(ctx, defs)


def _agreement(ctx: ui.Context, defs: dict) -> None:
    rows, members = group_rows(ctx.db, ctx.stamp, ctx.probe_hash)
    if rows.empty:
        st.info("No seed-agreement rows in this store. Probe two or more runs that differ only in seed together "
                "(`python -m dynamics.probe RUN_s1 RUN_s2 …`, with the anchors and geometry families).",
                icon=":material/hourglass_empty:")
        return
    seeds = members.groupby("grp")["run"].agg(list)
    rows = rows.assign(group=rows["grp"].map(lambda g: f"{g} ({len(seeds.get(g, []))} seeds)"))
    st.caption("Groups: " + "; ".join(f"**{g}**: {', '.join(runs)}" for g, runs in seeds.items())
               + ". Each value is the mean over the group's pairs of seeds.")
    metric = st.radio("Metric", [m for m in GROUP_METRICS if m in set(rows["metric"])], horizontal=True,
                      key="seeds:metric", format_func=lambda m: describe(m, "agreement", defs).label)
    ui.definition(describe(metric, "agreement", defs))
    df = rows[rows["metric"] == metric]
    layer = ui.layer_picker(df["layer"].unique(), key="seeds:layer")
    shown = df[df["layer"] == layer]
    x = ui.x_field(ctx, shown)
    unit = describe(metric, "agreement", defs).unit
    ui.chart(charts.metric_lines(shown, x=x, log_x=ctx.log_x, color="group", y_title=unit,
                                 title=f"{describe(metric, 'agreement', defs).label} (layer {layer})"),
             shown, f"{metric}-layer{layer}", key="seeds:chart")


def _llc(ctx: ui.Context, defs: dict) -> None:
    df = store_tables.metric_rows(ctx.db, ctx.stamp, "llc", None, ctx.probe_hash)
    if df.empty:
        st.info("No local learning coefficient in this store: it is opt-in (`--metrics anchors,context,geometry,llc`, "
                "minutes per snapshot; the `--llc-*` flags set the sampler).", icon=":material/hourglass_empty:")
        return
    ui.definition(describe("llc", "llc", defs))
    runs = sorted(df["run"].unique())
    chosen = st.multiselect("Runs", runs, default=runs, key="seeds:llc_runs")
    df = df[df["run"].isin(chosen)]
    wide = df.set_index(["run", "step", "variant"])["value"].unstack("variant").reset_index()
    mean = df[df["variant"] == "all"]
    x = ui.x_field(ctx, mean)
    chains = df[df["variant"].str.startswith("chain_")]
    chart = charts.metric_lines(mean, x=x, log_x=ctx.log_x, y_title="λ̂ (mean over chains)",
                                title="LLC: mean over chains (lines) and each chain (points)")
    if len(chains):
        chart = chart + alt.Chart(chains).mark_point(size=18, opacity=0.5).encode(
            x=f"{x}:Q", y="value:Q", color=alt.Color("run:N", scale=charts.run_scale(mean)))
    ui.chart(chart, df, "llc", key="seeds:llc_chart")
    table = wide.rename(columns={"all": "mean"})
    table["warnings"] = ["; ".join(warnings({k: getattr(r, k, np.nan) for k in ("all", "sd", "drift")}))
                         for r in wide.itertuples(index=False)]
    cols = [c for c in ("run", "step", "mean", "sd", "drift", "warnings") if c in table]
    st.dataframe(table[cols], hide_index=True)


main()
