"""Compare the metric rows of two results stores (e.g. the probe on CUDA and on the CPU), row by row.

    python benchmarks/compare_stores.py A B [--atol 1e-6] [--rtol 0] [--show 15]

A and B are results stores (`results.sqlite`) or the folders holding them (`dynamics.probe --out`). Rows of the
`metrics` table are matched on (run, step, layer, metric, variant); the probe set hash must agree too. Two
values agree when |a − b| <= atol + rtol·|b|, both are NULL, or both are NaN. Prints the rows compared, the rows
found in one store only, the disagreeing rows with the metrics that disagree most, and a last line with the
verdict; exits 0 when every row is in both stores and agrees, 1 otherwise.

With `--everything`, the other tables are compared too (notes, completed families and their params, onsets, runs,
snapshots, probe sets; without times and the machine-specific fields named in `VOLATILE`) and every array file
key by key, exactly (NaN equal to NaN): for "the same input gives the same stored values" before and after a
change.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

KEY = ("run", "step", "layer", "metric", "variant")
# Columns that record when or where a value was written, not what it is.
VOLATILE = {"completed": {"finished", "seconds"}, "runs": {"updated"}, "probe_sets": {"created", "used"},
            "arrays": {"file"}}
TABLES = ("notes", "completed", "onsets", "runs", "snapshots", "probe_sets", "arrays")


def store_path(path: str) -> Path:
    p = Path(path)
    return p / "results.sqlite" if p.is_dir() else p


def metric_rows(path: Path) -> tuple[dict[tuple, float | None], set[str]]:
    """{(run, step, layer, metric, variant): value} of a store's metrics table, and its probe set hashes."""
    if not path.is_file():
        raise SystemExit(f"{path}: no results store there; pass a results.sqlite or the folder holding one")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute(f"SELECT {', '.join(KEY)}, value, probe_hash FROM metrics").fetchall()
    finally:
        con.close()
    return {tuple(r[:5]): r[5] for r in rows}, {r[6] for r in rows}


def table_rows(path: Path, table: str) -> list[tuple] | None:
    """The rows of `table` without its `VOLATILE` columns, sorted (None when the store has no such table)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        columns = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
        keep = [c for c in columns if c not in VOLATILE.get(table, set())]
        if not keep:
            return None
        rows = [tuple(_steady(c, v) for c, v in zip(keep, r, strict=True))
                for r in con.execute(f"SELECT {', '.join(keep)} FROM {table}")]
        return sorted(rows, key=repr)
    finally:
        con.close()


def _steady(column: str, value: object) -> object:
    """A snapshot's `info` without the time its weights took to hash."""
    if column == "info" and isinstance(value, str):
        info = json.loads(value)
        if isinstance(info.get("weights_hash"), dict):
            info["weights_hash"].pop("seconds", None)
        return json.dumps(info, sort_keys=True)
    return value


def array_files(path: Path) -> dict[tuple, Path]:
    """(run, step, kind, family, probe_hash) → the .npz file of each stored array."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT run, step, kind, family, probe_hash, file FROM arrays").fetchall()
    finally:
        con.close()
    return {tuple(r[:5]): path.parent / r[5] for r in rows}


def same_arrays(x: Path, y: Path) -> list[str]:
    """The keys of two .npz files that differ (a key in one only, or unequal content)."""
    with np.load(x, allow_pickle=False) as a, np.load(y, allow_pickle=False) as b:
        keys = set(a.files) | set(b.files)
        return sorted(k for k in keys if k not in a.files or k not in b.files or not _equal(a[k], b[k]))


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def everything(a: Path, b: Path, show: int) -> bool:
    """Print the differences of the other tables and of every array; True when there are none."""
    ok = True
    for table in TABLES:
        ra, rb = table_rows(a, table), table_rows(b, table)
        if ra == rb:
            print(f"{table}: {len(ra or [])} rows, the same")
            continue
        ok = False
        sa, sb = set(ra or []), set(rb or [])
        print(f"{table}: {len(sa - sb)} row(s) only in A, {len(sb - sa)} only in B")
        for row in sorted(sa - sb, key=repr)[:show]:
            print(f"  only in A: {str(row)[:300]}")
        for row in sorted(sb - sa, key=repr)[:show]:
            print(f"  only in B: {str(row)[:300]}")
    fa, fb = array_files(a), array_files(b)
    differ = {k: same_arrays(fa[k], fb[k]) for k in sorted(set(fa) & set(fb), key=repr)}
    differ = {k: v for k, v in differ.items() if v}
    print(f"arrays: {len(set(fa) & set(fb))} in both, {len(differ)} differ; {len(set(fa) - set(fb))} only in A, "
          f"{len(set(fb) - set(fa))} only in B")
    for k, keys in list(differ.items())[:show]:
        print(f"  {k}: keys {keys}")
    return ok and not differ and set(fa) == set(fb)


def agree(a: float | None, b: float | None, atol: float, rtol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= atol + rtol * abs(b)


def compare(a: dict[tuple, float | None], b: dict[tuple, float | None], atol: float,
            rtol: float) -> tuple[list[tuple], list[tuple], list[tuple[tuple, float | None, float | None]]]:
    """(keys only in a, keys only in b, [(key, a, b) of rows that disagree])."""
    only_a = sorted(set(a) - set(b), key=str)
    only_b = sorted(set(b) - set(a), key=str)
    bad = [(k, a[k], b[k]) for k in sorted(set(a) & set(b), key=str) if not agree(a[k], b[k], atol, rtol)]
    return only_a, only_b, bad


def _diff(x: float | None, y: float | None) -> float:
    if x is None or y is None or math.isnan(x) or math.isnan(y):
        return math.inf
    return abs(x - y)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="first results store or folder (e.g. the CUDA probe's --out)")
    ap.add_argument("b", help="second results store or folder (e.g. the CPU probe's --out)")
    ap.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance")
    ap.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (to the second store's value)")
    ap.add_argument("--everything", action="store_true",
                    help="also compare the other tables and every array, exactly")
    ap.add_argument("--show", type=int, default=15, help="metrics with the largest differences to list")
    args = ap.parse_args(argv)
    a, hashes_a = metric_rows(store_path(args.a))
    b, hashes_b = metric_rows(store_path(args.b))
    if hashes_a != hashes_b:
        print(f"probe set hashes differ: {sorted(hashes_a)} vs {sorted(hashes_b)}")
    only_a, only_b, bad = compare(a, b, args.atol, args.rtol)
    both = len(set(a) & set(b))
    print(f"metric rows: {len(a)} in A, {len(b)} in B, {both} in both; {len(only_a)} only in A, {len(only_b)} only "
          f"in B")
    for key in (only_a + only_b)[: args.show]:
        print(f"  only in {'A' if key in a else 'B'}: {dict(zip(KEY, key, strict=True))}")
    worst: dict[tuple[str, str], tuple[float, tuple, float | None, float | None]] = {}
    count: dict[tuple[str, str], int] = defaultdict(int)
    for key, x, y in bad:
        name = (key[3], key[4])
        count[name] += 1
        if name not in worst or _diff(x, y) > worst[name][0]:
            worst[name] = (_diff(x, y), key, x, y)
    for name, (d, key, x, y) in sorted(worst.items(), key=lambda kv: -kv[1][0])[: args.show]:
        print(f"  {name[0]} [{name[1]}]: {count[name]} row(s) beyond tolerance, largest |A-B| {d:.3g} "
              f"(run {key[0]}, step {key[1]}, layer {key[2]}: {x!r} vs {y!r})")
    all_diffs = [_diff(a[k], b[k]) for k in set(a) & set(b) if a[k] is not None and b[k] is not None]
    finite = [d for d in all_diffs if math.isfinite(d)]
    largest = max(finite) if finite else 0.0
    ok = not (only_a or only_b or bad or hashes_a != hashes_b) and both > 0
    if args.everything:
        ok = everything(store_path(args.a), store_path(args.b), args.show) and ok
    print(f"stores A vs B: {both - len(bad)}/{both} rows agree within atol {args.atol:g} + rtol {args.rtol:g}, "
          f"largest |A-B| {largest:.3g}: {'SAME' if ok else 'DIFFERENT'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
