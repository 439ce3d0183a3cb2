"""App benchmark (issue 4): time to the first complete render of the overview and of one metric page on a store
of 4 runs × 100 snapshots × 13 layers × 40 metrics (target: under 2 s each on the reference machine).

The store is synthetic but written through `dynamics.store`'s write API (the calls the probe makes), with run
directories (run.json, a 1,000-row log.jsonl each), layer × layer CKA at every snapshot, step × step CKA per run
and 2,000-token projections at every 10th snapshot. Each page is rendered by `streamlit.testing.v1.AppTest`
with an empty `st.cache_data` (cold: every query and chart is built from the store), after a first run that imports
the modules (printed too); the rerun with warm caches is printed beside each. One line per measurement.

Usage: python benchmarks/bench_app.py [--runs 4] [--snapshots 100] [--layers 13] [--metrics 40] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_S = 2.0
PAGES = {"overview (Runs)": None, "Geometry": "views/geometry.py", "Anchors": "views/anchors.py"}


def build(root: Path, runs: int, snapshots: int, layers: int, metrics: int) -> Path:
    from tests.app.synthetic import write_store

    steps = [0] + [int(round(10 ** (4 * k / (snapshots - 1)))) for k in range(1, snapshots)]
    steps = sorted(set(steps))
    while len(steps) < snapshots:  # log-spaced steps collide at the low end; fill in with the next integers
        steps = sorted(set(steps) | {max(steps) + 1})
    names = [(f"{'taco' if i % 2 else 'mlm'}-{i // 2}", "taco" if i % 2 else "mlm") for i in range(runs)]
    return write_store(root, names, steps, n_layers=layers, n_metrics=metrics, projection_tokens=2000,
                       projection_every=10)


def timed_run(at: object) -> float:
    t0 = time.perf_counter()
    at.run()  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - t0
    problems = [e.value for e in at.exception] + [e.value for e in at.error]  # type: ignore[attr-defined]
    if problems:
        raise RuntimeError(f"page failed: {problems}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--snapshots", type=int, default=100)
    parser.add_argument("--layers", type=int, default=13)
    parser.add_argument("--metrics", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3, help="cold renders per page (the median is printed)")
    args = parser.parse_args()
    logging.getLogger("streamlit").setLevel(logging.ERROR)

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        t0 = time.perf_counter()
        db = build(Path(tmp), args.runs, args.snapshots, args.layers, args.metrics)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
        print(f"store: {args.runs} runs × {args.snapshots} snapshots × {args.layers} layers × {args.metrics} metrics = "
              f"{rows:,} metric rows, {db.stat().st_size / 1e6:.0f} MB, written in {time.perf_counter() - t0:.1f} s")
        sys.argv = ["app/main.py", "--runs", tmp]
        at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=120)
        first = timed_run(at)
        print(f"{'overview (Runs)':<16} first render in a fresh process: {first:5.2f} s  (app modules imported and "
              "AppTest's start-up, about 0.7 s of package scanning, included)")
        for label, page in PAGES.items():
            cold = []
            for _ in range(args.repeat):
                if page:
                    at.switch_page(page)
                st.cache_data.clear()
                cold.append(timed_run(at))
            warm = timed_run(at)
            med = statistics.median(cold)
            verdict = "ok" if med < TARGET_S else "OVER TARGET"
            print(f"{label:<16} first render (cold cache): {med:5.2f} s  (target < {TARGET_S:.1f} s: {verdict}; "
                  f"runs {', '.join(f'{c:.2f}' for c in cold)})  rerun (warm cache): {warm:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
