"""Cached loaders of a results store's arrays (the `.npz` files the `arrays` table names) as tidy frames: which
snapshots have an array, step × step and layer × layer CKA, and the 2-D token projections."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence

import numpy as np
import pandas as pd
import streamlit as st

from app.data.errors import DataError
from app.data.stamps import Stamp
from app.data.store_open import open_store
from dynamics import store as dstore


@st.cache_data(show_spinner=False, max_entries=128)
def array_steps(db: str, stamp: Stamp, kind: str, run: str, probe_hash: str | None = None) -> list[int]:
    """Steps of `run` that have an array of `kind` (e.g. "cka_layers", "projection"), ascending."""
    with open_store(db) as s:
        df = s.arrays(kind, run=run, probe_hash=probe_hash)
    df = df[(df["kind"] == kind) & (df["run"] == run)]
    return sorted(int(x) for x in df["step"] if int(x) >= 0)


def _load(s: dstore.Store, kind: str, run: str, step: int, probe_hash: str | None) -> dict[str, np.ndarray] | None:
    """The arrays of `kind` stored for (run, step) (None when there are none); `DataError` when the file named
    for them cannot be read."""
    df = s.arrays(kind, run=run, step=step, probe_hash=probe_hash)
    df = df[(df["kind"] == kind) & (df["run"] == run) & (df["step"] == step)]
    if df.empty:
        return None
    try:
        return s.load_array(str(df["file"].iloc[0]))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # truncated .npz files are zip errors
        raise DataError(f"{s.root}: the {kind} array of {run} at step {step} cannot be read ({exc}); the probe may be "
                        "rewriting it, refresh in a moment") from exc


@st.cache_data(show_spinner=False, max_entries=32)
def cka_steps(db: str, stamp: Stamp, run: str, variant: str = "debiased",
              probe_hash: str | None = None) -> pd.DataFrame:
    """Step × step CKA of every layer: layer, step_a, step_b, tokens_a, tokens_b, value (empty when not stored)."""
    cols = ["layer", "step_a", "step_b", "tokens_a", "tokens_b", "value"]
    with open_store(db) as s:
        arr = _load(s, "cka_steps", run, -1, probe_hash)
    if arr is None or variant not in arr:
        return pd.DataFrame(columns=cols)
    mat = np.asarray(arr[variant], dtype=float)
    steps = np.asarray(arr["steps"], dtype=np.int64)
    tokens = np.asarray(arr.get("tokens_seen", np.full(len(steps), -1)), dtype=np.int64)
    n_layers, n = mat.shape[0], len(steps)
    li, ai, bi = np.meshgrid(np.arange(n_layers), np.arange(n), np.arange(n), indexing="ij")
    tok = np.where(tokens < 0, np.nan, tokens.astype(float))
    return pd.DataFrame({"layer": li.ravel(), "step_a": steps[ai.ravel()], "step_b": steps[bi.ravel()],
                         "tokens_a": tok[ai.ravel()], "tokens_b": tok[bi.ravel()], "value": mat.ravel()})[cols]


@st.cache_data(show_spinner=False, max_entries=64)
def cka_layers(db: str, stamp: Stamp, run: str, step: int, variant: str = "debiased",
               probe_hash: str | None = None) -> pd.DataFrame:
    """Layer × layer CKA of one snapshot: layer_a, layer_b, value (empty when not stored)."""
    with open_store(db) as s:
        arr = _load(s, "cka_layers", run, step, probe_hash)
    if arr is None or variant not in arr:
        return pd.DataFrame(columns=["layer_a", "layer_b", "value"])
    mat = np.asarray(arr[variant], dtype=float)
    a, b = np.meshgrid(np.arange(mat.shape[0]), np.arange(mat.shape[1]), indexing="ij")
    return pd.DataFrame({"layer_a": a.ravel(), "layer_b": b.ravel(), "value": mat.ravel()})


@st.cache_data(show_spinner=False, max_entries=64)
def projection(db: str, stamp: Stamp, run: str, step: int, probe_hash: str | None = None) -> pd.DataFrame:
    """2-D projections of the fixed token sample at one snapshot, tidy: view ("h" every layer; "e" = layer 0;
    "g" = h − e for layers ≥ 1 when the store has `xy_g`), layer, point, x, y, token, sequence, freq_bin,
    explained_x, explained_y. Empty when the snapshot has no projection."""
    cols = ["view", "layer", "point", "x", "y", "token", "sequence", "freq_bin", "explained_x", "explained_y"]
    with open_store(db) as s:
        arr = _load(s, "projection", run, step, probe_hash)
    if arr is None or "xy" not in arr:
        return pd.DataFrame(columns=cols)
    n = arr["xy"].shape[1]
    names = [str(b) for b in arr.get("bin_names", np.array([]))]
    bins = np.asarray(arr.get("freq_bin", np.full(n, -1)), dtype=np.int64)
    common = {
        "point": np.arange(n),
        "token": np.asarray(arr.get("tokens", np.array([""] * n))).astype(str),
        "sequence": np.asarray(arr.get("seq_ids", np.zeros(n)), dtype=np.int64),
        "freq_bin": [names[b] if 0 <= b < len(names) else "unknown" for b in bins],
    }
    parts = []

    def add(view: str, xy: np.ndarray, explained: np.ndarray | None, layers: Sequence[int]) -> None:
        if explained is not None:  # (layers, 2), or (2,) for a single layer such as `explained_e`
            explained = np.atleast_2d(np.asarray(explained, dtype=float))
        for k, layer in enumerate(layers):
            ex = explained[k] if explained is not None and len(explained) > k else (np.nan, np.nan)
            parts.append(pd.DataFrame({"view": view, "layer": layer, **common, "x": xy[k, :, 0], "y": xy[k, :, 1],
                                       "explained_x": float(ex[0]), "explained_y": float(ex[1])}))

    xy, ex = np.asarray(arr["xy"], dtype=float), arr.get("explained")
    add("h", xy, ex, range(xy.shape[0]))
    if "xy_e" in arr:
        add("e", np.asarray(arr["xy_e"], dtype=float)[None] if arr["xy_e"].ndim == 2 else arr["xy_e"],
            arr.get("explained_e", None if ex is None else ex[:1]), [0])
    else:
        add("e", xy[:1], None if ex is None else ex[:1], [0])
    if "xy_g" in arr:
        xg = np.asarray(arr["xy_g"], dtype=float)
        first = xy.shape[0] - xg.shape[0]  # g is stored for layers 1…L (g ≡ 0 at layer 0)
        add("g", xg, arr.get("explained_g"), range(first, xy.shape[0]))
    return pd.concat(parts, ignore_index=True)[cols]
