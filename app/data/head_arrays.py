"""Cached loader of the attention and copying families' per-head arrays as a tidy frame (step, layer, head, value),
through `dynamics.results.heads` (the app reads results, never the metric modules)."""

from __future__ import annotations

import zipfile

import pandas as pd
import streamlit as st

from app.data.errors import DataError, named
from app.data.stamps import Stamp
from app.data.store_open import open_store
from dynamics.results import heads

QUANTITIES = heads.LABELS


@named("a per-head attention array")
@st.cache_data(show_spinner=False, max_entries=64)
def head_frame(db: str, stamp: Stamp, run: str, quantity: str, probe_hash: str | None = None) -> pd.DataFrame:
    """Per-head values of `quantity` over `run`'s snapshots: step, layer (1…L), head, value (empty when none)."""
    cols = ["step", "layer", "head", "value"]
    with open_store(db) as s:
        try:
            series = heads.head_series(s, run, quantity, probe_hash)
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"{s.root}: the per-head {quantity} arrays of {run} cannot be read ({exc}); re-run "
                            "python -m dynamics.probe on the run (with --force) to write them again") from exc
    if series is None:
        return pd.DataFrame(columns=cols)
    rows = [(int(step), layer + 1, head, float(series.values[k, layer, head]))
            for k, step in enumerate(series.steps) for layer in range(series.values.shape[1])
            for head in range(series.values.shape[2])]
    return pd.DataFrame(rows, columns=cols)


@named("the available per-head quantities")
@st.cache_data(show_spinner=False, max_entries=64)
def quantities(db: str, stamp: Stamp, probe_hash: str | None = None) -> list[str]:
    """The per-head quantities stored for any run (keys of `QUANTITIES`, in its order)."""
    with open_store(db) as s:
        kinds = set(s.arrays(probe_hash=probe_hash)["kind"])
    return [q for q in QUANTITIES if heads.KIND_OF[q] in kinds]
