"""One store from several: a series probed in parts on several machines (a cluster's array job, each task probing a
`--steps` range into its own store) merged into one (`python -m dynamics.export --merge A B … --out C`).

What is merged is what the probe *measured*: runs, snapshots, the probe set, per-snapshot metric rows, their arrays
(copied into `C/arrays/`), completed units, notes, definitions and user metrics modules. What is *derived* from all
of a run's snapshots — the run-level families (step × step CKA, LayerNorm outlier persistence, word acquisition:
every family with a unit at step −1), onsets, and any other table of `SCHEMA` (phases, group-scope results) — is
left out, because each input holds it for its own part of the series only; `python -m dynamics.probe RUN --out C`
then computes it on the merged store without measuring any snapshot again (every per-snapshot unit is stored
with its params).

Rules: the inputs must hold one and the same probe set (probe hash), else `MergeError` naming both. A row found in
several inputs must agree (a metric value, a unit's params, an array's contents, a snapshot's tokens seen and weights
hash); identical rows are kept once, a conflict is a `MergeError` naming the run, step and metric (or unit).
Columns that say when or where something was written (`updated`, `finished`, `seconds`, `created`, `used`,
`recorded`, paths) are taken from one input. The inputs are opened read-only and never written; the output is built
in a temporary folder beside `C` and renamed into place, and `C` must be new or empty.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.files import building_dir
from dynamics.errors import StoreError
from dynamics.results import store as st

# The tables the probe measures into, merged in this order; every other table of `SCHEMA` is derived (see above).
MERGED = ("runs", "snapshots", "probe_sets", "definitions", "metric_modules", "metrics", "completed", "notes", "arrays")


class MergeError(StoreError):
    """Stores that cannot be merged, or an output folder that cannot take the merge (one line naming them)."""


@dataclass
class MergeSummary:
    """What a merge did: the output store, the rows and array files it holds, and what was left to the probe."""

    out: Path
    probe_hashes: tuple[str, ...]
    rows: dict[str, int] = field(default_factory=dict)
    arrays: int = 0
    dropped_families: tuple[str, ...] = ()
    derived_tables: tuple[str, ...] = ()


def merge(inputs: Sequence[str | Path], out: str | Path) -> MergeSummary:
    """Merge the stores `inputs` (store folders or their `results.sqlite`) into a new store in folder `out` (see the
    module docstring); `MergeError` on stores that disagree or an unusable `out`, with nothing written."""
    paths = [st.resolve(p) for p in inputs]
    if len(paths) < 2:
        raise MergeError("--merge needs at least two stores (A/results.sqlite B/results.sqlite …)")
    for p in paths:
        if not p.is_file():
            raise MergeError(f"{p}: no results store there; pass the results.sqlite a probe wrote (or its folder)")
    if len({p.resolve() for p in paths}) < len(paths):
        raise MergeError(f"{paths[0]}: a store given twice; pass each store once")
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MergeError(f"{out}: exists and is not an empty folder; pass a new folder for the merged store")
    if any(out.resolve() == p.parent.resolve() for p in paths):
        raise MergeError(f"{out}: is one of the inputs' folders; the inputs are left untouched, pass a new folder")
    # A store whose write-ahead log is empty or gone (its probe closed it) is read as an immutable file, so that not
    # even SQLite's -shm/-wal files appear beside it; one with a log still to apply is read through it.
    stores = [st.Store(p, readonly=True, immutable=settled(p)) for p in paths]
    try:
        tables = [{t: _rows(s, t) for t in MERGED} for s in stores]
        hashes = [tuple(sorted(r[0] for r in t["probe_sets"])) for t in tables]
        for p, h in zip(paths[1:], hashes[1:], strict=True):
            if h != hashes[0]:
                raise MergeError(f"{paths[0]} (probe set {_names(hashes[0])}) and {p} (probe set {_names(h)}) were "
                                 "probed on different probe sets; merge stores of one probe set (the same run, "
                                 "--probe-text, --probe-blocks, --max-tokens and --seed)")
        if not hashes[0]:
            raise MergeError(f"{paths[0]}: records no probe set; merge stores written by python -m dynamics.probe")
        run_level = {r[_col("completed", "family")] for t in tables for r in t["completed"]
                     if r[_col("completed", "step")] == -1}
        run_level |= {r[_col("arrays", "family")] for t in tables for r in t["arrays"] if r[_col("arrays", "step")] == -1}
        merged = {t: _merge_table(t, [(p, tab[t]) for p, tab in zip(paths, tables, strict=True)], run_level, stores)
                  for t in MERGED}
        derived = tuple(t for t in st.SCHEMA if t not in MERGED and t != "meta")
        summary = MergeSummary(out, hashes[0], {t: len(rows) for t, rows in merged.items()},
                               len(merged["arrays"]), tuple(sorted(run_level)), derived)
        with building_dir(out) as tmp:
            _write(tmp, merged, stores, paths)
            if out.exists():
                out.rmdir()  # empty (checked above)
            os.replace(tmp, out)
        return summary
    finally:
        for s in stores:
            s.close()


def settled(db: Path) -> bool:
    """Whether the store `db` has no write-ahead log left to apply (its writers closed it)."""
    wal = db.with_name(db.name + "-wal")
    return not wal.exists() or wal.stat().st_size == 0


def _names(hashes: Sequence[str]) -> str:
    return ", ".join(h[:12] for h in hashes) or "none"


def _rows(store: st.Store, table: str) -> list[tuple[Any, ...]]:
    return store.conn.execute(f"SELECT {', '.join(st.TABLES[table])} FROM {table}").fetchall()


def _col(table: str, name: str) -> int:
    return st.TABLES[table].index(name)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _merge_table(table: str, parts: list[tuple[Path, list[tuple[Any, ...]]]], run_level: set[str],
                 stores: list[st.Store]) -> list[tuple[Any, ...]]:
    """The merged rows of one table (one row per key, in first-seen order); `MergeError` on a conflict."""
    cols = st.TABLES[table]
    key_cols, volatile = KEYS[table]
    key_at = [cols.index(c) for c in key_cols]
    check_at = [i for i, c in enumerate(cols) if c not in volatile and c not in key_cols]
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    where: dict[tuple[Any, ...], int] = {}  # key → index of the input its kept row came from
    for index, (path, rows) in enumerate(parts):
        for row in rows:
            if table in PER_UNIT and row[cols.index("family")] in run_level:
                continue  # derived from the whole series: recomputed by the probe on the merged store
            key = tuple(row[i] for i in key_at)
            if key not in out:
                out[key], where[key] = row, index
                continue
            kept = out[key]
            if table == "snapshots":
                out[key] = _merge_snapshot(kept, row, parts[where[key]][0], path)
            elif table == "arrays":
                _same_array(kept, row, stores[where[key]], stores[index], parts[where[key]][0], path)
            elif table == "runs":
                if (row[cols.index("updated")] or 0) > (kept[cols.index("updated")] or 0):
                    out[key] = row  # the run as last recorded
            elif not all(_same(kept[i], row[i]) for i in check_at):
                raise MergeError(_conflict(table, cols, kept, row, parts[where[key]][0], path))
    return list(out.values())


PER_UNIT = ("metrics", "completed", "notes", "arrays")  # the tables whose rows belong to one (run, step, family)
# table → (key columns, columns taken from one input without comparing). A table keyed by all its columns merges
# as a union.
KEYS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "runs": (("name",), frozenset({"path", "kind", "objective", "meta", "updated"})),
    "snapshots": (("run", "step"), frozenset({"path", "info"})),
    "probe_sets": (("hash",), frozenset({"file", "notes", "created", "used"})),
    "definitions": (("name",), frozenset({"position"})),
    "metric_modules": (("name",), frozenset({"path", "source", "recorded"})),
    "metrics": (("probe_hash", "run", "step", "layer", "metric", "variant"), frozenset()),
    "completed": (("probe_hash", "run", "step", "family"), frozenset({"finished", "seconds"})),
    "notes": (tuple(st.TABLES["notes"]), frozenset()),
    "arrays": (("probe_hash", "run", "step", "kind"), frozenset({"file", "meta"})),
}


def _conflict(table: str, cols: Sequence[str], a: tuple[Any, ...], b: tuple[Any, ...], pa: Path, pb: Path) -> str:
    """The one line naming a conflict: for metric rows run, step, metric (layer, variant) and both values."""
    row = dict(zip(cols, a, strict=True))
    other = dict(zip(cols, b, strict=True))
    if table == "metrics":
        what = (f"metric {row['metric']} of run {row['run']} at step {row['step']} (layer {row['layer']}, variant "
                f"{row['variant']}) is {row['value']!r} in {pa} but {other['value']!r} in {pb}")
    elif table == "completed":
        what = (f"family {row['family']} of run {row['run']} at step {row['step']} was measured with settings "
                f"{row['params']!r} in {pa} but {other['params']!r} in {pb}")
    else:
        differ = [c for c in cols if not _same(row[c], other[c])]
        what = f"{table} row {row[cols[0]]!r} differs in {', '.join(differ)} between {pa} and {pb}"
    return f"conflicting rows: {what}; probe the snapshots again into one store, or merge stores that agree"


def _merge_snapshot(a: tuple[Any, ...], b: tuple[Any, ...], pa: Path, pb: Path) -> tuple[Any, ...]:
    """One snapshot recorded by two stores: the same tokens seen and weights hash (where both hashed it); its info
    the union of both (each store hashed only the snapshots it measured)."""
    cols = st.TABLES["snapshots"]
    row, other = dict(zip(cols, a, strict=True)), dict(zip(cols, b, strict=True))
    where = f"snapshot {row['run']} step {row['step']}"
    if not _same(row["tokens_seen"], other["tokens_seen"]):
        raise MergeError(f"conflicting rows: {where} saw {row['tokens_seen']} tokens in {pa} but "
                         f"{other['tokens_seen']} in {pb}; merge stores of the same run")
    info_a, info_b = _json(row["info"]), _json(other["info"])
    hash_a = (info_a.get("weights_hash") or {}).get("sha256") if isinstance(info_a.get("weights_hash"), dict) else None
    hash_b = (info_b.get("weights_hash") or {}).get("sha256") if isinstance(info_b.get("weights_hash"), dict) else None
    if hash_a and hash_b and hash_a != hash_b:
        raise MergeError(f"conflicting rows: {where} has other weights in {pa} than in {pb} (trained again?); "
                         "probe the run again into one store")
    info = {**info_b, **info_a}
    row["info"] = json.dumps(info, default=str)
    return tuple(row[c] for c in cols)


def _json(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _same_array(a: tuple[Any, ...], b: tuple[Any, ...], sa: st.Store, sb: st.Store, pa: Path, pb: Path) -> None:
    """Two inputs store the same array (same run, step, kind): their contents must be equal."""
    cols = st.TABLES["arrays"]
    row = dict(zip(cols, a, strict=True))
    x, y = sa.load_array(row["file"]), sb.load_array(dict(zip(cols, b, strict=True))["file"])
    same = set(x) == set(y) and all(x[k].shape == y[k].shape and x[k].dtype == y[k].dtype and
                                    np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind in "fc") for k in x)
    if not same:
        raise MergeError(f"conflicting rows: array {row['kind']} of run {row['run']} at step {row['step']} differs "
                         f"between {pa} and {pb}; probe the snapshots again into one store")


def _write(tmp: Path, merged: dict[str, list[tuple[Any, ...]]], stores: list[st.Store], paths: list[Path]) -> None:
    """The merged store in folder `tmp`: its database (schema from `dynamics.results.store`), the array files it
    names and the probe sets' files, copied from whichever input holds them."""
    files: dict[str, Path] = {}
    for s in stores:
        for table, column in (("arrays", "file"), ("probe_sets", "file")):
            for (rel,) in s.conn.execute(f"SELECT {column} FROM {table}"):
                if rel and rel not in files and (s.root / rel).is_file():
                    files[rel] = s.root / rel
    wanted = {r[_col("arrays", "file")] for r in merged["arrays"]} | \
             {r[_col("probe_sets", "file")] for r in merged["probe_sets"] if r[_col("probe_sets", "file")]}
    for rel in sorted(wanted):
        if rel not in files:
            raise MergeError(f"{rel}: named by an input store but missing from its folder ({', '.join(map(str, paths))}); "
                             "the store is damaged: probe again")
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(files[rel], target)
    with st.open(tmp) as out:
        out.insert_rows({table: merged[table] for table in MERGED})
