"""Word acquisition (Chang & Bergen 2022): when in training each word type of the probe set is learned — its age
of acquisition against its training frequency, per-word learning curves with their fitted sigmoid, and the
earliest and latest learned words of each run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, ui
from app.data import store_tables
from app.data import word_acquisition as wa
from app.definitions import describe, order_key

FIT_POINTER = "dynamics.metrics.acquisition.fit_curve"
CURVES_SHOWN = 6  # words drawn at once; each is its own chart


def main() -> None:
    ui.store_page("Word acquisition", "When each word type is learned: a sigmoid fitted to its mean surprisal "
                  "at masked positions against log10 step, and its age of acquisition (AoA), the step at which "
                  "the curve is halfway from chance to its final value.", "the word-acquisition page", _body)


def _body(ctx: ui.Context) -> None:
    assert ctx.db is not None
    all_runs = ui.store_run_names(ctx)
    if not all_runs:
        return
    runs = st.multiselect("Runs", all_runs, default=all_runs, key="acquisition:runs",
                          help="Runs measured on this probe set, overlaid for comparison")
    st.markdown("**Age of acquisition** — per word type, the least-squares sigmoid f(x) = lo + (hi − lo) / "
                "(1 + exp(k (x − x0))) of its mean surprisal against x = log10 step; the AoA is where f crosses the "
                "midpoint between chance (ln V) and the curve's minimum over the measured steps. Defined in "
                f"`{FIT_POINTER}`.")
    defs = store_tables.definitions(ctx.db, ctx.stamp)
    # the metrics the store places on this page; a store without definitions: the summary rows the page reads
    metrics = sorted((m for m, d in defs.items() if d.page == "acquisition"), key=lambda m: order_key(m, defs))
    for metric in metrics or wa.SUMMARY_METRICS:
        ui.definition(describe(metric, wa.FAMILY, defs))
    if not runs:
        st.info("Pick at least one run.")
        return
    shown: list[wa.RunAcquisition] = []
    for run in runs:  # one run's damaged array leaves out that run, not the page
        with ui.part(ctx, f"the word acquisition of {run}"):
            acq = wa.run_acquisition(ctx.db, ctx.stamp, run, ctx.probe_hash)
            if acq is None:
                st.info(f"No word acquisition for **{run}**: "
                        f"{wa.missing_reason(ctx.db, ctx.stamp, run, ctx.probe_hash)}.", icon=":material/info:")
            else:
                shown.append(acq)
    if not shown:
        return
    colours = ui.run_colours(ctx.sources)
    with ui.part(ctx, "the ages of acquisition against frequency"):
        _scatter(ctx, shown, colours)
    with ui.part(ctx, "the learning curves"):
        _curves(shown, colours)
    with ui.part(ctx, "the earliest and latest learned words"):
        _extremes(shown)
    with ui.part(ctx, "the notes"):
        ui.show_notes(ctx, [wa.FAMILY], [a.run for a in shown])


def _interval(row: pd.Series) -> str:
    if not math.isfinite(row["rho"]):
        return "ρ undefined (fewer than 3 word types with an AoA)"
    ci = (f" (95% interval {row['ci_low']:+.2f} to {row['ci_high']:+.2f})"
          if math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"]) else "")
    return f"ρ = {row['rho']:+.2f}{ci}"


def _scatter(ctx: ui.Context, shown: list[wa.RunAcquisition], colours: dict[str, str]) -> None:
    assert ctx.db is not None
    st.subheader("Age of acquisition against training frequency")
    summary = pd.DataFrame(columns=wa.SUMMARY_COLUMNS).set_index("run")
    with ui.part(ctx, "the correlations (Spearman ρ) and median ages"):
        summary = wa.summary(ctx.db, ctx.stamp, tuple(a.run for a in shown), ctx.probe_hash).set_index("run")
    rows, lines = [], []
    for a in shown:
        counts = wa.status_counts(a.words)
        fitted = counts.get("fitted", 0)
        s = summary.loc[a.run] if a.run in summary.index else None
        corr = _interval(s) if s is not None else "no correlation stored"
        without = ", ".join(f"{n} {name}" for name, n in counts.items() if name != "fitted") or "none"
        lines.append(f"**{a.run}**: {corr}; {fitted} of {len(a.words)} word types have an AoA; without one: "
                     f"{without}.")
        rows.append({"run": a.run, "Spearman ρ": None if s is None else s["rho"],
                     "95% low": None if s is None else s["ci_low"], "95% high": None if s is None else s["ci_high"],
                     "median AoA (step)": None if s is None else s["median_step"], "word types": len(a.words),
                     **counts})
    st.markdown("\n".join(f"- {line}" for line in lines))
    table = pd.DataFrame(rows)
    for c in table.columns:  # a reason no type of a run has is a count of 0, not a gap
        if c in wa.STATUS or c == wa.NEVER_MASKED:
            table[c] = table[c].fillna(0).astype(int)
    st.dataframe(table, hide_index=True, key="acquisition:summary")
    frame = wa.scatter_frame(shown)
    if frame.empty:
        st.info("No word type has an age of acquisition with a known training frequency in these runs (the curves "
                "need at least five snapshots with step ≥ 1 to be fitted).")
        return
    ui.chart(charts.aoa_scatter(frame, title="Age of acquisition against log10 training frequency",
                                colours=colours), frame, "aoa-frequency", key="acquisition:scatter")
    st.caption("One point per word type and run; types whose training frequency is unknown are left out. Chang & "
               "Bergen's finding: frequent words are learned earlier (a negative ρ).")


def _default_word(shown: list[wa.RunAcquisition]) -> str | None:
    """The most frequent word type with an AoA in the first run (else the one with most occurrences)."""
    words = shown[0].words
    fitted = words[np.isfinite(words["aoa"])]
    pick = fitted if len(fitted) else words[words["occurrences"] > 0]
    if pick.empty:
        return None
    return str(pick.sort_values(["frequency", "occurrences", "word"], ascending=[False, False, True])["word"].iloc[0])


def _curves(shown: list[wa.RunAcquisition], colours: dict[str, str]) -> None:
    st.subheader("Learning curves")
    options = sorted({w for a in shown for w in a.points["word"].unique()})
    if not options:
        st.info("No word type has a masked occurrence in these runs.")
        return
    first = _default_word(shown)
    words = st.multiselect("Words", options, default=[first] if first in options else options[:1],
                           key="acquisition:words", max_selections=CURVES_SHOWN,
                           help="Type to search the probe set's word types; each gets its own chart, one colour per run")
    st.caption("Points: the word's mean surprisal over its masked occurrences at each snapshot; line: the fitted "
               "sigmoid; ◆ and dashed rule: the age of acquisition; grey dashed line: chance, ln V.")
    for word in words:
        frame = wa.curve_frame(shown, word)
        ui.chart(charts.word_curve(frame, title=f"“{word}”: surprisal over training", colours=colours), frame,
                 f"learning-curve-{word}", key=f"acquisition:curve:{word}")


def _extremes(shown: list[wa.RunAcquisition]) -> None:
    st.subheader("Earliest and latest learned words")
    n = int(st.slider("Words at each end", 1, 25, 5, key="acquisition:n"))
    for a in shown:
        table = wa.extremes(a.words, n)
        if table.empty:
            st.markdown(f"**{a.run}**: no word type has an age of acquisition.")
            continue
        st.markdown(f"**{a.run}**")
        out = pd.DataFrame({"learned": table["learned"], "word": table["word"], "AoA (step)": table["aoa_step"],
                            "training frequency": table["frequency"], "masked occurrences": table["occurrences"]})
        st.dataframe(out, hide_index=True, key=f"acquisition:extremes:{a.run}",
                     column_config={"AoA (step)": st.column_config.NumberColumn(format="%.1f")})


main()
