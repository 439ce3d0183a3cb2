"""Cached readers of a run's word acquisition (the probe's run-level family "acquisition", `dynamics.word_curves`)
as tidy frames: one row per word type (its fit and age of acquisition), the measured learning-curve points, the
per-run summary rows, and why a run has none.

Ages of acquisition are stored as log10 of the training step; the frames carry both that (`aoa`) and the step it
stands for (`aoa_step` = 10^aoa), and pages show the step. The fitted curve drawn through a word's points is the
stored sigmoid evaluated (`dynamics.metrics.acquisition.sigmoid`, the function the probe fitted), not a new fit.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from app.data.errors import DataError
from app.data.stamps import Stamp
from app.data.store_open import open_store
from dynamics.metrics.acquisition import STATUS, sigmoid
from dynamics.word_curves import FAMILY, KIND

WORD_COLUMNS = ["run", "word_type", "word", "occurrences", "frequency", "log10_frequency", "aoa", "aoa_step",
                "status", "reason", "hi", "lo", "k", "x0"]
POINT_COLUMNS = ["run", "word", "step", "tokens_seen", "surprisal"]
SUMMARY_COLUMNS = ["run", "rho", "ci_low", "ci_high", "fitted_share", "median_aoa", "median_step"]
NEVER_MASKED = "no masked occurrence"  # a type of the probe set that no masked position hit (stored status 1)
SUMMARY_METRICS = {"aoa_freq_spearman": {"all": "rho", "ci_low": "ci_low", "ci_high": "ci_high"},
                   "aoa_fitted_share": {"all": "fitted_share"}, "aoa_median": {"all": "median_aoa"}}


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


@st.cache_data(show_spinner=False, max_entries=64)
def run_acquisition(db: str, stamp: Stamp, run: str, probe_hash: str | None = None) -> RunAcquisition | None:
    """The run's `word_acquisition` array as frames; None when the store has none for it."""
    with open_store(db) as s:
        df = s.arrays(KIND, run=run, step=-1, probe_hash=probe_hash)
        df = df[(df["kind"] == KIND) & (df["run"] == run)] if len(df) else df
        if df.empty:
            return None
        try:
            arr = s.load_array(str(df["file"].iloc[0]))
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{s.root}: the word-acquisition array of {run} cannot be read ({exc}); the probe may be "
                            "rewriting it, refresh in a moment") from exc
    names = [str(n) for n in arr.get("status_names", np.asarray(STATUS))]
    counts = np.asarray(arr["counts"], dtype=np.int64)
    status = np.asarray(arr["status"], dtype=np.int64)
    freq = np.asarray(arr["frequency"], dtype=np.int64)
    aoa = np.asarray(arr["aoa"], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_freq = np.where(freq > 0, np.log10(np.maximum(freq, 1)), np.nan)
    words = pd.DataFrame({
        "run": run, "word_type": np.asarray(arr["word_types"], dtype=np.int64),
        "word": np.asarray(arr["words"]).astype(str), "occurrences": counts, "frequency": freq,
        "log10_frequency": log_freq, "aoa": aoa, "aoa_step": np.power(10.0, aoa), "status": status,
        # the fit gives "too few points" to a type with no masked occurrence too; say which it is
        "reason": [NEVER_MASKED if c == 0 else names[k] if 0 <= k < len(names) else f"status {k}"
                   for c, k in zip(counts, status, strict=True)],
        **{p: np.asarray(arr[p], dtype=np.float64) for p in ("hi", "lo", "k", "x0")}})[WORD_COLUMNS]
    steps = np.asarray(arr["steps"], dtype=np.int64)
    tokens = np.asarray(arr.get("tokens_seen", np.full(len(steps), -1)), dtype=np.int64)
    surprisal = np.asarray(arr["surprisal"], dtype=np.float64)
    t, j = np.meshgrid(np.arange(len(words)), np.arange(len(steps)), indexing="ij")
    points = pd.DataFrame({"run": run, "word": words["word"].to_numpy()[t.ravel()], "step": steps[j.ravel()],
                           "tokens_seen": np.where(tokens < 0, np.nan, tokens.astype(float))[j.ravel()],
                           "surprisal": surprisal.ravel()})
    points = points[np.isfinite(points["surprisal"])].reset_index(drop=True)[POINT_COLUMNS]
    return RunAcquisition(run, words, points, int(arr["vocab"]), tuple(int(s) for s in steps))


@st.cache_data(show_spinner=False, max_entries=64)
def summary(db: str, stamp: Stamp, runs: tuple[str, ...], probe_hash: str | None = None) -> pd.DataFrame:
    """Per run the stored acquisition rows (`SUMMARY_COLUMNS`): Spearman ρ(AoA, log10 frequency) and its 95%
    interval, the share of types with an AoA, the median AoA (log10 step) and that as a step. NaN where the
    probe stored the metric as undefined; runs without the family are left out."""
    with open_store(db) as s:
        df = s.metrics(list(SUMMARY_METRICS), run=list(runs), probe_hash=probe_hash)
    rows = []
    for run in runs:
        r = df[df["run"] == run] if len(df) else df
        if r.empty:
            continue
        r = r[r["step"] == r["step"].max()]  # the analysis of the whole series, at its last measured step
        row: dict[str, object] = {"run": run}
        for metric, columns in SUMMARY_METRICS.items():
            for variant, column in columns.items():
                v = r[(r["metric"] == metric) & (r["variant"].fillna("all") == variant)]["value"]
                value = pd.to_numeric(v, errors="coerce").iloc[0] if len(v) else np.nan
                row[column] = float(value) if pd.notna(value) else np.nan
        row["median_step"] = 10.0 ** row["median_aoa"]  # type: ignore[operator]
        rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


@st.cache_data(show_spinner=False, max_entries=64)
def missing_reason(db: str, stamp: Stamp, run: str, probe_hash: str | None = None) -> str:
    """Why `run` has no word acquisition in the store, in a sentence for the page."""
    with open_store(db) as s:
        if "arrays" not in s.table_names():
            return ("this store comes from a probe that kept no arrays; re-run `python -m dynamics.probe` on the run "
                    "for word acquisition")
        surprisal = s.arrays("word_surprisal", run=run, probe_hash=probe_hash)
        masked = s.metrics("masked_surprisal", run=[run], probe_hash=probe_hash)
        notes = s.notes(probe_hash)
    if len(surprisal):
        return ("its per-snapshot surprisal is stored but the curves are not fitted yet: the probe fits them after "
                f"measuring all of a run's snapshots (family `{FAMILY}`)")
    head = notes[(notes["run"] == run) & notes["note"].str.contains("head", case=False)] if len(notes) else notes
    if len(masked) == 0 and len(head):
        return f"the probe found no MLM or next-token head ({head['note'].iloc[0]}), so there are no learning curves"
    if len(masked):
        return ("its masked-token surprisal is stored but not per word type: a probe older than word acquisition "
                "wrote it; re-run `python -m dynamics.probe` on the run")
    return ("no masked-token surprisal is stored for it (a model without an MLM or next-token head, or a probe run "
            "without the anchors family), so there are no learning curves")


def status_counts(words: pd.DataFrame) -> dict[str, int]:
    """How many word types have an AoA ("fitted") and how many have none, by reason (`RunAcquisition.words`'
    `reason`), in the order of `dynamics.metrics.acquisition.STATUS` with types never masked last; zero counts
    are left out."""
    counts = words["reason"].value_counts()
    order = [*STATUS, NEVER_MASKED] + sorted(set(counts.index) - {*STATUS, NEVER_MASKED})
    return {name: int(counts[name]) for name in order if name in counts.index}


def scatter_frame(acquisitions: Sequence[RunAcquisition]) -> pd.DataFrame:
    """The word types with an AoA and a known training frequency, of every run (`WORD_COLUMNS`)."""
    parts = [a.words[np.isfinite(a.words["aoa"]) & (a.words["frequency"] > 0)] for a in acquisitions]
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


def extremes(words: pd.DataFrame, n: int) -> pd.DataFrame:
    """The `n` earliest and `n` latest learned word types (by AoA; ties by word), earliest first, each once, with
    a `learned` column ("earliest" / "latest")."""
    fitted = words[np.isfinite(words["aoa"])].sort_values(["aoa", "word"], kind="stable")
    early = fitted.head(n)
    late = fitted.iloc[max(n, len(fitted) - n):]
    return pd.concat([early.assign(learned="earliest"), late.assign(learned="latest")], ignore_index=True)
