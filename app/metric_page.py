"""The layout shared by the Anchors, Context alignment and Geometry pages: one metric against training progress,
a layer at a time and all layers as small multiples, runs overlaid, the difference of two runs, and the
frequency-bin or distance breakdown where the metric has one."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, ui
from app.data import frames, seed_groups, store_tables, timeline
from app.definitions import PageDef, describe, distance, is_bin, order_key


def render(page: PageDef) -> None:
    """Draw the page for the metrics the store places on `page` (their stored definitions' page, or for a metric
    without one its family's) from the store the sidebar selected."""
    ui.store_page(page.title, page.intro, page.title, lambda ctx: _body(page, ctx))


def _body(page: PageDef, ctx: ui.Context) -> None:
    assert ctx.db is not None
    catalog = store_tables.metric_catalog(ctx.db, ctx.stamp, ctx.probe_hash)
    catalog = catalog[catalog["page"] == page.key]
    defs = store_tables.definitions(ctx.db, ctx.stamp)
    all_runs = list(store_tables.store_runs(ctx.db, ctx.stamp, ctx.probe_hash)["run"])
    if catalog.empty:
        st.info(f"This store has no {page.title.lower()} results yet. Measure them with "
                f"`python -m dynamics.probe RUN_DIR … --metrics {page.families[0]}` (a probe still running adds "
                "them as it goes; this page reloads).", icon=":material/hourglass_empty:")
        return
    metrics = sorted(catalog["metric"].unique(), key=lambda m: order_key(m, defs))
    family_of = dict(zip(catalog["metric"], catalog["family"], strict=False))
    top = st.columns([3, 2])
    metric = top[0].selectbox("Metric", metrics, key=f"{page.key}:metric",
                              format_func=lambda m: describe(m, family_of.get(m), defs).label)
    runs = top[1].multiselect("Runs", all_runs, default=all_runs, key=f"{page.key}:runs",
                              help="Runs measured on this probe set, overlaid for comparison")
    mdef = describe(metric, family_of.get(metric), defs)
    ui.definition(mdef)
    if not runs:
        st.info("Pick at least one run.")
        return
    df = store_tables.metric_rows(ctx.db, ctx.stamp, metric, tuple(runs), ctx.probe_hash)
    if df.empty:
        st.info(f"No values of {mdef.label} for these runs yet.")
        return
    variants = list(df["variant"].unique())
    main = _main_variant(variants, page.key)
    layer = ui.layer_picker(df["layer"].unique(), key=f"{page.key}:layer")
    x = ui.x_field(ctx, df)
    with ui.part(ctx, "the list of missing values"):
        gaps = frames.coverage(df[df["variant"] == main], store_tables.measured(ctx.db, ctx.stamp, ctx.probe_hash),
                               [family_of.get(metric, page.families[0])], runs)
        if gaps:
            st.caption("Missing values — " + "; ".join(gaps) + ".")
    shown = df[(df["variant"] == main) & (df["layer"] == layer)]
    suffix = "" if main == "all" else f" ({main})"
    names = ["Runs", "All layers", "Difference"]
    bins = sorted({v for v in variants if is_bin(v)})
    dists = [v for v in variants if distance(v) is not None]
    if bins:
        names.append("Frequency bins")
    if dists:
        names.append("By distance")
    tabs = dict(zip(names, st.tabs(names), strict=True))
    groups: list[seed_groups.Group] = []
    with ui.part(ctx, "the seed groups (runs are drawn one by one)"):
        groups = _groups(ctx, runs)
    with tabs["Runs"]:
        if groups:
            _group_chart(page, ctx, shown, groups, x, f"{mdef.label}{suffix}, layer {layer}", mdef.label, metric)
        else:
            onsets = _onsets(ctx, metric, runs, layer, main)
            spans = _phases(ctx, page, metric, runs, layer, main)
            ui.chart(charts.metric_lines(shown, x=x, log_x=ctx.log_x, title=f"{mdef.label}{suffix}, layer {layer}",
                                         y_title=mdef.label, colours=ui.run_colours(ctx.sources), onsets=onsets,
                                         phases=spans),
                     shown, f"{metric}-layer{layer}", key=f"{page.key}:runs-chart")
            if len(onsets):
                st.caption("◆ onset: the first measured snapshot at which the curve has covered half of its change "
                           "from the first to the last snapshot (`dynamics.results.onsets`).")
            if spans is not None and len(spans):
                st.caption(f"Shaded: {len(spans)} phase{'s' if len(spans) != 1 else ''} between change points of the "
                           "curve against log step (`dynamics.results.phases`; green rise, red fall, grey flat; step 0 "
                           "is left out).")
    with tabs["All layers"]:
        every = df[df["variant"] == main]
        ui.chart(charts.layer_grid(every, x=x, log_x=ctx.log_x, title=f"{mdef.label}{suffix}, every layer",
                                   colours=ui.run_colours(ctx.sources)),
                 every, f"{metric}-layers", key=f"{page.key}:grid", stretch=False)
    with tabs["Difference"]:
        if groups:
            _group_difference(page, df[df["variant"] == main], groups, layer, x, ctx, mdef.label, metric)
        else:
            _difference(page, df[df["variant"] == main], runs, layer, x, ctx, mdef.label, metric)
    if bins:
        with tabs["Frequency bins"]:
            binned = df[df["variant"].isin(bins) & (df["layer"] == layer)]
            st.caption("Token-frequency bins by training-corpus counts (frequent = the most frequent tokens).")
            ui.chart(charts.metric_lines(binned, x=x, log_x=ctx.log_x, color="variant", dash="run",
                                         title=f"{mdef.label} by frequency bin, layer {layer}", y_title=mdef.label),
                     binned, f"{metric}-bins-layer{layer}", key=f"{page.key}:bins")
    if dists:
        with tabs["By distance"]:
            curves = frames.with_distance(df[df["layer"] == layer])
            st.caption("One line per snapshot (colour = step): similarity against the distance between the tokens.")
            ui.chart(charts.distance_lines(curves, title=f"{mdef.label}, layer {layer}"), curves,
                     f"{metric}-distance-layer{layer}", key=f"{page.key}:distance", stretch=False)
    with ui.part(ctx, "the notes"):
        ui.show_notes(ctx, sorted({*page.families, *catalog["family"]}), runs)


def _onsets(ctx: ui.Context, metric: str, runs: list[str], layer: int, variant: str) -> pd.DataFrame:
    """The stored onsets drawn on the curves; none (with a warning naming the store) when they cannot be read."""
    with ui.part(ctx, "the onset markers"):
        onsets = seed_groups.onset_rows(ctx.db, ctx.stamp, metric, tuple(runs), ctx.probe_hash)
        return onsets[(onsets["layer"] == layer) & (onsets["variant"] == variant)]
    return pd.DataFrame(columns=["run", "layer", "variant", "step", "tokens_seen"])


def _phases(ctx: ui.Context, page: PageDef, metric: str, runs: list[str], layer: int, variant: str
            ) -> pd.DataFrame | None:
    """The stored phases of the one run shown, when the toggle asks for them (None with several runs: spans of
    several runs on one chart would overlap)."""
    if len(runs) != 1 or not st.toggle("Phases", value=True, key=f"{page.key}:phases",
                                       help="Shade the curve's phases: stretches between change points against log "
                                            "step, found by the probe (`dynamics.results.phases`)"):
        return None
    with ui.part(ctx, "the phase spans"):
        spans = timeline.phase_rows(ctx.db, ctx.stamp, metric, tuple(runs), ctx.probe_hash)
        return spans[(spans["layer"] == layer) & (spans["variant"] == variant)]
    return None


def _main_variant(variants: list[str], key: str) -> str:
    """"all" when present; for a distance breakdown a chosen distance; else the first variant."""
    if "all" in variants:
        return "all"
    dists = sorted((v for v in variants if distance(v) is not None), key=lambda v: distance(v) or 0)
    if dists:
        return str(st.select_slider("Distance d", options=dists, value=dists[0], key=f"{key}:distance-pick",
                                    format_func=lambda v: str(distance(v))))
    return sorted(variants)[0]


def _difference(page: PageDef, df: pd.DataFrame, runs: list[str], layer: int, x: str, ctx: ui.Context,
                label: str, metric: str) -> None:
    if len(runs) < 2:
        st.info("Select two runs to see their difference.")
        return
    picked = _pick_two(runs, "Run", f"{page.key}:diff")
    if picked is None:
        return
    a, b = picked
    diff = frames.difference(df, a, b)
    if diff.empty:
        st.info(f"{a} and {b} have no measured step in common.")
        return
    at_layer = diff[diff["layer"] == layer]
    st.caption(f"{label}: {a} − {b}, at the steps both runs measured ({diff['step'].nunique()}).")
    ui.chart(charts.difference_lines(at_layer, x=x, log_x=ctx.log_x, title=f"{a} − {b}, layer {layer}",
                                     y_title=f"Δ {label}"), at_layer, f"{metric}-diff-layer{layer}",
             key=f"{page.key}:diff-line")
    ui.chart(charts.heatmap(diff, x="step", y="layer", title=f"{a} − {b}, every layer", x_title="step",
                            y_title="layer", diverging=True),
             diff, f"{metric}-diff-layers", key=f"{page.key}:diff-map", stretch=False)


def _groups(ctx: ui.Context, runs: list[str]) -> list[seed_groups.Group]:
    """The seed groups of the selected runs when the sidebar asks for groups, else []."""
    if not ctx.groups or ctx.db is None:
        return []
    return seed_groups.restrict(seed_groups.store_groups(ctx.db, ctx.stamp), runs)


def _group_chart(page: PageDef, ctx: ui.Context, shown: pd.DataFrame, groups: list[seed_groups.Group], x: str,
                 title: str, label: str, metric: str) -> None:
    frame = seed_groups.group_frame(shown, groups, ctx.band)
    ui.chart(charts.group_lines(frame, x=x, log_x=ctx.log_x, title=title, y_title=label,
                                colours=ui.group_colours(groups)),
             frame, f"{metric}-groups", key=f"{page.key}:groups-chart")
    sizes = ", ".join(f"{g.label}: {g.size} run{'s' if g.size > 1 else ''}" for g in groups)
    st.caption(f"Mean over each group's runs; band = {seed_groups.BANDS[ctx.band]}. {sizes}.")


def _group_difference(page: PageDef, df: pd.DataFrame, groups: list[seed_groups.Group], layer: int, x: str,
                      ctx: ui.Context, label: str, metric: str) -> None:
    if len(groups) < 2:
        st.info("Select runs of two seed groups to see their difference.")
        return
    labels = [g.label for g in groups]
    by = {g.label: g for g in groups}
    picked = _pick_two(labels, "Group", f"{page.key}:gdiff")
    if picked is None:
        return
    a, b = picked
    diff, pairs = seed_groups.group_difference(df, by[a], by[b])
    if diff.empty:
        st.info(f"{a} and {b} have no seed in common with values at the same steps: nothing to pair.")
        return
    at_layer = diff[diff["layer"] == layer]
    st.caption(f"{label}: {a} − {b} paired by seed ({pairs} pair{'s' if pairs != 1 else ''}), mean and Student-t 95% "
               "interval over the pairs at each step."
               + (f" With {pairs} seeds the interval is wide by design: it is honest about how little {pairs} "
                  "seeds can tell." if pairs <= 5 else ""))
    ui.chart(charts.interval_lines(at_layer, x=x, log_x=ctx.log_x, title=f"{a} − {b}, layer {layer}",
                                   y_title=f"Δ {label}"), at_layer, f"{metric}-gdiff-layer{layer}",
             key=f"{page.key}:gdiff-line")


def _pick_two(options: list[str], what: str, key: str) -> tuple[str, str] | None:
    """Two selectboxes side by side ("{what} a", "{what} b"); None (with a message) when the same is picked twice."""
    cols = st.columns(2)
    a = cols[0].selectbox(f"{what} a", options, index=0, key=f"{key}-a")
    b = cols[1].selectbox(f"{what} b", options, index=1, key=f"{key}-b")
    if a == b:
        st.info(f"Pick two different {what.lower()}s.")
        return None
    return a, b
