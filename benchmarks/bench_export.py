"""Export time and file size of `dynamics.export` for a store of 4 runs × 100 snapshots, and the time of merging it
from two halves (`dynamics.export --merge`). Not part of the test suite.

    python benchmarks/bench_export.py [--runs 4] [--snapshots 100] [--layers 12] [--repeats 3]

The store is synthetic, built through the store's own write API (`Store.upsert_run`, `upsert_snapshots`,
`add_probe_set`, `write_definitions`, `write_family`): for every snapshot, one row per registered per-layer metric
name (anchors, context, geometry), layer (0…L, as the registration says) and variant, as the probe writes a
`--layers`-layer model's rows (variants written "…" in the registry, the distance curve's, stand for
`--distances` of them), with seeded random values and a few NULLs. No arrays, so the merge time is the rows'.

Each time is the median of `--repeats` and is printed with its ratio to a baseline run in the same invocation: reading
the same rows into pandas the way a Python user does (`dynamics.results.store.open(path).metrics()`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynamics import export  # noqa: E402
from dynamics.metrics import registry  # noqa: E402
from dynamics.results import merge  # noqa: E402
from dynamics.results import store as st  # noqa: E402
from dynamics.results.store import FamilyResult  # noqa: E402

PROBE_HASH = "bench" + "0" * 59
FAMILIES = ("anchors", "context", "geometry")


def rows_of(family: str, layers: int, distances: int, rng: np.random.Generator) -> list[tuple]:
    """One snapshot's rows of `family`, as the probe writes them for a model with `layers` encoder layers."""
    rows = []
    for m in registry.metrics(family, "layer"):
        variants = [v for v in m.variants if v != "…"]
        if "…" in m.variants:
            variants = [f"d{d:03d}" for d in range(1, distances + 1)]
        for layer in registry.layer_range(m.layers, layers):
            for v in variants:
                value = None if rng.random() < 0.01 else float(rng.standard_normal())
                rows.append((layer, m.name, v, value))
    return rows


def build(folder: Path, runs: int, steps: list[int], layers: int, distances: int, seed: int = 0) -> int:
    """A synthetic store in `folder` (module docstring); the number of metric rows."""
    rng = np.random.default_rng(seed)
    n = 0
    with st.open(folder) as store:
        store.add_probe_set(hash=PROBE_HASH, source="synthetic", n_blocks=64, block_size=128, n_tokens=8000,
                            n_masked=1200, n_word_types=300, freq_source="synthetic", tokenizer_hash="x", file="",
                            notes=[])
        store.write_definitions(registry.load().values())
        for r in range(runs):
            name = f"run{r}"
            store.upsert_run(name, folder / name, "run", "mlm", {"seed": r})
            store.upsert_snapshots((name, s, s * 4096, f"{name}/step-{s:07d}", {"wall_time": float(s)})
                                   for s in steps)
            for s in steps:
                for family in FAMILIES:
                    rows = rows_of(family, layers, distances, rng)
                    n += len(rows)
                    store.write_family(run=name, step=s, tokens_seen=s * 4096, family=family, probe_hash=PROBE_HASH,
                                       params="v1;bench", result=FamilyResult(rows, {}, []), seconds=0.0)
    return n


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=4, help="training runs in the synthetic store")
    ap.add_argument("--snapshots", type=int, default=100, help="measured snapshots per run")
    ap.add_argument("--layers", type=int, default=12, help="encoder layers of the model the rows stand for")
    ap.add_argument("--distances", type=int, default=8, help="variants of the cosine-by-distance curve")
    ap.add_argument("--repeats", type=int, default=3, help="timings per export and merge (the median is quoted)")
    args = ap.parse_args()
    steps = list(range(0, args.snapshots * 100, 100))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        n = build(root / "store", args.runs, steps, args.layers, args.distances)
        built = time.perf_counter() - t0
        db = root / "store" / st.DB_NAME
        print(f"synthetic store: {args.runs} runs × {args.snapshots} snapshots, {n} metric rows, "
              f"{size(db) / 2**20:.1f} MiB database, built in {built:.1f} s")

        def read() -> None:
            with st.open(root / "store", readonly=True) as s:
                s.metrics()

        read()  # warm: pandas imported, the file in the page cache, as for every export below
        base = timed(read, args.repeats)
        print(f"baseline: store.metrics() into pandas {base:.2f} s")
        for fmt in export.FORMATS:
            out = root / f"out-{fmt}"
            t = timed(lambda fmt=fmt, out=out: export.export(db, [fmt], out), args.repeats)
            print(f"{fmt:>12}: {t:6.2f} s ({t / base:5.2f}× baseline), {size(out) / 2**20:7.2f} MiB")
        half = len(steps) // 2
        build(root / "a", args.runs, steps[:half], args.layers, args.distances, seed=1)
        build(root / "b", args.runs, steps[half:], args.layers, args.distances, seed=2)
        k = [0]

        def merged() -> None:
            k[0] += 1
            merge.merge([root / "a", root / "b"], root / f"merged-{k[0]}")

        t = timed(merged, args.repeats)
        print(f"{'merge':>12}: {t:6.2f} s ({t / base:5.2f}× baseline) for two stores of {half} and "
              f"{len(steps) - half} snapshots per run")


if __name__ == "__main__":
    main()
