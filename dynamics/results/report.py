"""`report.md`: a short account of a probe run — the probe set, the runs, snapshot integrity, headline numbers,
onsets (with seed groups' mean ± std), the order of learning (seed groups' onsets with Student-t intervals), phases,
word acquisition, notes, figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.files import write_text
from dynamics.find import integrity
from dynamics.metrics import registry, user
from dynamics.results import agreement, heads, llc_checks, markdown, word_curves
from dynamics.results.figures import AGREEMENT_FIGURE, AOA_FIGURE, PHASES_FIGURE, TIMELINE_FIGURE
from dynamics.results.groups import Group, run_groups, t_interval
from dynamics.results.onsets import group_onsets, order_of_learning

HEADLINE = (  # (metric, variant, layer: "last" | int); labels and definitions from the metric registry
    ("anchor_sim_word", "all", "last"),
    ("masked_anchor_sim", "all", "last"),
    ("masked_accuracy", "all", "last"),
    ("anchor_drift", "all", 0),
    ("ctx_gap_all", "all", "last"),
    ("ctx_gap_window", "all", "last"),
    ("tc_loss", "all", "last"),
    ("seq_id_accuracy", "all", "last"),
    ("anisotropy", "all", "last"),
    ("self_similarity_adj", "all", "last"),
    ("rankme", "all", "last"),
    ("isoscore", "all", "last"),
    ("twonn", "all", "last"),
    ("uniformity", "all", "last"),
    ("cka_final", "all", "last"),
)
ONSET_METRICS = ("ctx_gap_window", "ctx_same_window", "anisotropy", "rankme", "masked_accuracy", "tc_loss")
ONSET_VARIANT = "all"  # each at its last stored layer
ACQUISITION_METRICS = tuple(word_curves.SUMMARY_METRICS)
EXTREME_WORDS = 5  # earliest and latest learned words listed per run
PER_LAYER = ("anchor_sim_word", "ctx_gap_all", "anisotropy", "self_similarity_adj", "rankme", "isoscore",
             "cka_prev_layer")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    v = float(value)
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"


def _integrity(series_list: Sequence[Any], snaps: Any, flags: Sequence[integrity.Flag]) -> list[str]:
    """The lines of the "Snapshot integrity" section: what was checked and the flags (`dynamics.find.integrity`)."""
    runs = {s.name for s in series_list}
    n = sum(len(s.snapshots) for s in series_list)
    mine = snaps[snaps["run"].isin(runs)]
    hashed = len(integrity.cached_entries(zip(range(len(mine)), mine["info"], strict=True)))
    checked = (f"checked: identical weights at two steps among the {hashed} whose weights were hashed, each folder's "
               "step against the step it records, tokens seen increasing with step")
    if not flags:
        return [f"No problems found in {n} snapshot(s) ({checked})."]
    return [f"{len(flags)} problem(s) found in {n} snapshot(s) ({checked}); results of the snapshots named may not "
            "be what their steps say:", ""] + [f"- **{f.run}** ({f.kind.replace('_', ' ')}): {f.message}" for f in flags]


def _step(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"


def group_onset(steps: Sequence[int | None]) -> str:
    """A seed group's onset cell: mean onset step ± sample std (ddof = 1) over the seeds whose curve has an onset
    (`steps`: one per run of the group, None where the curve has no onset or was not measured), and n of them."""
    found = [float(s) for s in steps if s is not None and math.isfinite(float(s))]
    interval = t_interval(found)
    tail = f"(n = {interval.n} of {len(steps)})"
    if interval.n == 0:
        return f"– {tail}"
    if interval.n == 1:
        return f"{_step(interval.mean)} {tail}"
    return f"{_step(interval.mean)} ± {_step(interval.std)} {tail}"


def onsets_section(onsets: Any, runs: Sequence[str], groups: Sequence[Group]) -> list[str]:
    """The lines of the "Onsets" section: per `ONSET_METRICS` metric (variant all, its last stored layer in each
    run) the stored onset step of each run — "–" where the curve has no onset, "not measured" where the run has no
    onset row for the metric — and, per seed group of ≥ 2 runs, `group_onset` of its runs' steps. `onsets`: the
    store's onset rows (run, metric, layer, variant, step, …)."""
    multi = [g for g in groups if g.size > 1]
    header = ["metric"] + list(runs) + [f"{g.label} (group of {g.size})" for g in multi]
    rows = []
    for metric in ONSET_METRICS:
        m = onsets[(onsets["metric"] == metric) & (onsets["variant"] == ONSET_VARIANT)]
        steps: dict[str, int | None] = {}
        cells: list[Any] = [f"{registry.get(metric).label} (`{metric}`)"]
        for run in runs:
            r = m[m["run"] == run]
            if r.empty:
                cells.append("not measured")
                continue
            step = r[r["layer"] == r["layer"].max()]["step"].iloc[0]
            known = step is not None and math.isfinite(float(step))
            steps[run] = int(step) if known else None
            cells.append(str(int(step)) if known else "–")
        cells += [group_onset([steps.get(run) for run in g.runs]) for g in multi]
        rows.append(cells)
    lines = ["An onset is the first measured step at which a curve has covered half of its change from the first to "
             "the last measured snapshot (`dynamics.results.onsets`; last layer, variant all); \"–\": the curve has none "
             "(fewer than two values, or no change); \"not measured\": the run has no values of the metric."]
    if multi:
        lines[0] += (" A group's column (runs whose configs differ only by seed, `dynamics.results.groups`) is the mean onset "
                     "step ± its sample standard deviation over the seeds with an onset, n of the group's runs.")
    return lines + [""] + markdown.table(header, rows)


PHASE_METRICS = ("rankme", "ctx_gap_all", "ctx_gap_window")  # each at its last stored layer, variant all


def _label(metric: str) -> str:
    try:
        return registry.get(metric).label
    except KeyError:  # a metric of a newer probe or a user module no longer loaded: its name
        return metric


def order_section(onsets: Any, runs: Sequence[str], groups: Sequence[Group], figure: Path | None = None
                  ) -> list[str]:
    """The lines of the "Order of learning" section: every curve (variant all, each metric at its last stored layer)
    with an onset, earliest first (`onsets.order_of_learning`), and per seed group (a run without seeds is a group of
    one) its geometric mean onset step with the Student-t 95% interval over the seeds with an onset, n of runs."""
    order = order_of_learning(group_onsets(onsets, groups))
    if order.empty:
        return []
    labels = [g.label for g in groups if g.label in set(order["group"])]
    rows = []
    for _rank, part in order.groupby("rank", sort=True):
        by = part.set_index("group")
        first = part.iloc[0]
        cells: list[Any] = [f"{_label(first['metric'])} (`{first['metric']}`, L{int(first['layer'])})"]
        for label in labels:
            if label not in by.index:
                cells.append("not measured")
                continue
            r = by.loc[label]
            if r["n"] == 0:
                cells.append(f"– (0 of {int(r['runs'])})")
                continue
            tail = (f" ({_step(r['step_low'])}–{_step(r['step_high'])})"
                    if math.isfinite(r["step_low"]) and math.isfinite(r["step_high"]) else "")
            cells.append(f"{_step(r['step'])}{tail}, {int(r['n'])} of {int(r['runs'])}")
        rows.append(cells)
    sizes = {g.label: g.size for g in groups}
    lines = ["Every curve's onset (variant all, each metric at its last stored layer), earliest first. Per seed group "
             "(runs whose configs differ only by seed; a run without seeds is a group of one): the geometric mean "
             "onset step over the runs whose curve has an onset (the mean of log10 step) with its Student-t 95% "
             "interval over those seeds (two or more needed), and how many of the group's runs have an onset. A run "
             "whose curve is flat or has one value has none and is counted, not averaged (`dynamics.results.onsets`)."]
    if figure is not None:
        lines += ["", f"![order of learning](figures/{figure.name})"]
    return lines + [""] + markdown.table(["curve"] + [f"{g} ({sizes.get(g, 1)} run{'s' if sizes.get(g, 1) != 1 else ''})"
                                              for g in labels], rows)


def phases_section(phases: Any, runs: Sequence[str], figure: Path | None = None) -> list[str]:
    """The lines of the "Phases" section: per run, the phases of `PHASE_METRICS` (last stored layer, variant all) and
    how many of its stored curves have at least one break."""
    if phases.empty:
        return []
    lines = ["Phases are stretches between change points of a curve against log10 step (`dynamics.results.phases`: "
             "PELT on a piecewise-linear fit, the curve scaled by its typical bend, penalty 6·log n per break, at "
             "least 3 snapshots per phase; step 0 left out). A phase is a rise, a fall or flat; its size is its "
             "fitted change.", ""]
    if figure is not None:
        lines += [f"![phases](figures/{figure.name})", ""]
    rows = []
    for run in runs:
        p = phases[phases["run"] == run]
        if p.empty:
            continue
        per_curve = p.groupby(["metric", "layer", "variant"])["phase"].count()
        broken = int((per_curve > 1).sum())
        cells = [run, f"{broken} of {len(per_curve)}"]
        for metric in PHASE_METRICS:
            m = p[(p["metric"] == metric) & (p["variant"] == "all")]
            if m.empty:
                cells.append("not measured")
                continue
            m = m[m["layer"] == m["layer"].max()].sort_values("phase")
            cells.append("; ".join(f"{int(r.start_step)}–{int(r.end_step)} {r.direction} ({_fmt(r.size)})"
                                   for r in m.itertuples()) + f" (L{int(m['layer'].iloc[0])})")
        rows.append(cells)
    return lines + markdown.table(["run", "curves with ≥ 1 break"] + [f"{_label(m)} (`{m}`)" for m in PHASE_METRICS], rows)


def _interval(low: float, high: float) -> str:
    return f"{_fmt(low)} to {_fmt(high)}" if math.isfinite(low) and math.isfinite(high) else "–"


def _code(text: str) -> str:
    """`text` as a markdown code span, whatever backticks it holds (word types include punctuation such as `)."""
    longest = max((len(run) for run in "".join(c if c == "`" else " " for c in text).split()), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _words(table: Any) -> str:
    return ", ".join(f"{_code(str(w))} ({_step(float(a))})" for w, a in zip(table["word"], table["aoa_step"],
                                                                         strict=True))


def acquisition_section(store: Any, rows: Any, runs: Sequence[str], probe_hash: str,
                        figure: Path | None = None) -> list[str]:
    """The lines of the "Word acquisition" section; [] when no run in `runs` has the family (`word_curves.FAMILY`).
    Per run with it: the stored Spearman ρ(AoA, log10 training frequency), its 95% bootstrap interval, the share of
    types fitted and the median AoA as a step (`word_curves.summary_table` of `rows`, the store's metric rows),
    the word types by fit status and the `EXTREME_WORDS` earliest and latest learned words (the stored
    `word_acquisition` array, `word_curves.word_table`); per run without it, one line saying why
    (`word_curves.missing_reason`). `figure`: the AoA-against-frequency figure, linked when written."""
    summary = word_curves.summary_table(rows, runs).set_index("run")
    found = {run: word_curves.stored(store, run, probe_hash) for run in runs}
    if summary.empty and not any(a is not None for a in found.values()):
        return []
    lines = ["Age of acquisition (AoA) of a word type of the probe set: the step at which a sigmoid fitted to its "
             "mean surprisal at masked positions against log10 step crosses halfway from chance (ln V) to the "
             "curve's value at the last measured step (`dynamics.metrics.acquisition.fit_curve`; Chang & Bergen "
             "2022). ρ: Spearman correlation of AoA with log10 training frequency over the types with both, and its "
             "95% bootstrap interval over types; words seen more often being learned earlier gives ρ < 0."]
    if figure is not None:
        lines[0] += f" Figure: [AoA against log10 training frequency](figures/{figure.name})."
    table, learned, missing = [], [], []
    for run in runs:
        arr = found[run]
        if run not in summary.index and arr is None:
            missing.append(f"- **{run}**: no word acquisition: {word_curves.missing_reason(store, run, probe_hash)}.")
            continue
        s = summary.loc[run] if run in summary.index else None
        words = word_curves.word_table(arr, run) if arr is not None else None
        counts = word_curves.status_counts(words) if words is not None else {}
        stored = (["–"] * 4 if s is None else
                  [_fmt(s["rho"]), _interval(s["ci_low"], s["ci_high"]), _fmt(s["fitted_share"]),
                   _step(s["median_step"]) if math.isfinite(s["median_step"]) else "–"])
        table.append([run, *stored, ", ".join(f"{n} {name}" for name, n in counts.items()) or "–"])
        if words is None:
            continue
        ends = word_curves.extremes(words, EXTREME_WORDS)
        if ends.empty:
            learned.append(f"- **{run}**: no word type has an age of acquisition.")
            continue
        early, late = ends[ends["learned"] == "earliest"], ends[ends["learned"] == "latest"]
        learned.append(f"- **{run}**: earliest {_words(early)}" + (f"; latest {_words(late)}" if len(late) else ""))
    lines += [""] + markdown.table(["run", "Spearman ρ (AoA, log10 frequency)", "95% interval", "share of types fitted",
                            "median AoA (step)", "word types by fit status"], table)
    if learned:
        lines += ["", f"Earliest and latest learned words (up to {EXTREME_WORDS} each; AoA as a step):", ""] + learned
    if missing:
        lines += [""] + missing
    lines += ["", "Definitions (from the metric registry):", ""]
    lines += [f"- `{name}`: {registry.get(name).definition} Unit: {registry.get(name).unit}. "
              f"`{registry.get(name).pointer}`" for name in ACQUISITION_METRICS]
    return lines


def write(store: Any, series_list: Sequence[Any], probe: Any, summary: Any, path: Path) -> Path:
    """Write `report.md` for the runs in `series_list` measured on `probe` (atomically); return its path."""
    runs = [s.name for s in series_list]
    df = store.metrics(run=runs, probe_hash=probe.hash)
    groups = run_groups(store.runs(), runs)
    lines = ["# Representation dynamics", ""]
    lines.append(f"Probe set `{probe.hash[:12]}` ({probe.source}): {probe.n_tokens} content tokens in "
                 f"{probe.n_blocks} blocks of {probe.block_size}; {int(probe.masked.sum())} masked positions; "
                 f"{len(probe.word_types)} word types (single-wordpiece whole words, ≥ 5 occurrences); frequency "
                 f"bins from {probe.freq_source}. Every snapshot below was measured on exactly these tokens.")
    lines.append("")
    snaps = store.snapshots()
    rows = []
    for s in series_list:
        measured = sorted(df[df["run"] == s.name]["step"].unique()) if not df.empty else []
        measured = [int(x) for x in measured if x >= 0]
        known = snaps[snaps["run"] == s.name]
        tokens = known["tokens_seen"].dropna()
        rows.append([s.name, s.kind, s.meta.get("objective") or "–", len(measured),
                     f"{measured[0]}–{measured[-1]}" if measured else "–",
                     _fmt(float(tokens.max())) if len(tokens) else "unknown"])
    lines += ["## Runs", ""] + markdown.table(["run", "kind", "objective", "snapshots measured", "steps", "max tokens seen"], rows)
    lines += ["", "## Snapshot integrity", ""] + _integrity(series_list, snaps, getattr(summary, "flags", []))
    if not df.empty:
        lines += ["", "## Headline numbers (last layer unless stated; first → final measured snapshot)", ""]
        rows = []
        shown = []
        for metric, variant, layer in HEADLINE:
            m = df[(df["metric"] == metric) & (df["variant"] == variant)]
            if m.empty:
                continue
            shown.append(metric)
            cells = [f"{registry.get(metric).label} (`{metric}`)"]
            for run in runs:
                r = m[m["run"] == run]
                if r.empty:
                    cells.append("–")
                    continue
                lyr = int(r["layer"].max()) if layer == "last" else layer
                r = r[r["layer"] == lyr].sort_values("step")
                cells.append(f"{_fmt(r['value'].iloc[0])} → {_fmt(r['value'].iloc[-1])}" if len(r) else "–")
            rows.append(cells)
        lines += markdown.table(["metric"] + runs, rows)
        lines += ["", "Definitions (from the metric registry; each names the function that computed the value):", ""]
        lines += [f"- `{name}`: {registry.get(name).definition} Unit: {registry.get(name).unit}. "
                  f"`{registry.get(name).pointer}`" for name in dict.fromkeys(shown + list(PER_LAYER))
                  if name in set(df["metric"])]
        for run in runs:
            r = df[(df["run"] == run) & (df["variant"] == "all") & (df["metric"].isin(PER_LAYER))]
            if r.empty:
                continue
            last = int(r["step"].max())
            r = r[r["step"] == last]
            table = r.pivot_table(index="layer", columns="metric", values="value", aggfunc="first")
            cols = [c for c in PER_LAYER if c in table.columns]
            lines += ["", f"### {run}: per layer at step {last}", ""]
            lines += markdown.table(["layer"] + cols, [[int(layer)] + [_fmt(table.loc[layer, c]) for c in cols]
                                               for layer in table.index])
        lines += ["", "## Onsets", ""]
        lines += onsets_section(store.onsets(probe.hash, run=runs, metric=list(ONSET_METRICS)), runs, groups)
    figures = [Path(f) for f in getattr(summary, "figures", [])]
    if not df.empty:
        order = order_section(store.onsets(probe.hash, run=runs), runs, groups,
                              next((f for f in figures if f.name == TIMELINE_FIGURE), None))
        if order:
            lines += ["", "## Order of learning", ""] + order
        phased = phases_section(store.phases(probe.hash, run=runs), runs,
                                next((f for f in figures if f.name == PHASES_FIGURE), None))
        if phased:
            lines += ["", "## Phases", ""] + phased
    aoa_figure = next((f for f in figures if f.name == AOA_FIGURE), None)
    acquisition = acquisition_section(store, df, runs, probe.hash, aoa_figure)
    if acquisition:
        lines += ["", "## Word acquisition", ""] + acquisition
    agreed = agreement.report_lines(store.group_metrics(probe_hash=probe.hash),
                                    next((f for f in figures if f.name == AGREEMENT_FIGURE), None))
    if agreed:
        lines += ["", "## Agreement between seeds", ""] + agreed
    llc = llc_checks.report_lines(df)
    if llc:
        lines += ["", "## Local learning coefficient", ""] + llc
    forming = heads.report_lines(store, runs, probe.hash)
    if forming:
        lines += ["", "## Attention heads that form", ""] + forming
    mine = user.report_lines(df)
    if mine:
        lines += ["", "## Your metrics (--metrics-module)", ""] + mine
    notes = sorted(set(summary.notes))
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    if figures:
        lines += ["", "## Figures", ""]
        lines += [f"![{f.stem}](figures/{f.name})" for f in figures]
    lines += ["", f"Results: `{store.path.name}` in this folder (`dynamics.results.store.open(...)`).", ""]
    write_text(path, "\n".join(lines))
    return path
