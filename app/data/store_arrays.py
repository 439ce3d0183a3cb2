"""Cached loaders of a results store's arrays (the `.npz` files the `arrays` table names) as tidy frames: which
snapshots have an array, step × step and layer × layer CKA, and the 2-D token projections."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from app.data.errors import DAMAGE, DataError, named
from app.data.stamps import Stamp
from app.data.store_open import open_store
from app.data.store_tables import typed
from dynamics.results import store as dstore


@named("table `arrays`")
@st.cache_data(show_spinner=False, max_entries=128)
def array_steps(db: str, stamp: Stamp, kind: str, run: str, probe_hash: str | None = None) -> list[int]:
    """Steps of `run` that have an array of `kind` (e.g. "cka_layers", "projection"), ascending."""
    with open_store(db) as s:
        df = typed(s.arrays(kind, run=run, probe_hash=probe_hash), whole=("step",))
    df = df[(df["kind"] == kind) & (df["run"] == run)]
    return sorted(int(x) for x in df["step"] if int(x) >= 0)


@contextmanager
def _reading(root: Path, file: str, kind: str, run: str, step: int) -> Iterator[None]:
    """Turn a failure on an array's contents (a key its kind has missing, a wrong shape, text for numbers) into a
    `DataError` naming the store, the file and what it should hold."""
    try:
        yield
    except DAMAGE as exc:
        at = "the run" if step < 0 else f"step {step}"
        raise DataError(f"{root}/{file}: the {kind} array of {run} at {at} is damaged ({type(exc).__name__}: {exc}); "
                        "re-run python -m dynamics.probe on the run (with --force) to write it again") from exc


def _load(s: dstore.Store, kind: str, run: str, step: int, probe_hash: str | None,
          keys: tuple[str, ...] = ()) -> tuple[dict[str, np.ndarray], str] | None:
    """The arrays of `kind` stored for (run, step) and their file (None when there are none); `DataError` naming
    the file when it cannot be read or lacks one of `keys`."""
    df = s.arrays(kind, run=run, step=step, probe_hash=probe_hash)
    df = df[(df["kind"] == kind) & (df["run"] == run) & (df["step"] == step)]
    if df.empty:
        return None
    file = str(df["file"].iloc[0])
    try:
        arr = s.load_array(file)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # truncated .npz files are zip errors
        raise DataError(f"{s.root}: the {kind} array of {run} at step {step} cannot be read ({exc}); the probe may be "
                        "rewriting it, refresh in a moment") from exc
    missing = [k for k in keys if k not in arr]
    if missing:
        raise DataError(f"{s.root}/{file}: the {kind} array of {run} lacks {', '.join(missing)} (it holds "
                        f"{', '.join(sorted(arr)) or 'nothing'}); re-run python -m dynamics.probe on the run (with "
                        "--force) to write it again")
    return arr, file


@named("a step × step CKA array")
@st.cache_data(show_spinner=False, max_entries=32)
def cka_steps(db: str, stamp: Stamp, run: str, variant: str = "debiased",
              probe_hash: str | None = None) -> pd.DataFrame:
    """Step × step CKA of every layer: layer, step_a, step_b, tokens_a, tokens_b, value (empty when not stored)."""
    cols = ["layer", "step_a", "step_b", "tokens_a", "tokens_b", "value"]
    with open_store(db) as s:
        found, root = _load(s, "cka_steps", run, -1, probe_hash, keys=("steps",)), s.root
    if found is None or variant not in found[0]:
        return pd.DataFrame(columns=cols)
    arr, file = found
    with _reading(root, file, "cka_steps", run, -1):
        mat = np.asarray(arr[variant], dtype=float)
        steps = np.asarray(arr["steps"], dtype=np.int64)
        tokens = np.asarray(arr.get("tokens_seen", np.full(len(steps), -1)), dtype=np.int64)
        n_layers, n = mat.shape[0], len(steps)
        if mat.shape != (n_layers, n, n) or tokens.shape != (n,):
            raise ValueError(f"{variant} has shape {mat.shape} and tokens_seen {tokens.shape} for {n} steps")
        li, ai, bi = np.meshgrid(np.arange(n_layers), np.arange(n), np.arange(n), indexing="ij")
        tok = np.where(tokens < 0, np.nan, tokens.astype(float))
        return pd.DataFrame({"layer": li.ravel(), "step_a": steps[ai.ravel()], "step_b": steps[bi.ravel()],
                             "tokens_a": tok[ai.ravel()], "tokens_b": tok[bi.ravel()], "value": mat.ravel()})[cols]


@named("a layer × layer CKA array")
@st.cache_data(show_spinner=False, max_entries=64)
def cka_layers(db: str, stamp: Stamp, run: str, step: int, variant: str = "debiased",
               probe_hash: str | None = None) -> pd.DataFrame:
    """Layer × layer CKA of one snapshot: layer_a, layer_b, value (empty when not stored)."""
    with open_store(db) as s:
        found, root = _load(s, "cka_layers", run, step, probe_hash), s.root
    if found is None or variant not in found[0]:
        return pd.DataFrame(columns=["layer_a", "layer_b", "value"])
    arr, file = found
    with _reading(root, file, "cka_layers", run, step):
        mat = np.asarray(arr[variant], dtype=float)
        if mat.ndim != 2:
            raise ValueError(f"{variant} has shape {mat.shape}, not layers × layers")
        a, b = np.meshgrid(np.arange(mat.shape[0]), np.arange(mat.shape[1]), indexing="ij")
        return pd.DataFrame({"layer_a": a.ravel(), "layer_b": b.ravel(), "value": mat.ravel()})


@named("a token projection array")
@st.cache_data(show_spinner=False, max_entries=64)
def projection(db: str, stamp: Stamp, run: str, step: int, probe_hash: str | None = None) -> pd.DataFrame:
    """2-D projections of the fixed token sample at one snapshot, tidy: view ("h" every layer; "e" = layer 0;
    "g" = h − e for layers ≥ 1 when the store has `xy_g`), layer, point, x, y, token, sequence, freq_bin,
    explained_x, explained_y. Empty when the snapshot has no projection."""
    cols = ["view", "layer", "point", "x", "y", "token", "sequence", "freq_bin", "explained_x", "explained_y"]
    with open_store(db) as s:
        found, root = _load(s, "projection", run, step, probe_hash), s.root
    if found is None or "xy" not in found[0]:
        return pd.DataFrame(columns=cols)
    arr, file = found
    with _reading(root, file, "projection", run, step):
        return _projection_frame(arr, cols)


def _projection_frame(arr: dict[str, np.ndarray], cols: list[str]) -> pd.DataFrame:
    """The tidy frame of one stored projection (`projection`); ValueError/KeyError/IndexError when damaged."""
    if arr["xy"].ndim != 3 or arr["xy"].shape[2] != 2:
        raise ValueError(f"xy has shape {arr['xy'].shape}, not layers × points × 2")
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
