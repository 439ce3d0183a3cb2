"""App benchmark (issue 4): time to the first complete render of the overview and of one metric page on a store
of 4 runs × 100 snapshots × 13 layers × 40 metrics (target: under 2 s each on the reference machine); and (issue
13) the same with the sidebar's "Seed groups" toggle on, on a store of 4 seed groups × 3 seeds (12 runs) of the
same size per run.

The stores are synthetic but written through `dynamics.results.store`'s write API (the calls the probe makes), with run
directories (run.json, a 1,000-row log.jsonl each), layer × layer CKA at every snapshot, step × step CKA per run
and 2,000-token projections at every 10th snapshot. In the grouped store each run records its config (`runs.meta`,
as the probe copies run.json); the configs of one group differ only by seed, the groups by objective and learning
rate, so `dynamics.results.groups.seed_groups` finds the groups. Each page is rendered by `streamlit.testing.v1.AppTest`
with an empty `st.cache_data` (cold: every query and chart is built from the store, the groups too), after a first
run that imports the modules (printed too); the rerun with warm caches is printed beside each. One line per
measurement.

Usage: python benchmarks/bench_app.py [--runs 4] [--snapshots 100] [--layers 13] [--metrics 40] [--repeat 3]
                                      [--scenario all|plain|grouped] [--groups 4] [--seeds 3]

  --runs            runs in the plain store
  --snapshots, --layers, --metrics   size of every run, in both stores
  --repeat          cold renders per page (the median is printed)
  --scenario        plain: the 4-run store; grouped: the seed-group store with the toggle on; all: both (default)
  --groups, --seeds the grouped store: GROUPS recipes × SEEDS seeds = GROUPS·SEEDS runs (default 4 × 3 = 12)
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
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET_S = 2.0
PAGES = {"overview (Runs)": None, "Geometry": "views/geometry.py", "Anchors": "views/anchors.py"}
GROUPED_PAGES = {"overview (Runs)": None, "Geometry": "views/geometry.py"}


def log_steps(snapshots: int) -> list[int]:
    steps = [0] + [int(round(10 ** (4 * k / (snapshots - 1)))) for k in range(1, snapshots)]
    steps = sorted(set(steps))
    while len(steps) < snapshots:  # log-spaced steps collide at the low end; fill in with the next integers
        steps = sorted(set(steps) | {max(steps) + 1})
    return steps


def build(root: Path, runs: int, snapshots: int, layers: int, metrics: int) -> Path:
    from tests.app.synthetic import write_store

    names = [(f"{'taco' if i % 2 else 'mlm'}-{i // 2}", "taco" if i % 2 else "mlm") for i in range(runs)]
    return write_store(root, names, log_steps(snapshots), n_layers=layers, n_metrics=metrics, projection_tokens=2000,
                       projection_every=10)


def build_grouped(root: Path, groups: int, seeds: int, snapshots: int, layers: int, metrics: int) -> Path:
    """`groups` × `seeds` runs named OBJECTIVE-lrG-sSEED; group G's runs record lr = 1e-4 · (G + 1) in their config,
    so that runs of one objective but another group differ by more than the seed."""
    from tests.app.synthetic import write_store

    names = [(f"{'taco' if g % 2 else 'mlm'}-lr{g}-s{k}", "taco" if g % 2 else "mlm")
             for g in range(groups) for k in range(1, seeds + 1)]
    db = write_store(root, names, log_steps(snapshots), n_layers=layers, n_metrics=metrics, projection_tokens=2000,
                     projection_every=10, seeds={name: int(name.rsplit("-s", 1)[1]) for name, _ in names})
    with sqlite3.connect(db) as conn:
        for g in range(groups):
            conn.execute("UPDATE runs SET meta = json_set(meta, '$.config.lr', ?) WHERE name LIKE ?",
                         (1e-4 * (g + 1), f"%-lr{g}-s%"))
    conn.close()
    return db


def describe(db: Path, runs: int, args: argparse.Namespace, t0: float) -> str:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
    conn.close()
    return (f"{runs} runs × {args.snapshots} snapshots × {args.layers} layers × {args.metrics} metrics = {rows:,} "
            f"metric rows, {db.stat().st_size / 1e6:.0f} MB, written in {time.perf_counter() - t0:.1f} s")


def timed_run(at: object) -> float:
    t0 = time.perf_counter()
    at.run()  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - t0
    problems = [e.value for e in at.exception] + [e.value for e in at.error]  # type: ignore[attr-defined]
    if problems:
        raise RuntimeError(f"page failed: {problems}")
    return elapsed


def measure(at: object, pages: dict[str, str | None], repeat: int, prefix: str = "",
            check: Callable[[object], None] | None = None) -> None:
    """Print one line per page: the median of `repeat` cold renders (cache cleared before each) and a warm rerun;
    `check(at)` after every render (e.g. that the toggle is still on)."""
    import streamlit as st

    for label, page in pages.items():
        cold = []
        for _ in range(repeat):
            if page:
                at.switch_page(page)  # type: ignore[attr-defined]
            st.cache_data.clear()
            cold.append(timed_run(at))
            if check:
                check(at)
        warm = timed_run(at)
        med = statistics.median(cold)
        verdict = "ok" if med < TARGET_S else "OVER TARGET"
        name = prefix + label
        print(f"{name:<16} first render (cold cache): {med:5.2f} s  (target < {TARGET_S:.1f} s: {verdict}; "
              f"runs {', '.join(f'{c:.2f}' for c in cold)})  rerun (warm cache): {warm:.2f} s")


def plain(args: argparse.Namespace) -> None:
    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        t0 = time.perf_counter()
        db = build(Path(tmp), args.runs, args.snapshots, args.layers, args.metrics)
        print("store: " + describe(db, args.runs, args, t0))
        sys.argv = ["app/main.py", "--runs", tmp]
        at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=120)
        first = timed_run(at)
        print(f"{'overview (Runs)':<16} first render in a fresh process: {first:5.2f} s  (app modules imported and "
              "AppTest's start-up, about 0.7 s of package scanning, included)")
        measure(at, PAGES, args.repeat)


def grouped(args: argparse.Namespace) -> None:
    """The grouped store: the toggle is switched on after a first (warm-up) render, then each page is timed cold."""
    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory(prefix="bench-app-groups-") as tmp:
        t0 = time.perf_counter()
        runs = args.groups * args.seeds
        db = build_grouped(Path(tmp), args.groups, args.seeds, args.snapshots, args.layers, args.metrics)
        print(f"grouped store: {args.groups} groups × {args.seeds} seeds = " + describe(db, runs, args, t0))
        sys.argv = ["app/main.py", "--runs", tmp]
        at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=120)
        first = timed_run(at)
        print(f"{'groups: overview':<16} first render in a fresh AppTest, toggle off: {first:5.2f} s")
        at.sidebar.toggle(key="ctx:groups").set_value(True)  # type: ignore[attr-defined]
        timed_run(at)

        def toggle_on(at: object) -> None:
            if not at.sidebar.toggle(key="ctx:groups").value:  # type: ignore[attr-defined]
                raise RuntimeError("the Seed groups toggle went off between pages")

        measure(at, GROUPED_PAGES, args.repeat, prefix="groups: ", check=toggle_on)
        from tests.app.helpers import charts

        found = charts(at)
        if not found:  # the synthetic store's metrics are the app's known ones in order; geometry's come 18th on
            print(f"groups: Geometry drew no chart (no geometry metrics among the first {args.metrics}): "
                  "its time above is of an empty page")
        elif "group" not in found[0][1].columns:
            raise RuntimeError("the metric page drew single runs, not seed groups, with the toggle on")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4, help="runs in the plain store")
    parser.add_argument("--snapshots", type=int, default=100)
    parser.add_argument("--layers", type=int, default=13)
    parser.add_argument("--metrics", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3, help="cold renders per page (the median is printed)")
    parser.add_argument("--scenario", choices=("all", "plain", "grouped"), default="all",
                        help="plain: the --runs store; grouped: the seed-group store with the toggle on; all: both")
    parser.add_argument("--groups", type=int, default=4, help="seed groups in the grouped store")
    parser.add_argument("--seeds", type=int, default=3, help="seeds (runs) per group in the grouped store")
    args = parser.parse_args()
    if args.groups < 1 or args.seeds < 2:
        parser.error("--groups must be >= 1 and --seeds >= 2 (a group of one seed is a single run)")
    logging.getLogger("streamlit").setLevel(logging.ERROR)
    if args.scenario in ("all", "plain"):
        plain(args)
    if args.scenario in ("all", "grouped"):
        grouped(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
