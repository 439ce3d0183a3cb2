"""Figures of a results store: one PNG per metric family, runs overlaid in their colours and line styles, layers as
shades of the run's colour (layer 0 lightest). Run colours come from `dynamics.results.palette` over all of the store's
runs, as in the app: MLM runs blue, TACO runs orange, others green.

Written with matplotlib's object API on the Agg canvas (no pyplot state, safe in any process). Each family
gets `FAMILY.png` (attention and copying too, when measured) with training steps on a symlog x axis (step 0
exists) and, where tokens seen are known, `FAMILY-tokens.png`; plus `context-distance.png` (cosine of g vs distance at the final snapshot),
`cka.png` (step × step CKA per layer, layer × layer CKA at the final snapshot), `aoa_frequency.png` (word
acquisition: each word type's age of acquisition against its training frequency), `phases.png` (RankMe and the
context gap over their phases), `timeline.png` (the order of learning: onsets per seed group, earliest first)
and `agreement.png` (seed agreement per seed group).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.files import replacing
from dynamics.results import palette, word_curves
from dynamics.results.groups import run_groups
from dynamics.results.onsets import group_onsets, order_of_learning

LINESTYLES = ("-", "--", ":", "-.")
FAMILY_TITLES = {"anchors": "Anchor-embedding similarity", "drift": "Anchor drift to the final snapshot",
                 "context": "Context-vector alignment (g = h − e)", "geometry": "Geometry",
                 "cka_steps": "CKA across snapshots", "attention": "Attention (per layer: mean or best head)",
                 "copying": "Copying on repeated random blocks r r"}
AOA_FIGURE = "aoa_frequency.png"  # `acquisition_figure`
TIMELINE_FIGURE = "timeline.png"  # `timeline_figure`
PHASES_FIGURE = "phases.png"  # `phases_figure`


def _save(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib: only when drawing (slow import)

    FigureCanvasAgg(fig)
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=90)
    return path


def _grid(n: int, ncols: int = 4, size: tuple[float, float] = (3.4, 2.6)) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    height = size[1] * nrows + 1.0
    fig = Figure(figsize=(size[0] * ncols, height))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    fig.subplots_adjust(left=0.06, right=0.98, top=1 - 0.75 / height, bottom=0.75 / height, hspace=0.45, wspace=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _run_colours(runs: Sequence[str], colours: dict[str, str] | None) -> dict[str, str]:
    """Each run's colour: from `colours` (the store's palette), else the palette over `runs` alone."""
    known = colours if colours is not None else palette.run_colours((r, None) for r in runs)
    return dict(zip(runs, palette.colours_for(list(runs), known), strict=True))


def family_figure(df: Any, family: str, runs: Sequence[str], x: str, path: Path,
                  colours: dict[str, str] | None = None) -> Path | None:
    """Small multiples (one panel per metric, variant "all") of one family, runs in their `colours` (default: the
    palette over `runs`); None when there is nothing to plot."""
    from matplotlib.lines import Line2D

    d = df[(df["family"] == family) & (df["variant"].isin(["all", "probe"]))]
    if x == "tokens_seen":
        d = d[d["tokens_seen"].notna()]
    if d.empty:
        return None
    metrics = sorted(d["metric"].unique())
    layers = sorted(int(v) for v in d["layer"].unique())
    run_colour = _run_colours(runs, colours)
    shades = {run: dict(zip(layers, palette.ramp(run_colour[run], len(layers)), strict=True)) for run in runs}
    greys = dict(zip(layers, palette.ramp("#222222", len(layers)), strict=True))
    fig, axes = _grid(len(metrics))
    for ax, metric in zip(axes, metrics, strict=True):
        m = d[d["metric"] == metric]
        for r, run in enumerate(runs):
            for layer, g in m[m["run"] == run].groupby("layer"):
                g = g.sort_values(x)
                ax.plot(g[x], g["value"], LINESTYLES[r % len(LINESTYLES)], color=shades[run][int(layer)], marker=".",
                        markersize=3, linewidth=1.2)
        ax.set_title(metric if m["variant"].iloc[0] == "all" else f"{metric} ({m['variant'].iloc[0]})", fontsize=9)
        positive = m[x][m[x] > 0]
        ax.set_xscale("symlog", linthresh=float(positive.min()) if len(positive) else 1.0)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=greys[layer], label=f"layer {layer}") for layer in layers]
    handles += [Line2D([], [], color=run_colour[run], linestyle=LINESTYLES[r % len(LINESTYLES)], label=run)
                for r, run in enumerate(runs)]
    fig.legend(handles=handles, loc="lower center", ncol=min(8, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(f"{FAMILY_TITLES.get(family, family)} — x: {'tokens seen' if x == 'tokens_seen' else 'step'}")
    return _save(fig, path)


def distance_figure(df: Any, runs: Sequence[str], path: Path, colours: dict[str, str] | None = None) -> Path | None:
    """Mean cosine of g vs distance at each run's final measured snapshot, one line per layer (shades of the run's
    colour in `colours`, default: the palette over `runs`)."""
    d = df[df["metric"] == "ctx_cos_by_distance"]
    if d.empty:
        return None
    fig, axes = _grid(len(runs), ncols=len(runs))
    run_colour = _run_colours(runs, colours)
    for ax, run in zip(axes, runs, strict=True):
        m = d[d["run"] == run]
        if m.empty:
            continue
        last = m[m["step"] == m["step"].max()]
        layers = sorted(last["layer"].unique())
        shades = palette.ramp(run_colour[run], len(layers))
        for i, (layer, g) in enumerate(last.groupby("layer")):
            g = g.sort_values("variant")
            ax.plot([int(v[1:]) for v in g["variant"]], g["value"], color=shades[i],
                    label=f"layer {layer}", marker=".")
        ax.set_title(f"{run}, step {int(last['step'].iloc[0])}", fontsize=9)
        ax.set_xlabel("distance in block")
        ax.set_ylabel("mean cos(g_i, g_j)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Context-vector cosine by distance")
    return _save(fig, path)


def cka_figure(store: Any, runs: Sequence[str], probe_hash: str, path: Path) -> Path | None:
    """Per run: step × step debiased CKA of every layer, and layer × layer CKA at the final snapshot."""
    panels: list[tuple[str, np.ndarray, list[str]]] = []
    for run in runs:
        steps = store.cka_steps(run, probe_hash)
        if steps is None:
            continue
        labels = [str(s) for s in steps["steps"]]
        for layer in range(steps["debiased"].shape[0]):
            panels.append((f"{run} layer {layer}: step × step", steps["debiased"][layer], labels))
        last = int(steps["steps"][-1])
        layers = store.cka_layers(run, last, probe_hash)
        if layers is not None:
            n = layers["debiased"].shape[0]
            panels.append((f"{run} step {last}: layer × layer", layers["debiased"], [str(i) for i in range(n)]))
    if not panels:
        return None
    fig, axes = _grid(len(panels), ncols=min(5, len(panels)), size=(3.0, 2.8))
    for ax, (title, mat, labels) in zip(axes, panels, strict=True):
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="magma", origin="lower")
        every = max(1, len(labels) // 6)
        ticks = list(range(0, len(labels), every))
        ax.set_xticks(ticks, [labels[i] for i in ticks], fontsize=6, rotation=45)
        ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=6)
        ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.6, label="debiased linear CKA")
    return _save(fig, path)


def acquisition_figure(store: Any, df: Any, runs: Sequence[str], probe_hash: str, path: Path,
                       colours: dict[str, str] | None = None) -> Path | None:
    """Age of acquisition (log10 step) against log10 training frequency, one point per word type with both
    (`word_curves.correlated_words` of the stored `word_acquisition` arrays) and one colour per run (`colours`,
    default: the palette over `runs`), each run's stored Spearman ρ (`aoa_freq_spearman`, from the metric rows
    `df`) in the legend; None when no run has a point to draw."""
    from matplotlib.figure import Figure

    summary = word_curves.summary_table(df, runs).set_index("run")
    points = {}
    for run in runs:
        arr = word_curves.stored(store, run, probe_hash)
        if arr is not None:
            points[run] = word_curves.correlated_words(word_curves.word_table(arr, run))
    points = {run: p for run, p in points.items() if len(p)}
    if not points:
        return None
    run_colour = _run_colours(runs, colours)
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    for run, p in points.items():
        rho = summary["rho"].get(run, math.nan)
        label = f"{run} (ρ = {rho:+.2f}, n = {len(p)})" if math.isfinite(rho) else f"{run} (ρ undefined, n = {len(p)})"
        ax.scatter(p["log10_frequency"], p["aoa"], s=14, alpha=0.75, color=run_colour[run], label=label, linewidths=0)
    ax.set_xlabel("log10 training frequency")
    ax.set_ylabel("age of acquisition (log10 step)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="Spearman ρ(AoA, log10 frequency)", title_fontsize=8)
    fig.suptitle("Word acquisition: age of acquisition against training frequency")
    return _save(fig, path)


TIMELINE_LABEL_WIDTH = 34  # characters per line of a row's label: longer labels wrap instead of being cut off


def timeline_figure(order: Any, path: Path, colours: dict[str, str], labels: dict[str, str] | None = None
                    ) -> Path | None:
    """The order of learning (`onsets.order_of_learning` rows): one row per curve, earliest first from the top, x
    the onset step on a log axis; per group a point at its geometric mean onset and a bar over its Student-t
    interval, groups side by side within a row in their `colours`; None when there is no row."""
    if order is None or len(order) == 0:
        return None
    return _save(timeline_drawing(order, colours, labels), path)


def timeline_drawing(order: Any, colours: dict[str, str], labels: dict[str, str] | None = None) -> Any:
    """`timeline_figure`'s matplotlib Figure (not saved), for a non-empty `order`."""
    import textwrap

    from matplotlib.figure import Figure

    curves = list(dict.fromkeys(order["metric"]))
    groups = sorted(order["group"].astype(str).unique())
    layer_of = order.groupby("metric")["layer"].first()
    names = [textwrap.fill(f"{(labels or {}).get(m, m)} (L{int(layer_of[m])})", TIMELINE_LABEL_WIDTH)
             for m in curves]
    lines = max(n.count("\n") + 1 for n in names)
    fig = Figure(figsize=(7.5, 1.2 + 0.32 * len(curves) * (1 + 0.6 * (lines - 1))))
    ax = fig.subplots()
    width = 0.7 / max(1, len(groups))
    for g_index, group in enumerate(groups):
        part = order[order["group"] == group].set_index("metric")
        y = [k + (g_index - (len(groups) - 1) / 2) * width for k in range(len(curves))]
        rows = [(yy, part.loc[m]) for yy, m in zip(y, curves, strict=True) if m in part.index]
        shown = [(yy, r) for yy, r in rows if r["n"] > 0]
        colour = colours.get(group, "#555555")
        for yy, r in shown:
            if math.isfinite(r["step_low"]) and math.isfinite(r["step_high"]):
                ax.plot([r["step_low"], r["step_high"]], [yy, yy], color=colour, linewidth=2.5, alpha=0.6)
        n_max = int(order[order["group"] == group]["runs"].max())
        ax.scatter([r["step"] for _, r in shown], [yy for yy, _ in shown], color=colour, s=22, zorder=3,
                   label=f"{group} ({n_max} run{'s' if n_max != 1 else ''})")
    ax.set_yticks(range(len(curves)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("onset step (half of the curve's change; log scale)")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Order of learning: geometric mean onset over seeds, Student-t 95% interval", fontsize=9)
    fig.tight_layout()
    return fig


PHASE_FIGURE_METRICS = ("rankme", "ctx_gap_all")
DIRECTION_COLOURS = {"rise": "#2ca02c", "fall": "#d62728", "flat": "#9e9e9e"}  # as the app's phase spans


def phases_figure(df: Any, phases: Any, runs: Sequence[str], path: Path, colours: dict[str, str] | None = None,
                  metrics: Sequence[str] = PHASE_FIGURE_METRICS) -> Path | None:
    """One panel per (metric, run) of `metrics` at the metric's last layer (variant all): the curve against step
    (log axis, step 0 left out as the phases leave it) over its stored phases shaded by direction; None when none
    of `metrics` is stored."""
    from matplotlib.patches import Patch

    d = df[df["metric"].isin(list(metrics)) & (df["variant"] == "all") & (df["step"] > 0)]
    present = [m for m in metrics if m in set(d["metric"])]
    if not present:
        return None
    run_colour = _run_colours(runs, colours)
    fig, axes = _grid(len(present) * len(runs), ncols=len(runs), size=(2.6, 2.2))
    for i, metric in enumerate(present):
        m = d[d["metric"] == metric]
        layer = int(m["layer"].max())
        for j, run in enumerate(runs):
            ax = axes[i * len(runs) + j]
            c = m[(m["run"] == run) & (m["layer"] == layer)].sort_values("step")
            p = phases[(phases["run"] == run) & (phases["metric"] == metric) & (phases["layer"] == layer)
                       & (phases["variant"] == "all")]
            for _, r in p.iterrows():
                ax.axvspan(float(r["start_step"]), float(r["end_step"]), color=DIRECTION_COLOURS.get(r["direction"],
                           "#cccccc"), alpha=0.18, linewidth=0)
            ax.plot(c["step"], c["value"], color=run_colour[run], marker=".", markersize=4, linewidth=1.3)
            ax.set_xscale("log")
            ax.set_title(f"{run}: {metric} L{layer} ({max(0, len(p) - 1)} break{'s' if len(p) != 2 else ''})",
                         fontsize=7)
            ax.tick_params(labelsize=6)
            ax.grid(alpha=0.3)
    fig.legend(handles=[Patch(color=c, alpha=0.4, label=k) for k, c in DIRECTION_COLOURS.items()],
               loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Phases between change points against log step (dynamics.results.phases)")
    return _save(fig, path)


AGREEMENT_FIGURE = "agreement.png"  # `agreement_figure`


def agreement_figure(group_rows: Any, path: Path, colours: dict[str, str]) -> Path | None:
    """Seed agreement per seed group against step (log axis, step 0 at the left edge): `seed_jsd` and `seed_cka` at
    the first and last stored layers (`Store.group_metrics` rows), one line per group in its colour, labelled with
    the number of seeds behind it; None when no group row is stored."""
    d = group_rows[group_rows["metric"].isin(["seed_jsd", "seed_cka"]) & (group_rows["variant"] == "all")]
    if d.empty:
        return None
    panels = [("seed_jsd", int(d[d["metric"] == "seed_jsd"]["layer"].max()))] if (d["metric"] == "seed_jsd").any() \
        else []
    cka = d[d["metric"] == "seed_cka"]
    if not cka.empty:
        panels += [("seed_cka", int(layer)) for layer in sorted({int(cka["layer"].min()), int(cka["layer"].max())})]
    fig, axes = _grid(len(panels), ncols=len(panels), size=(3.6, 2.8))
    for ax, (metric, layer) in zip(axes, panels, strict=True):
        m = d[(d["metric"] == metric) & (d["layer"] == layer)]
        for group, g in m.groupby("grp", sort=True):
            g = g.sort_values("step")
            n = int(g["n_runs"].min())
            ax.plot(g["step"].clip(lower=0.5), g["value"], marker=".", color=colours.get(str(group), "#555555"),
                    label=f"{group} ({n} seeds)")
        ax.set_xscale("log")
        ax.set_xlabel("step (step 0 drawn at 0.5)")
        ax.set_title({"seed_jsd": "JSD between seeds' outputs (nats)",
                      "seed_cka": "CKA between seeds"}[metric] + f", layer {layer}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Agreement between seeds (mean over seed pairs)")
    return _save(fig, path)


def write_all(store: Any, runs: Sequence[str], probe_hash: str, folder: Path) -> list[Path]:
    """Every figure for `runs` under `probe_hash` into `folder`; returns the files written."""
    df = store.metrics(run=list(runs), probe_hash=probe_hash)
    if df.empty:
        return []
    df = df.astype({"tokens_seen": "float64", "value": "float64"})
    known = store.runs()  # every run of the store, so a run's colour does not depend on the runs drawn
    colours = palette.run_colours(zip(known["name"].astype(str), known["objective"], strict=True))
    out: list[Path] = []
    for family in ("anchors", "drift", "context", "geometry", "cka_steps", "attention", "copying"):
        for x, suffix in (("step", ""), ("tokens_seen", "-tokens")):
            p = family_figure(df, family, runs, x, folder / f"{family}{suffix}.png", colours)
            if p is not None:
                out.append(p)
    for p in (distance_figure(df, runs, folder / "context-distance.png", colours),
              cka_figure(store, runs, probe_hash, folder / "cka.png"),
              acquisition_figure(store, df, runs, probe_hash, folder / AOA_FIGURE, colours),
              phases_figure(df, store.phases(probe_hash, run=list(runs)), runs, folder / PHASES_FIGURE, colours)):
        if p is not None:
            out.append(p)
    groups = run_groups(known, runs)  # as the report's order-of-learning table groups them
    order = order_of_learning(group_onsets(store.onsets(probe_hash, run=list(runs)), groups))
    defs = store.definitions()
    labels = dict(zip(defs["name"], defs["label"], strict=True))
    group_colours = palette.run_colours((g.label, g.objective) for g in groups)
    for p in (timeline_figure(order, folder / TIMELINE_FIGURE, group_colours, labels),
              agreement_figure(store.group_metrics(probe_hash=probe_hash), folder / AGREEMENT_FIGURE, group_colours)):
        if p is not None:
            out.append(p)
    return out
