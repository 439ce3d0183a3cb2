"""A run's word acquisition, read back: the run-level family `acquisition` (`dynamics.measure.run_families`) joins each
snapshot's per-word-type surprisal (the `word_surprisal` arrays the anchors family stores) into learning curves,
fits one sigmoid per word type and stores the registered `acquisition` metrics (`dynamics.metrics.acquisition`).

Stored (family "acquisition"): the metric rows at the run's last measured step (an
analysis of the whole series up to there), and the array `word_acquisition` at step −1 with, per word type
(T of them): `word_types` ids, `words` strings, `counts` masked occurrences, `frequency` training counts (the
probe set's own counts when the run has none, noted), `surprisal` (T, S) curves, the fit `hi`, `lo`, `k`, `x0`,
`aoa` (log10 step, NaN without one) and `status` (index into `STATUS`, saved as `status_names`); and `steps`
(S,), `tokens_seen` (S,) (−1 unknown), `vocab` V.

Read back (for the report, the figures and the app, one copy): `stored` (the array), `word_table` (one row per
word type), `summary_table` (the metric rows per run), `status_counts`, `correlated_words`, `extremes`, and
`missing_reason` (why a run has none). Ages of acquisition are stored as log10 of the step; the tables carry both
that (`aoa`) and the step it stands for (`aoa_step` = 10^aoa).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from dynamics.metrics.acquisition import STATUS
from dynamics.results import store as st

FAMILY = "acquisition"
KIND = "word_acquisition"
WORD_COLUMNS = ["run", "word_type", "word", "occurrences", "frequency", "log10_frequency", "aoa", "aoa_step",
                "status", "reason", "hi", "lo", "k", "x0"]
SUMMARY_COLUMNS = ["run", "rho", "ci_low", "ci_high", "fitted_share", "median_aoa", "median_step"]
SUMMARY_METRICS = {"aoa_freq_spearman": {"all": "rho", "ci_low": "ci_low", "ci_high": "ci_high"},
                   "aoa_fitted_share": {"all": "fitted_share"}, "aoa_median": {"all": "median_aoa"}}
NEVER_MASKED = "no masked occurrence"  # a type of the probe set that no masked position hit (stored status 1)


def stored(store: st.Store, run: str, probe_hash: str | None = None) -> dict[str, np.ndarray] | None:
    """The run's stored `word_acquisition` array (module docstring), or None."""
    df = store.arrays(KIND, run=run, step=-1, probe_hash=probe_hash)
    return None if df.empty else store.load_array(df.iloc[0]["file"])


def word_table(arr: dict[str, np.ndarray], run: str) -> pd.DataFrame:
    """One row per word type of a stored `word_acquisition` array (`WORD_COLUMNS`): its masked occurrences,
    training frequency and log10 of it (NaN when 0), AoA (log10 step) and `aoa_step` (the step, 10^aoa; NaN
    without an AoA), fit status and its `reason` (a `STATUS` name, or `NEVER_MASKED` for a type with no masked
    occurrence, which the fit also calls "too few points"), and the fitted sigmoid's hi, lo, k, x0."""
    names = [str(n) for n in arr.get("status_names", np.asarray(STATUS))]
    counts = np.asarray(arr["counts"], dtype=np.int64)
    status = np.asarray(arr["status"], dtype=np.int64)
    freq = np.asarray(arr["frequency"], dtype=np.int64)
    aoa = np.asarray(arr["aoa"], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_freq = np.where(freq > 0, np.log10(np.maximum(freq, 1)), np.nan)
    return pd.DataFrame({
        "run": run, "word_type": np.asarray(arr["word_types"], dtype=np.int64),
        "word": np.asarray(arr["words"]).astype(str), "occurrences": counts, "frequency": freq,
        "log10_frequency": log_freq, "aoa": aoa, "aoa_step": np.power(10.0, aoa), "status": status,
        "reason": [NEVER_MASKED if c == 0 else names[k] if 0 <= k < len(names) else f"status {k}"
                   for c, k in zip(counts, status, strict=True)],
        **{p: np.asarray(arr[p], dtype=np.float64) for p in ("hi", "lo", "k", "x0")}})[WORD_COLUMNS]


def summary_table(rows: pd.DataFrame, runs: Sequence[str]) -> pd.DataFrame:
    """Per run the stored acquisition rows (`SUMMARY_COLUMNS`) from the store's metric rows `rows`
    (`Store.metrics`, any metrics): Spearman ρ(AoA, log10 frequency) and its 95% bootstrap interval, the share of
    types with an AoA (of those with masked occurrences), the median AoA (log10 step) and that as a step. NaN
    where the probe stored the metric as undefined; runs without the family are left out."""
    out = []
    for run in runs:
        r = rows[(rows["run"] == run) & rows["metric"].isin(list(SUMMARY_METRICS))] if len(rows) else rows
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
        out.append(row)
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


def status_counts(words: pd.DataFrame) -> dict[str, int]:
    """How many word types have an AoA ("fitted") and how many have none, by reason (`word_table`'s `reason`), in
    the order of `STATUS` with types never masked last; zero counts are left out."""
    counts = words["reason"].value_counts()
    order = [*STATUS, NEVER_MASKED] + sorted(set(counts.index) - {*STATUS, NEVER_MASKED})
    return {name: int(counts[name]) for name in order if name in counts.index}


def correlated_words(words: pd.DataFrame) -> pd.DataFrame:
    """The rows of `words` (`word_table`) with an AoA and a known training frequency: the types `aoa_freq_spearman`
    correlates."""
    return words[np.isfinite(words["aoa"]) & (words["frequency"] > 0)]


def extremes(words: pd.DataFrame, n: int) -> pd.DataFrame:
    """The `n` earliest and `n` latest learned word types of `words` (`word_table`; by AoA, ties by word),
    earliest first, each once, with a `learned` column ("earliest" / "latest")."""
    fitted = words[np.isfinite(words["aoa"])].sort_values(["aoa", "word"], kind="stable")
    early = fitted.head(n)
    late = fitted.iloc[max(n, len(fitted) - n):]
    return pd.concat([early.assign(learned="earliest"), late.assign(learned="latest")], ignore_index=True)


def missing_reason(store: st.Store, run: str, probe_hash: str | None = None) -> str:
    """Why `run` has no word acquisition in `store`, in a sentence (lower case, no final stop)."""
    if "arrays" not in store.table_names():
        return ("this store comes from a probe that kept no arrays; re-run `python -m dynamics.probe` on the run "
                "for word acquisition")
    surprisal = store.arrays("word_surprisal", run=run, probe_hash=probe_hash)
    masked = store.metrics("masked_surprisal", run=[run], probe_hash=probe_hash)
    notes = store.notes(probe_hash)
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
