"""Downstream: task scores of the snapshots (`python -m experiments.evaluate`) against training progress, runs
overlaid, and each run's final scores per task. The rows live in the same store under the fixed probe hash
"downstream" (`experiments.results`), so they do not depend on the sidebar's probe set."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import streamlit as st

from app import charts, ui
from app.data import downstream, store_tables
from app.definitions import (
    DOWNSTREAM_METRICS,
    DOWNSTREAM_MODES,
    MetricDef,
    describe_downstream,
    task_label,
    task_order,
)

KEY = "downstream"


def main() -> None:
    ui.store_page("Downstream", "Task scores (percent) of each snapshot: a linear probe on frozen features, or "
                  "fine-tuning with several seeds (mean ± sample std), written by `python -m experiments.evaluate`.",
                  "the downstream page", _body)


def _body(ctx: ui.Context) -> None:
    assert ctx.db is not None
    rows = downstream.downstream_rows(ctx.db, ctx.stamp)
    if rows.empty:
        _empty(ctx)
        return
    all_runs = sorted(rows["run"].unique())
    top = st.columns([3, 2])
    runs = top[0].multiselect("Runs", all_runs, default=all_runs, key=f"{KEY}:runs",
                              help="Runs with downstream scores in this store, overlaid for comparison")
    if not runs:
        st.info("Pick at least one run.")
        return
    rows = rows[rows["run"].isin(runs)]
    present = set(rows["mode"])
    modes = [m for m in DOWNSTREAM_MODES if m in present] + sorted(present - set(DOWNSTREAM_MODES))
    mode = top[1].radio("Mode", modes, format_func=_mode_label, horizontal=True, key=f"{KEY}:mode",
                        help="Linear probe: logistic/ridge regression on frozen mean-pooled features of one layer. "
                             "Fine-tuning: the whole encoder with a fresh head, once per seed.")
    rows = rows[rows["mode"] == mode]
    cols = st.columns([2, 2, 3])
    tasks = sorted(rows["task"].unique(), key=task_order)
    task = cols[0].selectbox("Task", tasks, format_func=task_label, key=f"{KEY}:task")
    of_task = rows[rows["task"] == task]
    names = sorted(of_task["name"].unique(), key=_name_order)
    name = cols[1].selectbox("Metric", names, format_func=lambda n: describe_downstream(n).label, key=f"{KEY}:metric")
    layers = sorted(int(x) for x in of_task["layer"].unique())
    layer = layers[0]
    if layers != [-1]:
        with cols[2]:
            layer = ui.layer_picker([x for x in layers if x >= 0], key=f"{KEY}:layer",
                                    label="Layer (hidden_states index)")
    mdef = describe_downstream(name)
    ui.definition(mdef)

    curves = downstream.downstream_series(rows, mode, task, name, layer)
    if curves.empty:
        st.info(f"No {mdef.label.lower()} of {task_label(task)} for these runs.")
    else:
        x = ui.x_field(ctx, curves)
        if mode == "finetune":
            spread = curves["std"].notna().any()
            st.caption("Mean over the fine-tuning seeds; " + ("band and bars: ± one sample standard deviation."
                                                               if spread else "one seed each, so no spread."))
        title = _title(task, mdef, mode, layer)
        ui.chart(charts.score_lines(curves, x=x, log_x=ctx.log_x, title=title, y_title=f"{mdef.label} (%)",
                                    colours=ui.run_colours(ctx.sources)),
                 curves, f"downstream-{mode}-{task}-{name}" + (f"-layer{layer}" if layer >= 0 else ""),
                 key=f"{KEY}:chart")

    st.subheader("Final scores")
    with ui.part(ctx, "the final scores"):
        final = downstream.downstream_final(rows, mode, layer)
        where = f", layer {layer}" if layer >= 0 else ""
        st.caption(f"Each run's last evaluated snapshot ({_mode_label(mode).lower()}{where}): every task's headline "
                   "score in percent, as mean ± sample std over seeds where there are several.")
        st.dataframe(downstream.score_table(final), hide_index=True, key=f"{KEY}:final", width="stretch")
        ui.csv_button(final, f"downstream-final-{mode}", key=f"{KEY}:final")
    with ui.part(ctx, "the notes of the evaluation"):
        ui.show_notes(dataclasses.replace(ctx, probe_hash=downstream.DOWNSTREAM), [downstream.DOWNSTREAM], runs,
                      source="the evaluation")


def _empty(ctx: ui.Context) -> None:
    """No downstream rows: say so, with the commands that write them into this store."""
    assert ctx.db is not None
    paths = [ui.short(p) for p in store_tables.store_runs(ctx.db, ctx.stamp, ctx.probe_hash)["path"] if isinstance(p, str)]
    dirs = " ".join(paths) or "RUN_DIR"
    out = ui.short(str(Path(ctx.db).parent))
    st.info("No downstream scores in this store: run `python -m experiments.evaluate RUN --mode linear …` with "
            "`--out` set to this store's folder (an evaluation still running adds scores as it goes; this page "
            "reloads).", icon=":material/hourglass_empty:")
    st.markdown(f"""\
```bash
python -m experiments.evaluate {dirs} --mode linear --tasks rotten_tomatoes --out {out}
python -m experiments.evaluate {dirs} --mode finetune --glue-dir GLUE_DIR --out {out}
```
""")


def _mode_label(mode: str) -> str:
    return DOWNSTREAM_MODES.get(mode, mode)


def _name_order(name: str) -> tuple[int, str]:
    """The headline score (or the GLUE average) first, then the task's GLUE metrics, unknown names last."""
    known = list(DOWNSTREAM_METRICS)
    if name == "average":
        return (-1, name)
    return (known.index(name), name) if name in known else (len(known), name)


def _title(task: str, mdef: MetricDef, mode: str, layer: int) -> str:
    """E.g. "SST-2: Accuracy (fine-tuning)", "GLUE average (linear probe, layer 2)"."""
    what = task_label(task) if task == "glue" else f"{task_label(task)}: {mdef.label}"
    where = f", layer {layer}" if layer >= 0 else ""
    return f"{what} ({_mode_label(mode).lower()}{where})"


main()
