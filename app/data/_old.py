"""Data access for the app: pure functions over run directories and results stores, returning tidy DataFrames.

Every loader that reads a file takes the file's `stamp` (modification times and sizes; for a store, those of the
database and its `-wal` file) as an argument, so `st.cache_data` keys on (path, stamp): while `dynamics.probe`
is still writing, the next rerun sees a new stamp and reads the new rows (SQLite WAL lets readers in at any
time). Stores are read through `dynamics.store.open(path, readonly=True)`; a store written by an older probe
(a table or column missing) is read with what it has. Problems the user should see become `DataError`s, which
the pages turn into a message.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app.definitions import distance, family_of, task_label, task_order
from dynamics import store as dstore

DEFAULT_DIRS = ("runs", "experiments/results")
DB_NAME = dstore.DB_NAME
MAX_DEPTH = 4
SKIP_DIRS = frozenset({"snapshots", "state", "tokenizer", "data", "arrays", "figures", "__pycache__", "node_modules"})
LOG_QUANTITIES = ("loss", "mlm_loss", "tc_loss", "mlm_accuracy", "lr", "tokens_per_s", "grad_norm", "elapsed_s")
VIEWS = ("h", "e", "g")
DOWNSTREAM = "downstream"  # family and probe_hash of `experiments.evaluate`'s rows (see `experiments.results`)
DOWNSTREAM_COLUMNS = ["run", "step", "tokens_seen", "mode", "layer", "task", "name", "stat", "value"]

# What the app reads from each table; a store lacking any of these was written by an older (or other) probe.
REQUIRED: dict[str, tuple[str, ...]] = {
    "runs": ("name", "path", "kind", "objective", "meta"),
    "snapshots": ("run", "step", "tokens_seen"),
    "probe_sets": ("hash", "source", "n_blocks", "n_tokens", "used"),
    "metrics": ("run", "step", "tokens_seen", "layer", "metric", "variant", "value", "family", "probe_hash"),
    "arrays": ("run", "step", "kind", "probe_hash", "family", "file"),
    "completed": ("run", "step", "family", "probe_hash"),
    "notes": ("run", "step", "probe_hash", "family", "note"),
}
_LOST = {"runs": "run names and paths", "snapshots": "the snapshot list", "probe_sets": "the probe set",
         "metrics": "all metric curves", "arrays": "CKA heatmaps and token projections",
         "completed": "progress (measured snapshots)", "notes": "notes"}

Stamp = tuple[int, ...]


class DataError(Exception):
    """A problem with a store or run directory that the page states as a message."""


@dataclass(frozen=True)
class Sources:
    """What was found under the directories the app was given."""

    runs: tuple[str, ...] = ()  # run directories (holding run.json)
    stores: tuple[str, ...] = ()  # results databases
    missing: tuple[str, ...] = ()  # given paths that do not exist
    searched: tuple[str, ...] = ()  # the given paths

    @property
    def empty(self) -> bool:
        return not self.runs and not self.stores


# ----------------------------------------------------------------------------------------------------- finding

def discover(dirs: Sequence[str | Path]) -> Sources:
    """Run directories and results stores under `dirs` (searched `MAX_DEPTH` folders deep, skipping snapshot,
    state and array folders), plus the run directories that each store names and that exist here."""
    runs: dict[str, None] = {}
    stores: dict[str, None] = {}
    missing = []
    for given in dirs:
        root = Path(given).expanduser()
        if not root.exists():
            missing.append(str(given))
        elif root.is_file():
            if root.suffix in (".sqlite", ".db"):
                stores[str(root.resolve())] = None
        else:
            for folder in _walk(root):
                if (folder / "run.json").is_file():
                    runs[str(folder.resolve())] = None
                if (folder / DB_NAME).is_file():
                    stores[str((folder / DB_NAME).resolve())] = None
    for db in list(stores):
        for path in _store_run_paths(db):
            if (Path(path) / "run.json").is_file():
                runs[str(Path(path).resolve())] = None
    return Sources(tuple(sorted(runs)), tuple(sorted(stores)), tuple(missing), tuple(str(d) for d in dirs))


def _walk(root: Path) -> Iterator[Path]:
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        yield folder
        if depth >= MAX_DEPTH:
            continue
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir() and not entry.name.startswith(".") and entry.name not in SKIP_DIRS:
                stack.append((Path(entry.path), depth + 1))


def _store_run_paths(db: str) -> list[str]:
    try:
        with _open(db) as s:
            df = _compat(s, s.runs, "runs", ("name", "path"))
    except DataError:
        return []
    return [p for p in df["path"].dropna().astype(str)]


def stamp(path: str | Path) -> Stamp:
    """Modification time and size of a store's database and its `-wal` file (zeros where absent)."""
    out: list[int] = []
    for p in (str(path), f"{path}-wal"):
        try:
            st_ = os.stat(p)
            out += [st_.st_mtime_ns, st_.st_size]
        except OSError:
            out += [0, 0]
    return tuple(out)


def run_stamp(run_dir: str | Path) -> Stamp:
    """Modification times (and the log's size) of a run directory's run.json, log.jsonl and snapshots/."""
    root = Path(run_dir)
    out: list[int] = []
    for p in (root / "run.json", root / "log.jsonl", root / "snapshots"):
        try:
            st_ = os.stat(p)
            out += [st_.st_mtime_ns, st_.st_size if p.name == "log.jsonl" else 0]
        except OSError:
            out += [0, 0]
    return tuple(out)


# ------------------------------------------------------------------------------------------- store plumbing

@contextmanager
def _open(db: str | Path) -> Iterator[dstore.Store]:
    """A read-only store; any SQLite failure inside becomes a `DataError` naming the file."""
    try:
        s = dstore.open(db, readonly=True)
    except FileNotFoundError as exc:
        raise DataError(f"{db}: no results store here (moved or deleted?)") from exc
    except sqlite3.Error as exc:
        raise DataError(f"{db}: cannot open the results store ({exc})") from exc
    try:
        yield s
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{db}: cannot read the results store ({exc})") from exc
    finally:
        s.close()


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def _read_table(conn: sqlite3.Connection, table: str, columns: Sequence[str],
                where: dict[str, Any] | None = None) -> pd.DataFrame:
    """`columns` of `table` as far as the table has them (the rest as None), filtered by the `where` items whose
    column exists (a list value means IN); empty when the table does not exist."""
    have = _columns(conn, table)
    if not have:
        return pd.DataFrame(columns=list(columns))
    sel = [c for c in columns if c in have]
    clauses, args = [], []
    for col, val in (where or {}).items():
        if val is None or col not in have:
            continue
        vals = list(val) if isinstance(val, (list, tuple)) else [val]
        clauses.append(f"{col} IN ({','.join('?' * len(vals))})")
        args.extend(vals)
    sql = f"SELECT {', '.join(sel) or '1'} FROM {table}" + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
    cur = conn.execute(sql, args)
    df = pd.DataFrame(cur.fetchall(), columns=sel or ["1"])[sel]
    for col in columns:
        if col not in df:
            df[col] = None
    return df[list(columns)]


def _compat(s: dstore.Store, query: Callable[[], pd.DataFrame], table: str, columns: Sequence[str],
            where: dict[str, Any] | None = None) -> pd.DataFrame:
    """`query()` (a `Store` helper); for a store of an older schema, the same columns read by `_read_table`."""
    try:
        df = query()
    except sqlite3.OperationalError as exc:
        if "no such" not in str(exc):
            raise
        return _read_table(s.conn, table, columns, where)
    for col in columns:
        if col not in df:
            df[col] = None
    return df


def _hash(s: dstore.Store, probe_hash: str | None) -> str | None:
    if probe_hash:
        return probe_hash
    try:
        return s.latest_probe_hash()
    except sqlite3.OperationalError:
        return None


def _query_hashed(s: dstore.Store, method: Callable[..., pd.DataFrame], table: str, columns: Sequence[str],
                  probe_hash: str | None, where: dict[str, Any], **kwargs: Any) -> pd.DataFrame:
    """A `Store` helper under one probe set, or every row (older stores without probe sets)."""
    h = _hash(s, probe_hash)
    if h is None:
        return _read_table(s.conn, table, columns, where)
    return _compat(s, lambda: method(probe_hash=h, **kwargs), table, columns, {**where, "probe_hash": h})


# --------------------------------------------------------------------------------------------- store loaders

@st.cache_data(show_spinner=False, max_entries=64)
def store_problems(db: str, stamp: Stamp) -> list[str]:
    """What an older (or foreign) store lacks, in words: missing tables and columns and what they cost."""
    with _open(db) as s:
        out = []
        for table, cols in REQUIRED.items():
            have = _columns(s.conn, table)
            if not have:
                out.append(f"no `{table}` table, so no {_LOST[table]}")
            elif missing := [c for c in cols if c not in have]:
                out.append(f"table `{table}` lacks {', '.join(f'`{c}`' for c in missing)}")
        return out


@st.cache_data(show_spinner=False, max_entries=64)
def probe_sets(db: str, stamp: Stamp) -> pd.DataFrame:
    """The store's probe sets, most recently used first: hash, source, n_blocks, n_tokens, used."""
    cols = ("hash", "source", "n_blocks", "n_tokens", "used")
    with _open(db) as s:
        return _compat(s, s.probe_sets, "probe_sets", cols)[list(cols)]


@st.cache_data(show_spinner=False, max_entries=64)
def store_runs(db: str, stamp: Stamp, probe_hash: str | None = None) -> pd.DataFrame:
    """One row per run of the store: run, path, kind, objective, preset, snapshots (known), measured (snapshots
    with results under the probe set), last_step, last_tokens, probe_hash."""
    with _open(db) as s:
        runs = _compat(s, s.runs, "runs", ("name", "path", "kind", "objective", "meta"))
        snaps = _compat(s, s.snapshots, "snapshots", ("run", "step", "tokens_seen"))
        h = _hash(s, probe_hash)
        done = _query_hashed(s, s.completed, "completed", ("run", "step", "family"), h, {})
    names = sorted(set(runs["name"].dropna()) | set(snaps["run"].dropna()) | set(done["run"].dropna()))
    rows = []
    for name in names:
        info = runs[runs["name"] == name]
        meta = _json(info["meta"].iloc[0]) if len(info) else {}
        sn = snaps[snaps["run"] == name].sort_values("step")
        measured = done[(done["run"] == name) & (done["step"] >= 0)]["step"].nunique()
        rows.append({
            "run": name,
            "path": info["path"].iloc[0] if len(info) else None,
            "kind": info["kind"].iloc[0] if len(info) else None,
            "objective": (info["objective"].iloc[0] if len(info) else None) or meta.get("objective"),
            "preset": meta.get("preset"),
            "snapshots": len(sn),
            "measured": int(measured),
            "last_step": int(sn["step"].iloc[-1]) if len(sn) else None,
            "last_tokens": _int_or_none(sn["tokens_seen"].iloc[-1]) if len(sn) else None,
            "probe_hash": h if measured else None,
        })
    return pd.DataFrame(rows, columns=["run", "path", "kind", "objective", "preset", "snapshots", "measured",
                                       "last_step", "last_tokens", "probe_hash"])


@st.cache_data(show_spinner=False, max_entries=64)
def metric_catalog(db: str, stamp: Stamp, probe_hash: str | None = None) -> pd.DataFrame:
    """Distinct (family, metric, variant) stored under the probe set."""
    cols = ["family", "metric", "variant"]
    with _open(db) as s:
        h = _hash(s, probe_hash)
        if h is not None and not [c for c in REQUIRED["metrics"] if c not in _columns(s.conn, "metrics")]:
            return _catalog_by_index(s.conn, h)
        if h is not None:
            df = _compat(s, lambda: s.metric_names(h), "metrics", cols)
        else:
            df = _read_table(s.conn, "metrics", cols).drop_duplicates()
    df["family"] = df["family"].fillna(df["metric"].map(family_of)).fillna("unknown")  # older rows lack it
    df["variant"] = df["variant"].fillna("all")
    return df[cols].drop_duplicates().sort_values(cols).reset_index(drop=True)


def _catalog_by_index(conn: sqlite3.Connection, probe_hash: str) -> pd.DataFrame:
    """The catalog through the (probe_hash, metric) index, without `Store.metric_names`' count over every row
    (0.34 s against 0.14 s on the benchmark's 275k-row store): the distinct metrics by a skip scan of the index,
    then each metric's families and variants from its own index range."""
    metrics = [r[0] for r in conn.execute(
        "WITH RECURSIVE m(name) AS (SELECT MIN(metric) FROM metrics WHERE probe_hash=?1 UNION ALL "
        "SELECT (SELECT MIN(metric) FROM metrics WHERE probe_hash=?1 AND metric > m.name) FROM m "
        "WHERE m.name IS NOT NULL) SELECT name FROM m WHERE name IS NOT NULL", (probe_hash,))]
    rows = []
    for metric in metrics:
        found = conn.execute("SELECT DISTINCT family, variant FROM metrics INDEXED BY metrics_by_metric "
                             "WHERE probe_hash=? AND metric=?", (probe_hash, metric)).fetchall()
        rows += [(f or "unknown", metric, v or "all") for f, v in found]
    return pd.DataFrame(rows, columns=["family", "metric", "variant"]).drop_duplicates().sort_values(
        ["family", "metric", "variant"]).reset_index(drop=True)


@st.cache_data(show_spinner=False, max_entries=256)
def metric_rows(db: str, stamp: Stamp, metric: str, runs: tuple[str, ...] | None = None,
                probe_hash: str | None = None) -> pd.DataFrame:
    """Tidy rows of one metric: run, step, tokens_seen, layer, variant, value (NaN where undefined)."""
    cols = ("run", "step", "tokens_seen", "layer", "metric", "variant", "value", "family")
    with _open(db) as s:
        df = _query_hashed(s, s.metrics, "metrics", cols, probe_hash, {"metric": metric, "run": runs},
                           metric=metric, run=None if runs is None else list(runs))
    df = df[df["metric"] == metric] if len(df) else df
    out = df[["run", "step", "tokens_seen", "layer", "variant", "value"]].copy()
    out["variant"] = out["variant"].fillna("all")
    out["value"] = pd.to_numeric(out["value"], errors="coerce").astype(float)
    out["tokens_seen"] = pd.to_numeric(out["tokens_seen"], errors="coerce")
    return out.sort_values(["run", "variant", "layer", "step"]).reset_index(drop=True)


@st.cache_data(show_spinner=False, max_entries=64)
def measured(db: str, stamp: Stamp, probe_hash: str | None = None) -> pd.DataFrame:
    """Finished (run, step, family) units under the probe set (step −1 marks run-level families)."""
    with _open(db) as s:
        return _query_hashed(s, s.completed, "completed", ("run", "step", "family"), probe_hash, {})[
            ["run", "step", "family"]]


@st.cache_data(show_spinner=False, max_entries=64)
def notes(db: str, stamp: Stamp, probe_hash: str | None = None) -> pd.DataFrame:
    """Notes recorded while measuring: run, step, family, note."""
    with _open(db) as s:
        return _query_hashed(s, s.notes, "notes", ("run", "step", "family", "note"), probe_hash, {})[
            ["run", "step", "family", "note"]]


@st.cache_data(show_spinner=False, max_entries=128)
def array_steps(db: str, stamp: Stamp, kind: str, run: str, probe_hash: str | None = None) -> list[int]:
    """Steps of `run` that have an array of `kind` (e.g. "cka_layers", "projection"), ascending."""
    with _open(db) as s:
        df = _query_hashed(s, s.arrays, "arrays", ("run", "step", "kind", "file"), probe_hash,
                           {"kind": kind, "run": run}, kind=kind, run=run)
    df = df[(df["kind"] == kind) & (df["run"] == run)]
    return sorted(int(x) for x in df["step"] if int(x) >= 0)


def _load(s: dstore.Store, kind: str, run: str, step: int, probe_hash: str | None) -> dict[str, np.ndarray] | None:
    df = _query_hashed(s, s.arrays, "arrays", ("run", "step", "kind", "file"), probe_hash,
                       {"kind": kind, "run": run, "step": step}, kind=kind, run=run, step=step)
    df = df[(df["kind"] == kind) & (df["run"] == run) & (df["step"] == step)]
    if df.empty:
        return None
    try:
        return s.load_array(str(df["file"].iloc[0]))
    except (OSError, ValueError) as exc:
        raise DataError(f"{s.root}: the {kind} array of {run} at step {step} cannot be read ({exc}); the probe may be "
                        "rewriting it, refresh in a moment") from exc


@st.cache_data(show_spinner=False, max_entries=32)
def cka_steps(db: str, stamp: Stamp, run: str, variant: str = "debiased",
              probe_hash: str | None = None) -> pd.DataFrame:
    """Step × step CKA of every layer: layer, step_a, step_b, tokens_a, tokens_b, value (empty when not stored)."""
    cols = ["layer", "step_a", "step_b", "tokens_a", "tokens_b", "value"]
    with _open(db) as s:
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
    with _open(db) as s:
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
    with _open(db) as s:
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


# ------------------------------------------------------------------------------------------ downstream scores

@st.cache_data(show_spinner=False, max_entries=64)
def downstream_rows(db: str, stamp: Stamp) -> pd.DataFrame:
    """Every downstream score in the store (`experiments.evaluate`'s rows: family and probe hash "downstream", so
    independent of the probe set), split into `DOWNSTREAM_COLUMNS`: run, step, tokens_seen, mode ("linear" |
    "finetune"), layer (−1 for fine-tuning, the probed hidden_states index for the linear probe), task ("sst2", …;
    "glue" for the GLUE average), name ("score", "accuracy", …; "average"), stat ("mean", "std", "seed1", …) and
    value (percent, NaN where undefined). Empty when nothing was evaluated."""
    cols = ("run", "step", "tokens_seen", "layer", "metric", "variant", "value", "family", "probe_hash")
    with _open(db) as s:
        df = _compat(s, lambda: s.metrics(family=DOWNSTREAM, probe_hash=DOWNSTREAM), "metrics", cols,
                     {"family": DOWNSTREAM, "probe_hash": DOWNSTREAM})
    # (an older store read column by column filters on the columns it has: keep only rows that say they are downstream)
    df = df[(df["family"] == DOWNSTREAM) | (df["probe_hash"] == DOWNSTREAM)]
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


# -------------------------------------------------------------------------------------- run-directory loaders

@st.cache_data(show_spinner=False, max_entries=128)
def run_json(run_dir: str, stamp: Stamp) -> dict[str, Any]:
    """The run's `run.json` ({} when missing or unreadable)."""
    try:
        data = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@st.cache_data(show_spinner=False, max_entries=128)
def training_log(run_dir: str, stamp: Stamp) -> pd.DataFrame:
    """`log.jsonl` as one row per line: step, tokens_seen, split ("train" | "validation") and the logged
    quantities (`LOG_QUANTITIES`, NaN where a row lacks one). Unparseable lines (a line being written) are skipped."""
    rows = []
    try:
        with open(Path(run_dir) / "log.jsonl", encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and "step" in row:
                    rows.append(row)
    except OSError:
        pass
    cols = ["step", "tokens_seen", "split", *LOG_QUANTITIES]
    df = pd.DataFrame(rows)
    for col in cols:
        if col not in df:
            df[col] = np.nan
    df["split"] = df["split"].astype(object).where(df["split"].notna(), "train").astype(str)
    for col in ["step", "tokens_seen", *LOG_QUANTITIES]:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df[cols].sort_values(["split", "step"], kind="stable").reset_index(drop=True)


@st.cache_data(show_spinner=False, max_entries=128)
def run_snapshot_steps(run_dir: str, stamp: Stamp) -> list[int]:
    """Steps of the run's complete snapshots (`snapshots/step-NNNNNNN/`), ascending."""
    try:
        names = os.listdir(Path(run_dir) / "snapshots")
    except OSError:
        return []
    return sorted(int(n[5:]) for n in names if n.startswith("step-") and n[5:].isdigit())


# ---------------------------------------------------------------------------------------------- composition

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
            row = _run_dir_row(path) if path and (Path(path) / "run.json").is_file() else {}
            rows.append({**row, "run": r.run, "objective": row.get("objective") or r.objective,
                         "preset": row.get("preset") or r.preset,
                         "steps": row.get("steps", r.last_step), "snapshots": row.get("snapshots", r.snapshots),
                         "tokens_seen": row.get("tokens_seen", r.last_tokens),
                         "probe_hash": (r.probe_hash or "")[:12] or None, "measured": r.measured,
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


def tidy_log(logs: dict[str, pd.DataFrame], quantities: Sequence[str], max_points: int = 1500) -> pd.DataFrame:
    """Long form of several runs' logs for plotting: run, split, step, tokens_seen, quantity, value; each
    (run, split, quantity) series thinned to at most `max_points` points (first and last kept)."""
    parts = []
    for run, log in logs.items():
        have = [q for q in quantities if q in log and log[q].notna().any()]
        if not have or log.empty:
            continue
        long = log.melt(id_vars=["step", "tokens_seen", "split"], value_vars=have, var_name="quantity")
        long = long.dropna(subset=["value"])
        long.insert(0, "run", run)
        parts.append(long)
    if not parts:
        return pd.DataFrame(columns=["run", "split", "step", "tokens_seen", "quantity", "value"])
    df = pd.concat(parts, ignore_index=True)
    df = thin(df, ["run", "split", "quantity"], max_points)
    return df[["run", "split", "step", "tokens_seen", "quantity", "value"]]


def thin(df: pd.DataFrame, by: Sequence[str], max_points: int) -> pd.DataFrame:
    """At most about `max_points` evenly spaced rows per group of `by` (each group's first and last row kept)."""
    if df.empty:
        return df
    pos = df.groupby(list(by), sort=False).cumcount()
    size = df.groupby(list(by), sort=False)[df.columns[0]].transform("size")
    stride = np.maximum(1, np.ceil(size / max_points)).astype(int)
    keep = (pos % stride == 0) | (pos == size - 1)
    return df[keep.to_numpy()].reset_index(drop=True)


def difference(df: pd.DataFrame, run_a: str, run_b: str) -> pd.DataFrame:
    """`run_a − run_b` per (step, layer, variant) at the steps both runs measured: step, tokens_seen (run a's),
    layer, variant, a, b, value."""
    cols = ["step", "tokens_seen", "layer", "variant", "a", "b", "value"]
    a = df[df["run"] == run_a][["step", "tokens_seen", "layer", "variant", "value"]]
    b = df[df["run"] == run_b][["step", "layer", "variant", "value"]]
    joined = a.merge(b, on=["step", "layer", "variant"], suffixes=("_a", "_b"))
    joined = joined.rename(columns={"value_a": "a", "value_b": "b"})
    joined["value"] = joined["a"] - joined["b"]
    return joined[cols].sort_values(["variant", "layer", "step"]).reset_index(drop=True)


def coverage(df: pd.DataFrame, done: pd.DataFrame, families: Sequence[str], runs: Sequence[str]) -> list[str]:
    """Sentences about gaps: snapshots measured (any of `families`) where this metric has no value, per run."""
    out = []
    for run in runs:
        steps = set(done[(done["run"] == run) & done["family"].isin(families) & (done["step"] >= 0)]["step"])
        rows = df[df["run"] == run]
        have = set(rows[rows["value"].notna()]["step"])
        if not steps and rows.empty:
            out.append(f"{run}: not measured for this metric yet")
            continue
        gap = sorted(steps - have)
        if gap:
            shown = ", ".join(map(str, gap[:8])) + (", …" if len(gap) > 8 else "")
            out.append(f"{run}: no value at {len(gap)} of {len(steps | have)} measured snapshots (steps {shown})")
    return out


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


def with_distance(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose variant is a distance (d001, d002, …) with a numeric `distance` column."""
    d = df["variant"].map(distance)
    out = df[d.notna()].copy()
    out["distance"] = d[d.notna()].astype(int)
    return out


def _json(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None or pd.isna(value) else int(value)
    except (TypeError, ValueError):
        return None
