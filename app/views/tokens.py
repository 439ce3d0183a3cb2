"""Token explorer: 2-D projections of a fixed sample of probe tokens (h per layer, e, and g = h − e where stored),
one snapshot at a time with a step slider to watch them move."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, ui
from app.data import store_arrays

VIEWS = {"h": "h", "e": "e", "g": "g = h − e"}
COLOUR = {"sequence": "sequence", "freq_bin": "token frequency"}
POINTER = "dynamics.metrics.projection.pca2"
GRID_STEPS = 8


def main() -> None:
    ui.store_page("Token explorer", "Each point is one token of the probe set's fixed sample; hover to read it. The "
                  "same tokens at every snapshot, so the slider shows how the space forms over training.",
                  "the token explorer", _body)


def _body(ctx: ui.Context) -> None:
    runs = ui.store_run_names(ctx)
    if not runs:
        return
    st.markdown("**2-D projection** — the first two principal components of the sample's vectors at one layer and "
                f"snapshot (signs fixed by positive skew). Defined in `{POINTER}`.")
    top = st.columns([2, 3, 2])
    run = top[0].selectbox("Run", runs, key="tokens:run")
    view = top[1].radio("Vectors", list(VIEWS), format_func=VIEWS.get, horizontal=True, key="tokens:view",
                        help="h: hidden state of a layer; e: embedding-layer output (layer 0); g = h − e: context vector")
    colour = top[2].radio("Colour by", list(COLOUR), format_func=COLOUR.get, horizontal=True, key="tokens:colour")
    steps = store_arrays.array_steps(ctx.db, ctx.stamp, "projection", run, ctx.probe_hash)
    if not steps:
        st.info(f"No projections stored for {run} (the geometry family writes them).")
        return
    step = steps[0] if len(steps) == 1 else int(st.select_slider("Snapshot (step)", options=steps, value=steps[-1],
                                                                  key=f"tokens:step:{run}"))
    points = store_arrays.projection(ctx.db, ctx.stamp, run, step, ctx.probe_hash)
    mine = points[points["view"] == view]
    if mine.empty:
        if view == "g":
            st.info("This store has no projection of g = h − e (the probe stores `xy_g` from a later version on); "
                    "showing h.", icon=":material/info:")
            view, mine = "h", points[points["view"] == "h"]
        if mine.empty:
            st.info(f"No projection of {run} at step {step}.")
            return
    layers = sorted(mine["layer"].unique())
    layer = ui.layer_picker(layers, key="tokens:layer") if view != "e" else 0
    shown = mine[mine["layer"] == layer]
    seqs = sorted(shown["sequence"].unique())
    if len(seqs) > 20 and colour == "sequence":
        keep = st.slider("Sequences shown", 1, len(seqs), min(20, len(seqs)), key="tokens:sequences",
                         help="Colours repeat beyond 20 sequences; show the first few to tell them apart.")
        shown = shown[shown["sequence"].isin(seqs[:keep])]
    ex = shown[["explained_x", "explained_y"]].iloc[0].to_numpy(dtype=float)
    titles = [f"PC {i + 1}" + ("" if np.isnan(v) else f" ({v:.0%})") for i, v in enumerate(ex)]
    ui.chart(charts.projection_scatter(shown, color_by=colour, title=f"{run}: {view} at layer {layer}, step {step}",
                                       x_title=titles[0], y_title=titles[1]), shown,
             f"projection-{run}-{view}-layer{layer}-step{step}", key="tokens:scatter")
    if len(steps) > 1 and st.toggle(f"Across snapshots (up to {GRID_STEPS}, evenly spaced)", value=False,
                                    key="tokens:grid"):
        with ui.part(ctx, f"the projections of {run} across snapshots"):
            _grid(ctx, run, steps, view, layer, colour, shown["point"].unique())


def _grid(ctx: ui.Context, run: str, steps: list[int], view: str, layer: int, colour: str,
          points: np.ndarray) -> None:
    assert ctx.db is not None
    picks = [steps[int(i)] for i in np.unique(np.linspace(0, len(steps) - 1, GRID_STEPS).round().astype(int))]
    parts = []
    for s in picks:
        p = store_arrays.projection(ctx.db, ctx.stamp, run, s, ctx.probe_hash)
        p = p[(p["view"] == view) & (p["layer"] == layer) & p["point"].isin(points)]
        parts.append(p.assign(step=s))
    frame = pd.concat(parts, ignore_index=True)
    ui.chart(charts.projection_grid(frame, facet="step", color_by=colour, title=f"{run}: layer {layer} over training"),
             frame, f"projection-{run}-{view}-layer{layer}-steps", key="tokens:grid-chart", stretch=False)


main()
