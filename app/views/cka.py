"""CKA: step × step heatmaps per layer (how each layer's representation changes over training), layer × layer
heatmaps per snapshot, and the per-snapshot CKA summaries."""

from __future__ import annotations

import streamlit as st

from app import charts, ui
from app.data import store_arrays, store_tables
from app.definitions import describe, order_key

VARIANTS = {"debiased": "debiased (unbiased HSIC)", "biased": "biased"}
STEPS_POINTER = "dynamics.metrics.cka.cka_matrices"


def main() -> None:
    ui.store_page("CKA", "Linear CKA (debiased) between the representations of the same probe tokens: across "
                  "snapshots of one layer, and across layers of one snapshot.", "the CKA page", _body)


def _body(ctx: ui.Context) -> None:
    runs = ui.store_run_names(ctx)
    if not runs:
        return
    cols = st.columns([2, 2])
    run = cols[0].selectbox("Run", runs, key="cka:run")
    variant = cols[1].radio("Estimator", list(VARIANTS), format_func=VARIANTS.get, horizontal=True, key="cka:variant")
    fixed = cols[1].toggle("Colour scale 0 – 1", value=False, key="cka:fixed",
                           help="Off: the colours span the values shown, so small changes near 1 stay visible")
    domain = (0.0, 1.0) if fixed else None
    st.markdown("**Linear CKA** — HSIC(K, L) / √(HSIC(K, K) · HSIC(L, L)) with linear kernels K = XXᵀ, L = YYᵀ of "
                "the same tokens; debiased uses the unbiased HSIC estimator. Defined in "
                f"`{STEPS_POINTER}` (one pair: `dynamics.metrics.cka.linear_cka`).")

    st.subheader("Across snapshots (step × step)")
    with ui.part(ctx, f"the step × step CKA of {run}"):
        _across_steps(ctx, run, variant, domain)
    st.subheader("Across layers (layer × layer)")
    with ui.part(ctx, f"the layer × layer CKA of {run}"):
        _across_layers(ctx, run, variant, domain)
    with ui.part(ctx, f"the per-snapshot CKA summaries of {run}"):
        _summaries(ctx, run)


def _across_steps(ctx: ui.Context, run: str, variant: str, domain: tuple[float, float] | None) -> None:
    steps = store_arrays.cka_steps(ctx.db, ctx.stamp, run, variant, ctx.probe_hash)
    if steps.empty:
        st.info(f"No step × step CKA for {run} yet: the probe computes it after measuring all of a run's snapshots.")
        return
    layer = ui.layer_picker(steps["layer"].unique(), key="cka:steps-layer")
    one = steps[steps["layer"] == layer]
    ui.chart(charts.heatmap(one, x="step_a", y="step_b", title=f"{run}: layer {layer}, step × step ({variant})",
                            x_title="step", y_title="step", domain=domain), one, f"cka-steps-{run}-layer{layer}",
             key="cka:steps", stretch=False)
    if st.toggle("All layers as small multiples", value=False, key="cka:steps-grid"):
        ui.chart(charts.heatmap_grid(steps, x="step_a", y="step_b", title=f"{run}: step × step, every layer",
                                     domain=domain),
                 steps, f"cka-steps-{run}", key="cka:steps-all", stretch=False)


def _across_layers(ctx: ui.Context, run: str, variant: str, domain: tuple[float, float] | None) -> None:
    snaps = store_arrays.array_steps(ctx.db, ctx.stamp, "cka_layers", run, ctx.probe_hash)
    if not snaps:
        st.info(f"No layer × layer CKA stored for {run} (the geometry family writes it).")
        return
    step = snaps[0] if len(snaps) == 1 else int(st.select_slider("Snapshot (step)", options=snaps,
                                                                    value=snaps[-1], key=f"cka:step:{run}"))
    layers = store_arrays.cka_layers(ctx.db, ctx.stamp, run, step, variant, ctx.probe_hash)
    shown = variant
    if layers.empty and variant != "debiased":
        layers, shown = store_arrays.cka_layers(ctx.db, ctx.stamp, run, step, "debiased", ctx.probe_hash), "debiased"
        if not layers.empty:
            st.caption("The probe stores layer × layer CKA debiased only; showing that.")
    if layers.empty:
        st.info(f"No layer × layer CKA at step {step}.")
        return
    ui.chart(charts.heatmap(layers, x="layer_a", y="layer_b", title=f"{run}: step {step}, layer × layer ({shown})",
                            x_title="layer", y_title="layer", domain=domain, cell=36), layers,
             f"cka-layers-{run}-step{step}", key="cka:layers", stretch=False)


def _summaries(ctx: ui.Context, run: str) -> None:
    assert ctx.db is not None
    catalog = store_tables.metric_catalog(ctx.db, ctx.stamp, ctx.probe_hash)
    defs = store_tables.definitions(ctx.db, ctx.stamp)
    # the CKA page's metrics, and the layer-pair summaries (read off each snapshot's layer × layer CKA) of others
    shown = catalog[(catalog["page"] == "cka") | catalog["metric"].map(lambda m: m in defs and
                                                                       defs[m].scope == "layer_pair")]
    family = dict(zip(shown["metric"], shown["family"], strict=False))
    present = sorted(family, key=lambda m: order_key(m, defs))
    if not present:
        return
    st.subheader("Per-snapshot summaries")
    metric = st.selectbox("Summary", present, format_func=lambda m: describe(m, family[m], defs).label,
                          key="cka:summary")
    mdef = describe(metric, family[metric], defs)
    ui.definition(mdef)
    df = store_tables.metric_rows(ctx.db, ctx.stamp, metric, (run,), ctx.probe_hash)
    df = df[df["variant"] == "all"]
    if df.empty:
        st.info(f"No {mdef.label} for {run} yet.")
        return
    x = ui.x_field(ctx, df)
    ui.chart(charts.metric_lines(df, x=x, log_x=ctx.log_x, color="layer", title=f"{mdef.label}: {run}",
                                 y_title=mdef.label), df, f"{metric}-{run}", key="cka:summary-chart")


main()
