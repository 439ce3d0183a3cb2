"""The Attention page: the attention and copying families' per-layer curves (layout in `app.metric_page`: runs,
seed groups, difference of two runs, all layers) and a head × step heatmap of one per-head quantity at one layer,
so the heads that form (induction, duplicate-token, previous-token heads) can be seen appearing."""

from __future__ import annotations

import streamlit as st

from app import charts, metric_page, ui
from app.data import head_arrays
from app.definitions import PAGES


def heads_section(ctx: ui.Context) -> None:
    """The head × step heatmap for a chosen run, quantity and layer (nothing when no per-head array is stored)."""
    if ctx.db is None:
        return
    quantities = head_arrays.quantities(ctx.db, ctx.stamp, ctx.probe_hash)
    runs = ui.store_run_names(ctx) if quantities else []
    if not runs:
        return
    st.subheader("Heads over training")
    st.caption("Each head's own value (the curves above take the mean or the best head of a layer), from the "
               "per-head arrays the attention and copying families store at every snapshot.")
    cols = st.columns([2, 2, 1])
    run = cols[0].selectbox("Run", runs, key="attention:heads-run")
    quantity = cols[1].selectbox("Quantity", quantities, format_func=head_arrays.QUANTITIES.get,
                                 key="attention:heads-quantity")
    df = head_arrays.head_frame(ctx.db, ctx.stamp, run, quantity, ctx.probe_hash)
    if df.empty:
        st.info(f"No per-head {head_arrays.QUANTITIES[quantity]} for {run}.")
        return
    layers = sorted(int(x) for x in df["layer"].unique())
    layer = cols[2].selectbox("Layer", layers, index=len(layers) - 1, key="attention:heads-layer")
    shown = df[df["layer"] == layer].drop(columns=["layer"])
    ui.chart(charts.heatmap(shown, x="step", y="head", title=f"{head_arrays.QUANTITIES[quantity]}, layer {layer}, "
                            f"{run}", x_title="step", y_title="head"),
             shown, f"{run}-{quantity}-layer{layer}-heads", key="attention:heads-chart", stretch=False)


metric_page.render(PAGES["attention"])
with ui.guard("the head × step heatmap"):
    heads_section(ui.context())
