"""The Runs table: one row per run found, joining what each results store knows about its runs with the run's
own directory (final losses from its log, snapshots on disk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from app.data.errors import DataError
from app.data.run_files import run_json, run_snapshot_steps, training_log
from app.data.sources import Sources
from app.data.stamps import run_stamp, stamp
from app.data.store_tables import store_runs
from common.run_dir import RunDir

RUN_TABLE_COLUMNS = ["run", "objective", "preset", "steps", "snapshots", "tokens_seen", "train_loss", "val_loss",
                     "tc_loss", "probe_hash", "measured", "results", "path"]


def runs_table(sources: Sources) -> pd.DataFrame:
    """One row per run found (run directories and runs named by stores): `RUN_TABLE_COLUMNS`. A run measured in
    several stores has one row per store; a run without results has `results` None."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for db in sources.stores:
        try:
            df = store_runs(db, stamp(db))
        except DataError:
            continue
        for r in df.itertuples(index=False):
            path = _resolved(r.path)
            seen.add(path or "")
            row = _run_dir_row(path) if path and RunDir(path).is_run() else {}
            rows.append({**row, "run": r.run, "objective": row.get("objective") or r.objective,
                         "preset": row.get("preset") or r.preset,
                         "steps": row.get("steps", r.last_step), "snapshots": row.get("snapshots", r.snapshots),
                         "tokens_seen": row.get("tokens_seen", r.last_tokens),
                         "probe_hash": r.probe_hash[:12] if isinstance(r.probe_hash, str) and r.probe_hash else None, "measured": r.measured,
                         "results": db, "path": r.path})
    for run_dir in sources.runs:
        if run_dir not in seen:
            rows.append({**_run_dir_row(run_dir), "run": Path(run_dir).name, "results": None, "path": run_dir,
                         "probe_hash": None, "measured": 0})
    df = pd.DataFrame(rows)
    for col in RUN_TABLE_COLUMNS:
        if col not in df:
            df[col] = None
    return df[RUN_TABLE_COLUMNS].reset_index(drop=True)


def _resolved(path: Any) -> str | None:
    if not isinstance(path, str) or not path:
        return None
    try:
        return str(Path(path).resolve())
    except OSError:
        return path


def _run_dir_row(run_dir: str) -> dict[str, Any]:
    """Summary of a run directory from run.json and log.jsonl: final train and validation loss, and the final
    TC loss (the validation value, logged for MLM runs too; the training value where no validation row has it)."""
    st_ = run_stamp(run_dir)
    info = run_json(run_dir, st_)
    log = training_log(run_dir, st_)
    train = log[log["split"] == "train"]
    val = log[log["split"] == "validation"]
    snaps = run_snapshot_steps(run_dir, st_)

    def last(df: pd.DataFrame, col: str) -> float | None:
        vals = df[col].dropna()
        return float(vals.iloc[-1]) if len(vals) else None

    steps = max([int(x) for x in log["step"].dropna()] + snaps, default=None)
    tokens = last(log, "tokens_seen") if len(log) else None
    return {"objective": info.get("objective"), "preset": info.get("preset"), "steps": steps,
            "snapshots": len(snaps), "tokens_seen": None if tokens is None else int(tokens),
            "train_loss": last(train, "loss"), "val_loss": last(val, "loss"),
            "tc_loss": last(val, "tc_loss") if last(val, "tc_loss") is not None else last(train, "tc_loss")}
