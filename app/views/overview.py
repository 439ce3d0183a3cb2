"""Runs: every run found with its final numbers and results, the seed groups they form, training curves from
`log.jsonl`, and the stores (with the probe's snapshot-integrity warnings)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app import charts, ui
from app.data import errors, frames, run_files, runs_table, seed_groups, stamps, store_tables

QUANTITIES = {"loss": "Loss", "mlm_accuracy": "MLM accuracy", "tc_loss": "TC loss", "lr": "Learning rate",
              "tokens_per_s": "Tokens/s", "mlm_loss": "MLM loss", "grad_norm": "Gradient norm"}
DEFAULT_QUANTITIES = ["loss", "mlm_accuracy", "tc_loss", "lr", "tokens_per_s"]
COLUMNS = {
    "run": st.column_config.TextColumn("run"),
    "objective": st.column_config.TextColumn("objective"),
    "preset": st.column_config.TextColumn("preset"),
    "steps": st.column_config.NumberColumn("steps", help="Last step trained (log or snapshot)"),
    "snapshots": st.column_config.NumberColumn("snapshots"),
    "tokens_seen": st.column_config.NumberColumn("tokens seen", format="compact"),
    "train_loss": st.column_config.NumberColumn("train loss", format="%.3f"),
    "val_loss": st.column_config.NumberColumn("val loss", format="%.3f"),
    "tc_loss": st.column_config.NumberColumn("TC loss", format="%.3f",
                                             help="Final validation TC loss (logged for MLM runs too), else training"),
    "probe_hash": st.column_config.TextColumn("probe hash"),
    "measured": st.column_config.NumberColumn("measured", help="Snapshots with results under the probe set"),
    "results": st.column_config.TextColumn("results"),
}


def main() -> None:
    ctx = ui.context()
    st.title("Runs")
    src = ctx.sources
    if src.empty:
        ui.empty_state(ctx)
        return
    if src.missing:
        st.caption("Not found: " + ", ".join(f"`{d}`" for d in src.missing))
    table: pd.DataFrame | None = None
    picked: list[int] = []
    with ui.guard("the runs table"):
        table = runs_table.runs_table(src)
        shown = table.assign(results=table["results"].map(
            lambda p: ui.short(str(Path(p).parent)) if isinstance(p, str) else None))
        st.caption("Select rows to plot only those runs. Runs measured in several stores appear once per store.")
        event = st.dataframe(shown.drop(columns=["path"]), column_config=COLUMNS, hide_index=True, key="overview:table",
                             on_select="rerun", selection_mode="multi-row", width="stretch")
        picked = list(getattr(getattr(event, "selection", None), "rows", []) or [])
        ui.csv_button(table, "runs", key="overview:table")
        unprobed = table[table["results"].isna()]
        if len(unprobed):
            dirs = " ".join(ui.short(p) for p in unprobed["path"])
            st.info(f"{len(unprobed)} run(s) without results. Measure them with "
                    f"`python -m dynamics.probe {dirs} --out runs/dynamics`.", icon=":material/pending:")
    if table is None:
        return
    with ui.guard("the seed groups"):
        _groups(ctx)
    for path in table["path"].dropna().unique():
        if problem := run_files.run_json_problem(str(path), stamps.run_stamp(str(path))):
            st.warning(f"{problem} (its objective and preset are unknown here; the rest of the run is shown)",
                       icon=":material/warning:")
    with ui.guard("the training curves"):
        _curves(ctx, table, picked)
    with ui.guard("the stores"):
        _stores(ctx)


def _groups(ctx: ui.Context) -> None:
    """The seed groups of every store's runs (`app.data.seed_groups.store_groups`), shown only when some group has
    two runs or more; a store that cannot be read is left out here (the stores table below names its problem)."""
    stores = list(ctx.sources.stores)
    rows = []
    for db in stores:
        try:
            groups = seed_groups.store_groups(db, stamps.stamp(db))
        except errors.DataError:
            continue
        rows += [{"store": ui.short(str(Path(db).parent)), "group": g.label, "objective": g.objective,
                  "runs": ", ".join(g.runs), "seeds": ", ".join("?" if s is None else str(s) for s in g.seeds),
                  "n": g.size} for g in groups]
    if not any(r["n"] > 1 for r in rows):
        return
    frame = pd.DataFrame(rows)
    if len(stores) < 2:
        frame = frame.drop(columns=["store"])
    st.subheader("Seed groups")
    st.caption("Runs whose configs are equal except for the seed (and where they are written) form a group "
               "(`dynamics.results.groups`). The sidebar's *Seed groups* toggle draws each group as its mean with a band, "
               "and compares two groups paired by seed.")
    st.dataframe(frame, hide_index=True, key="overview:groups", width="stretch",
                 column_config={"n": st.column_config.NumberColumn("n", help="Runs in the group")})


def _curves(ctx: ui.Context, table: pd.DataFrame, picked: list[int]) -> None:
    st.subheader("Training curves")
    st.markdown("**Training log** — `log.jsonl` rows: training values every `--log-every` steps (solid), evaluation "
                "on the validation blocks at every snapshot (dashed). Written by `taco.train.train`.")
    rows = table.iloc[picked] if picked else table
    logs: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    for r in rows.drop_duplicates("path").itertuples(index=False):
        if not isinstance(r.path, str) or not run_files.has_log(r.path):
            continue
        label = r.run if r.run not in logs else f"{r.run} ({ui.short(r.path)})"
        logs[label] = run_files.training_log(r.path, stamps.run_stamp(r.path))
        notes += run_files.log_notes(r.path, stamps.run_stamp(r.path))
    if notes:
        st.caption("Left out of the curves: " + "; ".join(notes) + ".")
    if not logs:
        st.info("No `log.jsonl` found for these runs (runs measured elsewhere, or not in `taco.train`'s format).")
        return
    cols = st.columns([4, 1])
    quantities = cols[0].multiselect("Quantities", list(QUANTITIES), default=DEFAULT_QUANTITIES,
                                     format_func=QUANTITIES.get, key="overview:quantities")
    log_y = cols[1].toggle("Log-scale y", value=False, key="overview:log_y")
    frame = frames.tidy_log(logs, quantities)
    if frame.empty:
        st.info("These runs logged none of the chosen quantities yet.")
        return
    x = ui.x_field(ctx, frame)
    missing = [QUANTITIES[q] for q in quantities if q not in set(frame["quantity"])]
    if missing:
        st.caption("Not logged by these runs: " + ", ".join(missing) + ".")
    ui.chart(charts.training_curves(frame, x=x, log_x=ctx.log_x, log_y=log_y, colours=ui.run_colours(ctx.sources)),
             frame, "training-curves", key="overview:curves", stretch=False)


def _stores(ctx: ui.Context) -> None:
    if not ctx.sources.stores:
        return
    st.subheader("Results stores")
    rows = []
    flagged: list[str] = []
    families: list[str] = []
    for db in ctx.sources.stores:
        stamp = stamps.stamp(db)
        try:
            runs = store_tables.store_runs(db, stamp)
            sets = store_tables.probe_sets(db, stamp)
            problems = store_tables.store_problems(db, stamp)
            warnings = store_tables.store_warnings(db, stamp)
            flags = store_tables.integrity_flags(db, stamp)
        except errors.DataError as exc:
            rows.append({"store": ui.short(db), "runs": None, "snapshots measured": None, "probe sets": None,
                         "status": str(exc)})
            continue
        rows.append({"store": ui.short(db), "runs": len(runs), "snapshots measured": int(runs["measured"].sum()),
                     "probe sets": len(sets),
                     "status": "; ".join((["older schema: " + "; ".join(problems)] if problems else []) + warnings)
                     or "ok"})
        flagged += [f"{ui.short(db)}, **{f.run}**: {f.note}" for f in flags.itertuples(index=False)]
        families += _families(db, stamp)
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if families:
        st.caption("Families measured (latest probe set) — " + "; ".join(families) + ".")
    for line in flagged:
        st.warning(f"Snapshot integrity — {line}", icon=":material/warning:")



def _families(db: str, stamp: stamps.Stamp) -> list[str]:
    """"store, run: family, …" per run of the store (the per-snapshot and run-level families it has results of)."""
    done = store_tables.measured(db, stamp)
    return [f"{ui.short(db)}, **{run}**: {', '.join(sorted(set(g['family'])))}" for run, g in done.groupby("run")]


main()
