"""Chart builders: pure functions from tidy DataFrames (as `app.data` returns them) to Altair charts.

Conventions: colour = run unless a chart breaks a metric down (then colour = bin, layer or step and the stroke
dash = run); the x axis is `step` or `tokens_seen`, on a symmetric-log scale when asked (step 0 stays on it).
Run colours come from `dynamics.results.palette` (the probe's figures use the same): pass `colours`, the mapping of every
run the app knows (`ui.run_colours`), so that a run has one colour on every page whatever is selected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import altair as alt
import pandas as pd

from app.definitions import BIN_ORDER
from dynamics.results import palette

# Charts embed their data; the app's frames stay small (series are thinned), but a 13-layer grid of 4 runs ×
# 100 snapshots exceeds Altair's default guard of 5,000 rows.
alt.data_transformers.disable_max_rows()

X_TITLES = {"step": "Step", "tokens_seen": "Tokens seen"}
QUANTITY_TITLES = {"loss": "Loss", "mlm_loss": "MLM loss", "tc_loss": "TC loss", "mlm_accuracy": "MLM accuracy",
                   "lr": "Learning rate", "tokens_per_s": "Tokens/s", "grad_norm": "Gradient norm",
                   "elapsed_s": "Elapsed (s)"}
LINE_HEIGHT = 300
# Phase spans (`phase_spans`) by direction (`dynamics.results.phases`).
DIRECTION_COLOURS = {"rise": "#2ca02c", "fall": "#d62728", "flat": "#9e9e9e"}
CELL = (170, 120)


def log_ticks(high: float) -> list[float]:
    """Tick values for a symmetric-log axis from 0 to `high`: 0, then 1, 2, 5 × 10^k (only 10^k past 9 ticks), and
    `high` itself when it lies well past the last of those."""
    ticks: list[float] = [0.0]
    if not high or high != high or high < 1:
        return ticks
    k = 0
    while 10**k <= high:
        ticks += [m * 10**k for m in (1, 2, 5) if m * 10**k <= high]
        k += 1
    if len(ticks) > 9:
        ticks = [0.0] + [t for t in ticks[1:] if str(int(t)).startswith("1")]
    if high >= 1.5 * ticks[-1]:
        ticks.append(int(high))  # label the last step too (e.g. 0, 1, 2, 5, 10, 20, 40)
    return [float(t) for t in ticks]


def _x(x: str, log_x: bool, high: float | None = None, title: str | None = None) -> alt.X:
    """The x channel; with `log_x` a symmetric-log scale (step 0 stays on it) with ticks at 1, 2, 5 × 10^k."""
    title = title or X_TITLES.get(x, x)
    if log_x:
        # A label expression, not `format`: Vega derives an SI prefix for every tick from the domain ("0k", "0k",
        # "1k" for 1, 10, 1000) when a symlog axis is formatted through the scale.
        axis = alt.Axis(labelExpr="format(datum.value, '~s')", values=log_ticks(high) if high is not None else alt.Undefined)
        return alt.X(f"{x}:Q", title=title, scale=alt.Scale(type="symlog"), axis=axis)
    return alt.X(f"{x}:Q", title=title, scale=alt.Scale(zero=False), axis=alt.Axis(format="~s"))


def _high(df: pd.DataFrame, x: str) -> float | None:
    values = pd.to_numeric(df[x], errors="coerce") if x in df else pd.Series(dtype=float)
    return float(values.max()) if values.notna().any() else None


def _y(title: str, height: int, field: str = "value", zero: bool = False) -> alt.Y:
    """The y channel. The title is cut (with an ellipsis) to less than the plot's height: a longer rotated title
    would make Streamlit's fit-to-height layout shrink the plot and clip the chart's title."""
    return alt.Y(f"{field}:Q", title=title, scale=alt.Scale(zero=zero), axis=alt.Axis(titleLimit=max(40, height - 120)))


def _tooltip(df: pd.DataFrame, *extra: str, fmt: str = ".4f") -> list[alt.Tooltip]:
    fields = [c for c in ("run", "step", "tokens_seen", "layer", "variant", *extra) if c in df]
    out = [alt.Tooltip(f"{c}:N" if c in ("run", "variant") else f"{c}:Q", title=c) for c in fields]
    return out + [alt.Tooltip("value:Q", title="value", format=fmt)]


def run_scale(df: pd.DataFrame, colours: Mapping[str, str] | None = None, field: str = "run") -> alt.Scale:
    """The colour scale of the runs in `df[field]`: domain their names (sorted), range their `colours` (labels
    without one get unused "other" shades, `palette.colours_for`). Without `colours`, the palette over the runs
    in `df` (objective from an `objective` column where there is one): a fallback, stable only for that frame."""
    domain = sorted(str(v) for v in df[field].dropna().unique()) if field in df else []
    if colours is None:
        pairs = df[[field, "objective"]].drop_duplicates() if "objective" in df else df[[field]].assign(objective=None)
        colours = palette.run_colours(zip(pairs[field].astype(str), pairs["objective"], strict=True))
    return alt.Scale(domain=domain, range=palette.colours_for(domain, colours))


def _order(values: Sequence[str]) -> list[str]:
    """Frequency bins first in their natural order, anything else after, by name."""
    known = [b for b in BIN_ORDER if b in values]
    return known + sorted(v for v in set(values) if v not in BIN_ORDER)


def metric_lines(df: pd.DataFrame, *, x: str = "step", log_x: bool = False, title: str = "", y_title: str = "value",
                 color: str = "run", dash: str | None = None, height: int = LINE_HEIGHT,
                 colours: Mapping[str, str] | None = None, onsets: pd.DataFrame | None = None,
                 phases: pd.DataFrame | None = None) -> alt.Chart:
    """One metric against `x`, a line per `color` value (per `color` × `dash` when `dash` is given); runs in
    their palette `colours` when `color` is "run". `onsets` (run, step: `app.data.seed_groups.onset_rows` at the
    drawn layer and variant) are drawn as diamonds on their run's line; `phases` (start_step, end_step,
    direction: `app.data.timeline.phase_rows` of one run at the drawn layer and variant) as shaded spans under the
    curve, coloured by direction."""
    if color == "run":
        scale = run_scale(df, colours)
    else:
        scale = alt.Scale(domain=_order(list(df[color].dropna().unique())) if color == "variant"
                          else sorted(df[color].dropna().unique()))
    enc: dict = {
        "x": _x(x, log_x, _high(df, x)),
        "y": _y(y_title, height),
        "color": alt.Color(f"{color}:N", title=color, scale=scale),
        "tooltip": _tooltip(df),
    }
    if dash:
        enc["strokeDash"] = alt.StrokeDash(f"{dash}:N", title=dash)
    base = alt.Chart(df).encode(**enc)
    chart = base.mark_line(strokeWidth=2) + base.mark_point(size=28, filled=True)
    if onsets is not None and len(onsets) and color == "run":
        marks = onsets[["run", "step"]].merge(df, on=["run", "step"])
        if len(marks):
            chart += alt.Chart(marks).mark_point(shape="diamond", size=160, filled=True, stroke="black",
                                                 strokeWidth=1).encode(
                x=enc["x"], y=enc["y"], color=enc["color"],
                tooltip=[alt.Tooltip("run:N"), alt.Tooltip("step:Q", title="onset step"),
                         alt.Tooltip("value:Q", format=".4f")])
    if phases is not None and len(phases):
        chart = phase_spans(phases, df, x, log_x) + chart
    return chart.properties(title=title, height=height)


def phase_spans(phases: pd.DataFrame, df: pd.DataFrame, x: str = "step", log_x: bool = False) -> alt.Chart:
    """Shaded spans, one per phase (start_step → end_step, in `x` units: steps, or the tokens seen that `df` records
    at those steps), filled by direction (`DIRECTION_COLOURS`); meant to be layered under a curve."""
    spans = phases.assign(x0=phases["start_step"].astype(float), x1=phases["end_step"].astype(float))
    if x != "step":
        at = df.groupby("step")[x].mean()
        spans = spans.assign(x0=spans["start_step"].map(at), x1=spans["end_step"].map(at)).dropna(subset=["x0", "x1"])
    scale = alt.Scale(type="symlog") if log_x else alt.Scale(zero=False)
    fill = alt.Fill("direction:N", title="phase", scale=alt.Scale(domain=list(DIRECTION_COLOURS),
                                                                  range=list(DIRECTION_COLOURS.values())))
    return alt.Chart(spans).mark_rect(opacity=0.14).encode(
        x=alt.X("x0:Q", scale=scale, title=X_TITLES.get(x, x)), x2="x1:Q", fill=fill,
        tooltip=[alt.Tooltip("phase:Q"), alt.Tooltip("direction:N"), alt.Tooltip("start_step:Q", title="from step"),
                 alt.Tooltip("end_step:Q", title="to step"), alt.Tooltip("size:Q", title="change", format=".4g")])


def timeline(df: pd.DataFrame, *, title: str = "", colours: Mapping[str, str] | None = None,
             row_height: int = 26) -> alt.LayerChart:
    """The order of learning: one row per curve (`label`, rows in the frame's order), x = onset step on a log
    scale; per seed group (`group`, side by side within a row) a point at the geometric mean onset (`step`) and a
    bar over its interval (`step_low`–`step_high`, where there is one). `df`: `app.data.timeline.group_onset_table`
    rows with a `label` column."""
    rows = list(dict.fromkeys(df["label"]))
    groups = sorted(str(g) for g in df["group"].dropna().unique())
    known = colours if colours is not None else palette.run_colours(
        zip(df["group"].astype(str), df["objective"], strict=True))
    color = alt.Color("group:N", title="group", scale=alt.Scale(domain=groups, range=palette.colours_for(groups, known)))
    y = alt.Y("label:N", sort=rows, title=None, axis=alt.Axis(labelLimit=320))
    x = alt.X("step:Q", scale=alt.Scale(type="log"), title="onset step (log scale)")
    base = alt.Chart(df).encode(y=y, yOffset=alt.YOffset("group:N", scale=alt.Scale(domain=groups)), color=color)
    tip = [alt.Tooltip("label:N", title="curve"), alt.Tooltip("group:N"),
           alt.Tooltip("step:Q", title="mean onset step (geometric)", format=".4g"),
           alt.Tooltip("step_low:Q", title="interval from", format=".4g"),
           alt.Tooltip("step_high:Q", title="interval to", format=".4g"), alt.Tooltip("n:Q", title="seeds with an onset"),
           alt.Tooltip("runs:Q", title="runs")]
    bars = base.transform_filter("isValid(datum.step_low) && isValid(datum.step_high)").mark_rule(
        strokeWidth=3, opacity=0.7).encode(x=alt.X("step_low:Q", scale=alt.Scale(type="log"),
                                                   title="onset step (log scale)"), x2="step_high:Q")
    points = base.transform_filter("isValid(datum.step)").mark_point(size=60, filled=True).encode(x=x, tooltip=tip)
    return alt.layer(bars, points).properties(title=title, height=max(120, row_height * len(rows)))


def group_lines(df: pd.DataFrame, *, x: str = "step", log_x: bool = False, title: str = "", y_title: str = "value",
                height: int = LINE_HEIGHT, colours: Mapping[str, str] | None = None) -> alt.LayerChart:
    """Seed groups (`app.data.seed_groups.group_frame`): each group's mean against `x` as a line in its colour, its
    band (`low`–`high`) shaded."""
    color = alt.Color("group:N", title="group", scale=run_scale(df, colours, "group"),
                      legend=alt.Legend(symbolOpacity=1))
    base = alt.Chart(df).encode(x=_x(x, log_x, _high(df, x)), color=color)
    y = _y(y_title, height)
    tip = [alt.Tooltip("group:N"), alt.Tooltip("step:Q"), alt.Tooltip("value:Q", title="mean", format=".4f"),
           alt.Tooltip("low:Q", format=".4f"), alt.Tooltip("high:Q", format=".4f"), alt.Tooltip("n:Q", title="runs")]
    return alt.layer(
        base.mark_area(opacity=0.2).encode(y=_y(y_title, height, field="low"), y2="high:Q"),
        base.mark_line(strokeWidth=2).encode(y=y),
        base.mark_point(size=28, filled=True).encode(y=y, tooltip=tip),
    ).properties(title=title, height=height)


def interval_lines(diff: pd.DataFrame, *, x: str = "step", log_x: bool = False, title: str = "",
                   y_title: str = "a − b", height: int = 260) -> alt.LayerChart:
    """A mean difference against `x` with its interval (`low`–`high`) shaded, and the zero line."""
    base = alt.Chart(diff).encode(x=_x(x, log_x, _high(diff, x)))
    tip = [alt.Tooltip("step:Q"), alt.Tooltip("value:Q", title="mean difference", format=".4f"),
           alt.Tooltip("low:Q", format=".4f"), alt.Tooltip("high:Q", format=".4f"), alt.Tooltip("n:Q", title="pairs")]
    zero = alt.Chart(pd.DataFrame({"zero": [0.0]})).mark_rule(color="gray", strokeDash=[4, 4]).encode(y="zero:Q")
    band = base.transform_filter("isValid(datum.low) && isValid(datum.high)").mark_area(opacity=0.25).encode(
        y=_y(y_title, height, field="low"), y2="high:Q")
    return alt.layer(zero, band, base.mark_line(strokeWidth=2).encode(y=_y(y_title, height)),
                     base.mark_point(size=28, filled=True).encode(y=_y(y_title, height), tooltip=tip)
                     ).properties(title=title, height=height)


def score_lines(df: pd.DataFrame, *, x: str = "step", log_x: bool = False, title: str = "",
                y_title: str = "score (%)", height: int = LINE_HEIGHT,
                colours: Mapping[str, str] | None = None) -> alt.LayerChart:
    """Downstream scores (`app.data.downstream.downstream_series`) against `x`, a line per run (in its palette
    colour); where a row has a spread (fine-tuning over 2 or more seeds: `low`, `high` = mean ∓ sample std) a band
    and an error bar show it."""
    color = alt.Color("run:N", title="run", scale=run_scale(df, colours),
                      legend=alt.Legend(symbolOpacity=1))  # solid symbols, not the faint band's
    base = alt.Chart(df).encode(x=_x(x, log_x, _high(df, x)), color=color)
    spread = base.transform_filter("isValid(datum.low) && isValid(datum.high)")
    y = _y(y_title, height)
    return alt.layer(
        base.mark_line(strokeWidth=2).encode(y=y),
        spread.mark_area(opacity=0.18).encode(y=_y(y_title, height, field="low"), y2="high:Q"),
        spread.mark_rule(strokeWidth=1.5, opacity=0.7).encode(y=_y(y_title, height, field="low"), y2="high:Q"),
        base.mark_point(size=36, filled=True).encode(y=y, tooltip=_tooltip(df, "std", "seeds", fmt=".2f")),
    ).properties(title=title, height=height)


def layer_grid(df: pd.DataFrame, *, x: str = "step", log_x: bool = False, title: str = "", columns: int = 4,
               color: str = "run", colours: Mapping[str, str] | None = None) -> alt.FacetChart:
    """Small multiples: one panel per layer (shared y), a line per run (in its palette colour); the title names
    the metric."""
    scale = run_scale(df, colours, color) if color == "run" else alt.Undefined
    base = alt.Chart().encode(
        x=_x(x, log_x, _high(df, x)), y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
        color=alt.Color(f"{color}:N", title=color, sort=sorted(df[color].dropna().unique()), scale=scale),
        tooltip=_tooltip(df))
    layer = alt.layer(base.mark_line(strokeWidth=1.5), base.mark_point(size=10, filled=True)).properties(
        width=CELL[0], height=CELL[1])
    return layer.facet(facet=alt.Facet("layer:O", title="layer"), columns=columns, data=df).properties(title=title)


def difference_lines(diff: pd.DataFrame, *, x: str = "step", log_x: bool = False, title: str = "",
                     y_title: str = "a − b", height: int = 260) -> alt.LayerChart:
    """The difference of two runs against `x`, with the zero line."""
    base = alt.Chart(diff).encode(x=_x(x, log_x, _high(diff, x)), y=_y(y_title, height),
                                  tooltip=_tooltip(diff, "a", "b"))
    zero = alt.Chart(pd.DataFrame({"zero": [0.0]})).mark_rule(color="gray", strokeDash=[4, 4]).encode(y="zero:Q")
    return (zero + base.mark_area(opacity=0.25) + base.mark_line(strokeWidth=2)).properties(title=title, height=height)


def heatmap(df: pd.DataFrame, *, x: str, y: str, title: str = "", x_title: str | None = None,
            y_title: str | None = None, domain: tuple[float, float] | None = None, diverging: bool = False,
            cell: int | None = None) -> alt.Chart:
    """A matrix as coloured cells (`x`, `y` ordinal, colour = value); `diverging` centres the scale on 0. Cells
    are `cell` pixels wide (default: fitting about 640 px, between 6 and 40 px) and square, except that with fewer
    rows than columns they are 14 to 28 px tall."""
    if diverging:
        scale = alt.Scale(scheme="redblue", domainMid=0, reverse=True)
    else:
        scale = alt.Scale(scheme="viridis", domain=list(domain) if domain else alt.Undefined)
    tooltip = [alt.Tooltip(f"{c}:Q", title=c) for c in df.columns if c != "value"]
    chart = alt.Chart(df).mark_rect().encode(
        x=alt.X(f"{x}:O", title=x_title or x, sort="ascending", axis=alt.Axis(labelOverlap="greedy")),
        y=alt.Y(f"{y}:O", title=y_title or y, sort="descending" if y.startswith("layer") else "ascending",
                axis=alt.Axis(labelOverlap="greedy")),
        color=alt.Color("value:Q", title="value", scale=scale),
        tooltip=[*tooltip, alt.Tooltip("value:Q", format=".4f")],
    )
    nx, ny = max(1, df[x].nunique()), max(1, df[y].nunique())
    w = cell or int(min(40, max(6, 640 // nx)))
    h = min(max(w, 14), 28) if ny < nx else w  # a few layers against many steps: rows stay readable
    return chart.properties(title=title, width=alt.Step(w), height=alt.Step(h),
                            autosize=alt.AutoSizeParams(type="pad"))


def heatmap_grid(df: pd.DataFrame, *, x: str, y: str, facet: str = "layer", title: str = "",
                 domain: tuple[float, float] | None = (0.0, 1.0), columns: int = 4, size: int = 170) -> alt.FacetChart:
    """Small multiples of heatmaps, one per value of `facet` (e.g. step × step CKA of every layer)."""
    scale = alt.Scale(scheme="viridis", domain=list(domain) if domain else alt.Undefined)
    cells = alt.Chart().mark_rect().encode(
        x=alt.X(f"{x}:O", title=x, axis=alt.Axis(labels=False, ticks=False)),
        y=alt.Y(f"{y}:O", title=y, axis=alt.Axis(labels=False, ticks=False)),
        color=alt.Color("value:Q", scale=scale, title="value"),
        tooltip=[alt.Tooltip(f"{c}:Q") for c in (facet, x, y) if c in df] + [alt.Tooltip("value:Q", format=".4f")],
    ).properties(width=size, height=size)
    return cells.facet(facet=alt.Facet(f"{facet}:O", title=facet), columns=columns, data=df).properties(title=title)


def distance_lines(df: pd.DataFrame, *, title: str = "", y_title: str = "mean cosine") -> alt.Chart:
    """Similarity against distance d, one line per snapshot coloured by step (symmetric-log), a panel per run."""
    base = alt.Chart().encode(
        x=alt.X("distance:Q", title="distance d (tokens)"), y=_y(y_title, 220),
        color=alt.Color("step:Q", title="step", scale=alt.Scale(type="symlog", scheme="viridis")),
        detail="step:N", tooltip=_tooltip(df, "distance"))
    lines = alt.layer(base.mark_line(strokeWidth=1.5), base.mark_point(size=12, filled=True)).properties(
        width=320, height=220)
    return lines.facet(column=alt.Column("run:N", title=None), data=df).properties(title=title)


def training_curves(df: pd.DataFrame, *, x: str = "step", log_x: bool = False, log_y: bool = False,
                    columns: int = 3, colours: Mapping[str, str] | None = None) -> alt.FacetChart:
    """Training curves from `app.data.frames.tidy_log`: a panel per quantity (own y scale), colour = run (its
    palette colour), dashed = validation. With `log_y`, non-positive values are dropped."""
    if log_y:
        df = df[df["value"] > 0]
    df = df.assign(quantity_title=df["quantity"].map(lambda q: QUANTITY_TITLES.get(q, q)))
    order = [QUANTITY_TITLES.get(q, q) for q in dict.fromkeys(df["quantity"])]
    base = alt.Chart().encode(
        x=_x(x, log_x, _high(df, x)),
        y=alt.Y("value:Q", title=None, scale=alt.Scale(type="log" if log_y else "linear", zero=False),
                axis=alt.Axis(format="~g")),
        color=alt.Color("run:N", title="run", scale=run_scale(df, colours)),
        strokeDash=alt.StrokeDash("split:N", title="split", sort=["train", "validation"]),
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("split:N"), alt.Tooltip("step:Q"), alt.Tooltip("tokens_seen:Q"),
                 alt.Tooltip("quantity_title:N", title="quantity"), alt.Tooltip("value:Q", format=".4g")])
    lines = base.mark_line(strokeWidth=1.5).properties(width=230, height=160)
    return lines.facet(facet=alt.Facet("quantity_title:N", title=None, sort=order), columns=columns,
                       data=df).resolve_scale(y="independent")


def _projection(source: pd.DataFrame | None, colours: pd.DataFrame, color_by: str, size: int, x_title: str | None,
                y_title: str | None) -> alt.Chart:
    if color_by == "freq_bin":
        color = alt.Color("freq_bin:N", title="frequency bin", sort=_order(list(colours["freq_bin"].unique())),
                          scale=alt.Scale(scheme="set1"))
    else:
        color = alt.Color("sequence:N", title="sequence", scale=alt.Scale(scheme="category20"),
                          legend=alt.Legend(columns=2, symbolLimit=40))
    chart = alt.Chart() if source is None else alt.Chart(source)
    return chart.mark_circle(size=size, opacity=0.75).encode(
        x=alt.X("x:Q", title=x_title, scale=alt.Scale(zero=False)),
        y=alt.Y("y:Q", title=y_title, scale=alt.Scale(zero=False)),
        color=color,
        tooltip=[alt.Tooltip("token:N"), alt.Tooltip("sequence:Q"), alt.Tooltip("freq_bin:N", title="frequency bin"),
                 alt.Tooltip("point:Q", title="sample index")],
    )


def projection_scatter(df: pd.DataFrame, *, color_by: str = "sequence", title: str = "", height: int = 460,
                       x_title: str = "PC 1", y_title: str = "PC 2") -> alt.Chart:
    """Tokens of one projection as points; colour by `sequence` or `freq_bin`; hover shows the token."""
    return _projection(df, df, color_by, 26, x_title, y_title).properties(title=title, height=height)


def projection_grid(df: pd.DataFrame, *, facet: str = "step", color_by: str = "sequence", title: str = "",
                    columns: int = 4, size: int = 150) -> alt.FacetChart:
    """Small multiples of projections (e.g. one panel per step) with independent axes."""
    cell = _projection(None, df, color_by, 10, None, None).properties(width=size, height=size)
    return cell.facet(facet=alt.Facet(f"{facet}:O", title=facet), columns=columns, data=df).resolve_scale(
        x="independent", y="independent").properties(title=title)


def aoa_scatter(df: pd.DataFrame, *, title: str = "", height: int = 420,
                colours: Mapping[str, str] | None = None) -> alt.Chart:
    """Word acquisition: each word type's age of acquisition (`aoa_step`, the step, on a log axis) against its
    log10 training frequency (`app.data.word_acquisition.scatter_frame`), a point per (run, word type) in the run's
    palette colour; hover shows the word."""
    return alt.Chart(df).mark_circle(size=60, opacity=0.8).encode(
        x=alt.X("log10_frequency:Q", title="log10 training frequency", scale=alt.Scale(zero=False)),
        y=alt.Y("aoa_step:Q", title="age of acquisition (step, log scale)", scale=alt.Scale(type="log"),
                axis=alt.Axis(format="~s")),
        color=alt.Color("run:N", title="run", scale=run_scale(df, colours)),
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("word:N"), alt.Tooltip("aoa_step:Q", title="AoA (step)",
                                                                          format=".3~f"),
                 alt.Tooltip("frequency:Q", title="training frequency"),
                 alt.Tooltip("occurrences:Q", title="masked occurrences")],
    ).properties(title=title, height=height)


def word_curve(df: pd.DataFrame, *, title: str = "", height: int = LINE_HEIGHT,
               colours: Mapping[str, str] | None = None) -> alt.LayerChart:
    """One word's learning curve in each run (`app.data.word_acquisition.curve_frame`): the measured surprisal
    (points) against step on a symmetric-log axis, the fitted sigmoid through them (line), the age of acquisition
    (a dashed rule and a diamond on the curve) in the run's colour, and chance ln V (grey dashed line)."""
    color = alt.Color("run:N", title="run", scale=run_scale(df, colours))
    base = alt.Chart(df).encode(x=_x("step", True, _high(df[df["part"] == "measured"], "step")), color=color)
    y = _y("surprisal (nats)", height, field="surprisal")
    tip = [alt.Tooltip("run:N"), alt.Tooltip("part:N"), alt.Tooltip("step:Q", format=".4~f"),
           alt.Tooltip("surprisal:Q", format=".3f")]
    chance = alt.Chart(df).transform_filter("datum.part == 'chance'").mark_rule(
        color="gray", strokeDash=[4, 4]).encode(y=y, tooltip=[alt.Tooltip("surprisal:Q", title="chance ln V",
                                                                           format=".3f")])
    return alt.layer(
        chance,
        base.transform_filter("datum.part == 'fitted'").mark_line(strokeWidth=2).encode(y=y, detail="run:N"),
        base.transform_filter("datum.part == 'measured'").mark_point(size=40, filled=True).encode(y=y, tooltip=tip),
        base.transform_filter("datum.part == 'aoa'").mark_rule(strokeDash=[2, 3]).encode(),
        base.transform_filter("datum.part == 'aoa'").mark_point(shape="diamond", size=120, filled=True).encode(
            y=y, tooltip=tip),
    ).properties(title=title, height=height)
