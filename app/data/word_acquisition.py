"""Cached readers of a run's word acquisition (the probe's run-level family "acquisition", `dynamics.results.word_curves`)
as tidy frames: one row per word type (its fit and age of acquisition), the measured learning-curve points, the
per-run summary rows, and why a run has none. The tables themselves are `dynamics.results.word_curves`' readers (shared
with report.md and the figures); this module caches them and adds the page's learning-curve frames.

Ages of acquisition are stored as log10 of the training step; the frames carry both that (`aoa`) and the step it
stands for (`aoa_step` = 10^aoa), and pages show the step. The fitted curve drawn through a word's points is the
stored sigmoid evaluated (`sigmoid`: the formula of `dynamics.metrics.acquisition.sigmoid`, the function the probe
fitted, which tests/app/test_acquisition.py holds it to; the app imports no metric module), not a new fit.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from app.data.errors import DAMAGE, DataError, named
from app.data.stamps import Stamp
from app.data.store_open import open_store
from app.data.store_tables import typed
from dynamics.results import word_curves
from dynamics.results.word_curves import (
    FAMILY,
    KIND,
    NEVER_MASKED,
    STATUS,
    SUMMARY_COLUMNS,
    SUMMARY_METRICS,
    WORD_COLUMNS,
    extremes,
    status_counts,
)

__all__ = ["FAMILY", "KIND", "NEVER_MASKED", "POINT_COLUMNS", "STATUS", "SUMMARY_COLUMNS", "SUMMARY_METRICS",
           "WORD_COLUMNS", "RunAcquisition", "curve_frame", "extremes", "missing_reason", "run_acquisition",
           "scatter_frame", "status_counts", "summary"]

POINT_COLUMNS = ["run", "word", "step", "tokens_seen", "surprisal"]


def sigmoid(x: np.ndarray, hi: float, lo: float, k: float, x0: float) -> np.ndarray:
    """The stored fit at `x` (log10 step): lo + (hi − lo) / (1 + exp(k (x − x0))), without overflow."""
    z = np.clip(k * (np.asarray(x, dtype=np.float64) - x0), -700.0, 700.0)
    return lo + (hi - lo) / (1.0 + np.exp(z))


@dataclass(frozen=True)
class RunAcquisition:
    """One run's stored word acquisition: `words` (one row per word type, `WORD_COLUMNS`), `points` (the measured
    mean surprisal of each type with occurrences at each snapshot, `POINT_COLUMNS`, nats), the head's output size
    `vocab` (chance surprisal ln V) and the measured `steps`."""

    run: str
    words: pd.DataFrame
    points: pd.DataFrame
    vocab: int
    steps: tuple[int, ...]

    @property
    def chance(self) -> float:
        """ln V in nats: the surprisal of the uniform distribution over the head's outputs."""
        return float(np.log(self.vocab))


@named("a word-acquisition array")
@st.cache_data(show_spinner=False, max_entries=64)
def run_acquisition(db: str, stamp: Stamp, run: str, probe_hash: str | None = None) -> RunAcquisition | None:
    """The run's `word_acquisition` array as frames; None when the store has none for it; `DataError` naming the
    file when it cannot be read or does not hold what the probe writes there."""
    with open_store(db) as s:
        df = s.arrays(KIND, run=run, step=-1, probe_hash=probe_hash)
        df = df[(df["kind"] == KIND) & (df["run"] == run)] if len(df) else df
        if df.empty:
            return None
        file = str(df["file"].iloc[0])
        try:
            arr = s.load_array(file)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{s.root}: the word-acquisition array of {run} cannot be read ({exc}); the probe may be "
                            "rewriting it, refresh in a moment") from exc
        where = s.root / file
    try:
        return _frames(arr, run)
    except DAMAGE as exc:
        raise DataError(f"{where}: the word-acquisition array of {run} is damaged ({type(exc).__name__}: {exc}); "
                        "re-run python -m dynamics.probe on the run (with --force) to write it again") from exc


def _frames(arr: dict[str, np.ndarray], run: str) -> RunAcquisition:
    """`RunAcquisition` of a loaded `word_acquisition` array (KeyError/ValueError/IndexError when damaged)."""
    words = word_curves.word_table(arr, run)
    steps = np.asarray(arr["steps"], dtype=np.int64)
    tokens = np.asarray(arr.get("tokens_seen", np.full(len(steps), -1)), dtype=np.int64)
    surprisal = np.asarray(arr["surprisal"], dtype=np.float64)
    t, j = np.meshgrid(np.arange(len(words)), np.arange(len(steps)), indexing="ij")
    points = pd.DataFrame({"run": run, "word": words["word"].to_numpy()[t.ravel()], "step": steps[j.ravel()],
                           "tokens_seen": np.where(tokens < 0, np.nan, tokens.astype(float))[j.ravel()],
                           "surprisal": surprisal.ravel()})
    points = points[np.isfinite(points["surprisal"])].reset_index(drop=True)[POINT_COLUMNS]
    return RunAcquisition(run, words, points, int(arr["vocab"]), tuple(int(s) for s in steps))


@named("the word-acquisition rows (table `metrics`)")
@st.cache_data(show_spinner=False, max_entries=64)
def summary(db: str, stamp: Stamp, runs: tuple[str, ...], probe_hash: str | None = None) -> pd.DataFrame:
    """Per run the stored acquisition rows (`SUMMARY_COLUMNS`): Spearman ρ(AoA, log10 frequency) and its 95%
    interval, the share of types with an AoA, the median AoA (log10 step) and that as a step. NaN where the
    probe stored the metric as undefined; runs without the family are left out."""
    with open_store(db) as s:
        df = typed(s.metrics(list(SUMMARY_METRICS), run=list(runs), probe_hash=probe_hash), whole=("step", "layer"))
    df["value"] = pd.to_numeric(df["value"], errors="coerce")  # text where a number belongs reads as missing
    return word_curves.summary_table(df, runs)


@named("the word-acquisition tables")
@st.cache_data(show_spinner=False, max_entries=64)
def missing_reason(db: str, stamp: Stamp, run: str, probe_hash: str | None = None) -> str:
    """Why `run` has no word acquisition in the store, in a sentence for the page (`word_curves.missing_reason`)."""
    with open_store(db) as s:
        return word_curves.missing_reason(s, run, probe_hash)


def scatter_frame(acquisitions: Sequence[RunAcquisition]) -> pd.DataFrame:
    """The word types with an AoA and a known training frequency, of every run (`WORD_COLUMNS`)."""
    parts = [word_curves.correlated_words(a.words) for a in acquisitions]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=WORD_COLUMNS)


def curve_frame(acquisitions: Sequence[RunAcquisition], word: str, n: int = 80) -> pd.DataFrame:
    """Everything the learning-curve chart of `word` draws, one tidy frame: run, word, part, step, surprisal
    (nats). part "measured": the stored points; "fitted": the stored sigmoid at `n` log-spaced steps over the
    measured range (steps ≥ 1); "aoa": the AoA as a step, at the fitted curve's value there; "chance": ln V."""
    parts = []
    for a in acquisitions:
        pts = a.points[a.points["word"] == word]
        row = a.words[a.words["word"] == word]
        if pts.empty or row.empty:
            continue
        r = row.iloc[0]
        parts.append(pts.assign(part="measured")[["run", "word", "part", "step", "surprisal"]])
        fitted = [s for s in a.steps if s >= 1]
        if np.isfinite(r["k"]) and fitted:
            x = np.linspace(np.log10(min(fitted)), np.log10(max(fitted)), n)
            parts.append(pd.DataFrame({"run": a.run, "word": word, "part": "fitted", "step": 10.0 ** x,
                                       "surprisal": sigmoid(x, r["hi"], r["lo"], r["k"], r["x0"])}))
        if np.isfinite(r["aoa"]):
            at = float(sigmoid(np.array([r["aoa"]]), r["hi"], r["lo"], r["k"], r["x0"])[0])
            parts.append(pd.DataFrame({"run": [a.run], "word": [word], "part": ["aoa"], "step": [r["aoa_step"]],
                                       "surprisal": [at]}))
        parts.append(pd.DataFrame({"run": [a.run], "word": [word], "part": ["chance"], "step": [np.nan],
                                   "surprisal": [a.chance]}))
    if not parts:
        return pd.DataFrame(columns=["run", "word", "part", "step", "surprisal"])
    return pd.concat(parts, ignore_index=True).astype({"step": float, "surprisal": float})
