"""Cached loaders of a run directory's files, read through `common.run_dir` (the one reader of the format):
run.json, the training log as a frame (with notes on lines left out) and the steps of its snapshots."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app.data.errors import named
from app.data.stamps import Stamp
from common.run_dir import RunDir, RunDirError

LOG_QUANTITIES = ("loss", "mlm_loss", "tc_loss", "mlm_accuracy", "lr", "tokens_per_s", "grad_norm", "elapsed_s")


def has_log(run_dir: str) -> bool:
    """Whether the run directory has a `log.jsonl`."""
    return RunDir(run_dir).log_path.is_file()


@st.cache_data(show_spinner=False, max_entries=128)
def run_json(run_dir: str, stamp: Stamp) -> dict[str, Any]:
    """The run's `run.json` ({} when missing or unreadable)."""
    try:
        return RunDir(run_dir).config
    except RunDirError:
        return {}


@st.cache_data(show_spinner=False, max_entries=128)
def run_json_problem(run_dir: str, stamp: Stamp) -> str | None:
    """Why the run's `run.json` cannot be read (None when it can, or when there is none)."""
    try:
        _ = RunDir(run_dir).config
    except RunDirError as exc:
        return str(exc)
    return None


@named("log.jsonl")
@st.cache_data(show_spinner=False, max_entries=128)
def _log(run_dir: str, stamp: Stamp) -> tuple[pd.DataFrame, list[str]]:
    log = RunDir(run_dir).log()
    cols = ["step", "tokens_seen", "split", *LOG_QUANTITIES]
    df = pd.DataFrame(log.rows)
    for col in cols:
        if col not in df:
            df[col] = np.nan
    df["split"] = df["split"].astype(object).where(df["split"].notna(), "train").astype(str)
    for col in ["step", "tokens_seen", *LOG_QUANTITIES]:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df[cols].sort_values(["split", "step"], kind="stable").reset_index(drop=True), list(log.notes)


def training_log(run_dir: str, stamp: Stamp) -> pd.DataFrame:
    """`log.jsonl` as one row per line: step, tokens_seen, split ("train" | "validation") and the logged
    quantities (`LOG_QUANTITIES`, NaN where a row lacks one or logged a non-finite number). Lines that cannot be
    read (one being written, binary garbage, not JSON) are left out; `log_notes` says which."""
    return _log(run_dir, stamp)[0]


def log_notes(run_dir: str, stamp: Stamp) -> list[str]:
    """What reading the run's `log.jsonl` left out or changed, one sentence per kind of problem ([] for a clean log)."""
    return _log(run_dir, stamp)[1]


@st.cache_data(show_spinner=False, max_entries=128)
def run_snapshot_steps(run_dir: str, stamp: Stamp) -> list[int]:
    """Steps of the run's complete snapshots (`snapshots/step-NNNNNNN/`), ascending."""
    return [s.step for s in RunDir(run_dir).snapshots()]
