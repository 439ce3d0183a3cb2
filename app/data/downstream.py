"""Downstream scores (`experiments.evaluate`'s rows in a results store) for the Downstream page: the cached
rows, split into mode, task, score name and statistic, and their summaries (one score against training progress,
each run's final scores, the table of them)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app.data.errors import named
from app.data.stamps import Stamp
from app.data.store_open import open_store
from app.definitions import task_label, task_order

DOWNSTREAM = "downstream"  # family and probe_hash of `experiments.evaluate`'s rows (see `experiments.results`)
DOWNSTREAM_COLUMNS = ["run", "step", "tokens_seen", "mode", "layer", "task", "name", "stat", "value"]


@named("the downstream scores (table `metrics`)")
@st.cache_data(show_spinner=False, max_entries=64)
def downstream_rows(db: str, stamp: Stamp) -> pd.DataFrame:
    """Every downstream score in the store (`experiments.evaluate`'s rows: family and probe hash "downstream", so
    independent of the probe set), split into `DOWNSTREAM_COLUMNS`: run, step, tokens_seen, mode ("linear" |
    "finetune"), layer (−1 for fine-tuning, the probed hidden_states index for the linear probe), task ("sst2", …;
    "glue" for the GLUE average), name ("score", "accuracy", …; "average"), stat ("mean", "std", "seed1", …) and
    value (percent, NaN where undefined). Empty when nothing was evaluated. (Read by probe hash alone, which only
    the evaluation's rows carry, so that an upgraded older store whose rows have no family still shows them;
    rows whose metric and variant are not "task/name" and "mode/stat" are not downstream rows and are left out.)"""
    with open_store(db) as s:
        df = s.metrics(probe_hash=DOWNSTREAM)
    if df.empty:
        dtypes = {"step": np.int64, "layer": np.int64, "tokens_seen": float, "value": float}
        return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, object)) for c in DOWNSTREAM_COLUMNS})
    metric = df["metric"].astype(str).str.partition("/")
    variant = df["variant"].astype(str).str.partition("/")
    out = pd.DataFrame({
        "run": df["run"].astype(str), "step": pd.to_numeric(df["step"], errors="coerce"),
        "tokens_seen": pd.to_numeric(df["tokens_seen"], errors="coerce"), "mode": variant[0],
        "layer": pd.to_numeric(df["layer"], errors="coerce"), "task": metric[0], "name": metric[2],
        "stat": variant[2], "value": pd.to_numeric(df["value"], errors="coerce").astype(float)})
    out = out[(metric[1] == "/") & (variant[1] == "/") & out["step"].notna() & out["layer"].notna()]
    out = out.astype({"step": np.int64, "layer": np.int64})
    return out[DOWNSTREAM_COLUMNS].sort_values(["run", "mode", "task", "name", "layer", "step", "stat"]).reset_index(
        drop=True)


def _mean_std(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per `keys` of downstream rows (`downstream_rows`): tokens_seen, value (the `mean` row), std (the `std` row,
    NaN where absent), low and high (value ∓ std), seeds (how many per-seed rows)."""
    mean = rows[rows["stat"] == "mean"][[*keys, "tokens_seen", "value"]]
    std = rows[rows["stat"] == "std"][[*keys, "value"]].rename(columns={"value": "std"})
    seeds = rows[rows["stat"].str.startswith("seed")].groupby(keys).size().rename("seeds").reset_index()
    out = mean.merge(std, on=keys, how="left").merge(seeds, on=keys, how="left")
    out["std"] = out["std"].astype(float)
    out["low"], out["high"] = out["value"] - out["std"], out["value"] + out["std"]
    out["seeds"] = out["seeds"].fillna(0).astype(int)
    return out[[*keys, "tokens_seen", "value", "std", "low", "high", "seeds"]]


def downstream_series(rows: pd.DataFrame, mode: str, task: str, name: str, layer: int) -> pd.DataFrame:
    """One downstream score against training progress, from `downstream_rows`: run, step, tokens_seen, value (the
    mean over fine-tuning seeds, or the linear probe's score; percent), std (sample std over seeds, NaN with fewer
    than 2), low, high (value ∓ std), seeds; sorted by run and step."""
    sel = rows[(rows["mode"] == mode) & (rows["task"] == task) & (rows["name"] == name) & (rows["layer"] == layer)]
    return _mean_std(sel, ["run", "step"]).sort_values(["run", "step"]).reset_index(drop=True)


def downstream_final(rows: pd.DataFrame, mode: str, layer: int) -> pd.DataFrame:
    """Each run's last snapshot evaluated in `mode` at `layer`: run, step, tokens_seen, task, value, std, low, high,
    seeds of every task's headline `score` and of the GLUE average (task "glue"); tasks in `task_order`."""
    sel = rows[(rows["mode"] == mode) & (rows["layer"] == layer)
               & ((rows["name"] == "score") | ((rows["task"] == "glue") & (rows["name"] == "average")))]
    sel = sel[sel["step"] == sel.groupby("run")["step"].transform("max")]
    out = _mean_std(sel, ["run", "step", "task"])
    out = out.assign(_order=out["task"].map(task_order)).sort_values(["run", "_order"]).drop(columns="_order")
    return out.reset_index(drop=True)


def score_table(final: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """`downstream_final` as one row per run: run, step, then a column per task (named by `task_label`) holding
    "mean ± std" (just the mean without a std; None where the task was not evaluated at that step)."""
    def cell(value: float, std: float) -> str | None:
        if value != value:
            return None
        return f"{value:.{digits}f}" if std != std else f"{value:.{digits}f} ± {std:.{digits}f}"

    tasks = sorted(final["task"].unique(), key=task_order)
    rows = []
    for (run, step), group in final.groupby(["run", "step"], sort=True):
        cells = {t: cell(v, s) for t, v, s in zip(group["task"], group["value"], group["std"], strict=True)}
        rows.append({"run": run, "step": int(step), **{task_label(t): cells.get(t) for t in tasks}})
    return pd.DataFrame(rows, columns=["run", "step", *(task_label(t) for t in tasks)])
