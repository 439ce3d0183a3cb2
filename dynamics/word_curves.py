"""A run's word-acquisition analysis, after its snapshots are measured: each snapshot's per-word-type surprisal
(the `word_surprisal` arrays the anchors family stores) joined into learning curves, one sigmoid per word type,
and the registered `acquisition` metrics (`dynamics.metrics.acquisition`), stored as a run-level family.

Stored (family "acquisition", `Store.write_run_family`): the metric rows at the run's last measured step (an
analysis of the whole series up to there), and the array `word_acquisition` at step −1 with, per word type
(T of them): `word_types` ids, `words` strings, `counts` masked occurrences, `frequency` training counts (the
probe set's own counts when the run has none, noted), `surprisal` (T, S) curves, the fit `hi`, `lo`, `k`, `x0`,
`aoa` (log10 step, NaN without one) and `status` (index into `STATUS`, saved as `status_names`); and `steps`
(S,), `tokens_seen` (S,) (−1 unknown), `vocab` V.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dynamics import store as st
from dynamics.families import family_params
from dynamics.metrics import registry
from dynamics.metrics.acquisition import STATUS, WordCurves

FAMILY = "acquisition"
KIND = "word_acquisition"


def curves(store: st.Store, run: str, probe_hash: str, frequency: np.ndarray, seed: int) -> tuple[WordCurves, list[int]] | None:
    """The run's learning curves from its stored `word_surprisal` arrays (None when none are stored), and the
    steps they come from."""
    rows = store.arrays("word_surprisal", run=run, probe_hash=probe_hash)
    rows = rows[rows["step"] >= 0].sort_values("step")
    if rows.empty:
        return None
    parts = [store.load_array(f) for f in rows["file"]]
    steps = [int(s) for s in rows["step"]]
    surprisal = np.stack([p["mean"] for p in parts], axis=1)
    counts = parts[-1]["count"]
    return WordCurves(np.asarray(steps, dtype=np.int64), surprisal, counts, frequency,
                      int(parts[-1]["vocab"]), seed), steps


def measure_run(store: st.Store, run: str, probe_hash: str, *, word_types: np.ndarray, words: Sequence[str],
                train_counts: np.ndarray | None, probe_counts: np.ndarray, seed: int, done: str | None,
                force: bool = False) -> bool:
    """Fit and store the run's word acquisition unless the stored result covers the same steps (`done`: the params
    the store holds for it). Returns whether it was computed."""
    freq_source = "training counts" if train_counts is not None else "probe set"
    counts = train_counts if train_counts is not None else probe_counts
    frequency = counts[word_types].astype(np.int64) if counts.size else np.zeros(len(word_types), np.int64)
    got = curves(store, run, probe_hash, frequency, seed)
    if got is None:
        return False
    wc, steps = got
    params = family_params(FAMILY, steps=",".join(map(str, steps)), frequency=freq_source.replace(" ", "_"), seed=seed)
    if done == params and not force:
        return False
    last = steps[-1]
    rows = []
    notes = [] if train_counts is not None else ["word acquisition: no training token counts, so frequencies are "
                                                 "the probe set's own counts"]
    layer = _layer(store, run, probe_hash)
    for metric in registry.metrics(FAMILY, "series"):
        try:
            value = metric({"word_curves": wc})
        except ValueError as exc:
            rows += [(layer, metric.name, v, None) for v in metric.variants]
            notes.append(f"{metric.name} undefined: {exc}")
            continue
        values = value if isinstance(value, dict) else {"all": value}
        rows += [(layer, metric.name, v, x) for v, x in values.items()]
    status = wc.status
    seen = wc.counts > 0
    tally = ", ".join(f"{int((status[seen] == k).sum())} {name}" for k, name in enumerate(STATUS)
                      if (status[seen] == k).any())
    notes.append(f"word acquisition over {len(steps)} snapshots, {int(seen.sum())} word types with masked "
                 f"occurrences: {tally}")
    fits = wc.fits()
    tokens = store.tokens_seen(run, steps)
    arrays = {KIND: {"word_types": np.asarray(word_types, dtype=np.int64), "words": np.asarray(list(words)),
                     "counts": wc.counts, "frequency": wc.frequency, "surprisal": wc.surprisal,
                     "hi": np.array([f.hi for f in fits]), "lo": np.array([f.lo for f in fits]),
                     "k": np.array([f.k for f in fits]), "x0": np.array([f.x0 for f in fits]),
                     "aoa": wc.aoa, "status": status, "status_names": np.asarray(STATUS),
                     "steps": wc.steps, "tokens_seen": np.asarray([-1 if t is None else t for t in tokens], np.int64),
                     "vocab": np.array(wc.vocab, dtype=np.int64)}}
    store.write_run_family(run=run, family=FAMILY, probe_hash=probe_hash, params=params,
                           step_rows={last: (tokens[-1], rows)}, arrays=arrays, notes=notes)
    return True


def _layer(store: st.Store, run: str, probe_hash: str) -> int:
    """The last layer, where the head's metrics are stored (that of the run's masked_surprisal rows)."""
    df = store.metrics("masked_surprisal", run=run, probe_hash=probe_hash)
    return int(df["layer"].max()) if not df.empty else 0


def stored(store: st.Store, run: str, probe_hash: str | None = None) -> dict[str, np.ndarray] | None:
    """The run's stored `word_acquisition` array (module docstring), or None."""
    df = store.arrays(KIND, run=run, step=-1, probe_hash=probe_hash)
    return None if df.empty else store.load_array(df.iloc[0]["file"])


def probe_word_strings(store_root: Path, probe_file: str) -> list[str]:
    """The word types' strings saved with the probe set (`ProbeSet.save`)."""
    with np.load(store_root / probe_file, allow_pickle=False) as data:
        return [str(w) for w in data["word_type_strings"]]
