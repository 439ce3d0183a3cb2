"""Compare the metric rows of two results stores (e.g. the probe on CUDA and on the CPU), row by row.

    python benchmarks/compare_stores.py A B [--atol 1e-6] [--rtol 0] [--show 15]

A and B are results stores (`results.sqlite`) or the folders holding them (`dynamics.probe --out`). Rows of the
`metrics` table are matched on (run, step, layer, metric, variant); the probe set hash must agree too. Two
values agree when |a − b| <= atol + rtol·|b|, both are NULL, or both are NaN. Prints the rows compared, the rows
found in one store only, the disagreeing rows with the metrics that disagree most, and a last line with the
verdict; exits 0 when every row is in both stores and agrees, 1 otherwise.
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import sys
from collections import defaultdict
from pathlib import Path

KEY = ("run", "step", "layer", "metric", "variant")


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
    print(f"stores A vs B: {both - len(bad)}/{both} rows agree within atol {args.atol:g} + rtol {args.rtol:g}, "
          f"largest |A-B| {largest:.3g}: {'SAME' if ok else 'DIFFERENT'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
