"""`python -m dynamics.export STORE --format parquet|csv|tensorboard --out DIR`: a results store's metric rows for
other tools; `python -m dynamics.export --merge A B … --out C`: several stores of one probe set as one.

Export. The tidy long table of one probe set's rows — run, step, tokens_seen, layer, metric, variant, value — with
what each metric means (label, unit, definition, family, page, the function that computed it) from the store's own
`definitions` table:
- `parquet`: `DIR/metrics.parquet` (pyarrow), the definitions, probe hash and user metrics modules as JSON in the
  schema metadata (`taco_dynamics.definitions`, `taco_dynamics.probe_hash`, `taco_dynamics.metric_modules`);
- `csv`: `DIR/metrics.csv` (values written exactly: shortest round-trip decimal), with `DIR/definitions.csv` and
  `DIR/definitions.json` beside it;
- `tensorboard`: `DIR/tensorboard/RUN/` per training run, one scalar per row with tag `metric/layerL/variant` at the
  training step (float32, as TensorBoard stores scalars; NULL rows are left out), written with TensorBoard's own
  record writer. Needs `pip install 'taco-dynamics[tensorboard]'`.
Files are written under temporary names and renamed; the same store gives the same bytes (event wall times are
the snapshots' recorded training times, or 0). DIR must be new, empty, or hold only what an export writes.
Python users can read the same rows with `dynamics.results.store.open(path).metrics(name)`.

Merge (`dynamics.results.merge`): the measured rows and arrays of stores probed on parts of a series (a cluster's
array job, each task with its own `--steps`) in one new store C; the inputs are only read. Then
`python -m dynamics.probe RUN --out C` computes the run-level families and onsets without measuring a snapshot
again. Bad input: one `error:` line, exit status 2, nothing written.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.cli import Parser, option
from common.errors import UsageError
from common.files import building_dir, replace_dir, replacing, write_json, write_text
from dynamics.errors import StoreError
from dynamics.results import merge as mg
from dynamics.results import store as st

FORMATS = ("parquet", "csv", "tensorboard")
COLUMNS = ("run", "step", "tokens_seen", "layer", "metric", "variant", "value")
# What an export writes in DIR; anything else there is not ours and is not overwritten.
OURS = {"metrics.parquet", "metrics.csv", "definitions.csv", "definitions.json", "tensorboard"}
DEFINITION_FIELDS = ("label", "unit", "definition", "family", "scope", "layers", "page", "pointer")
TENSORBOARD_HINT = "pip install 'taco-dynamics[tensorboard]'"


class ExportError(UsageError):
    """Bad input to `dynamics.export` (one line naming the thing and the fix)."""


@dataclass
class ExportConfig:
    """The export's settings (the store, or the stores to merge, are positional / `--merge`)."""

    format: list[str] = option(["parquet"], f"what to write, comma-separated: {','.join(FORMATS)}")
    out: str | None = option(None, "output folder (required): new, empty, or an earlier export's")
    probe_hash: str | None = option(None, "export the rows of this probe set (a prefix is enough; default: the most "
                                          "recently used)")


# -------------------------------------------------------------------------------------------- the table

def tidy(store: st.Store, probe_hash: str | None = None) -> tuple[list[tuple[Any, ...]], str]:
    """The store's metric rows of one probe set as (run, step, tokens_seen, layer, metric, variant, value) tuples,
    ordered by run, metric, variant, layer, step; and the probe hash."""
    known = list(store.probe_sets()["hash"])
    if probe_hash is None:
        chosen = store.latest_probe_hash()
        if chosen is None:
            raise ExportError(f"{store.path}: records no probe set; export a store written by python -m dynamics.probe")
    else:
        matches = [h for h in known if h.startswith(probe_hash)]
        if len(matches) != 1:
            raise ExportError(f"--probe-hash {probe_hash}: {'matches several' if matches else 'matches none'} of the "
                              f"store's probe sets ({', '.join(h[:12] for h in known)}); give more of the hash")
        chosen = matches[0]
    rows = store.conn.execute(
        f"SELECT {', '.join(COLUMNS)} FROM metrics WHERE probe_hash=? ORDER BY run, metric, variant, layer, step",
        (chosen,)).fetchall()
    return rows, chosen


def definitions(store: st.Store, names: set[str]) -> dict[str, dict[str, Any]]:
    """What each exported metric means, from the store's `definitions` table: name → {label, unit, definition,
    family, scope, layers, page, pointer, variants}; a metric the store defines nowhere gets its name as label."""
    df = store.definitions()
    out: dict[str, dict[str, Any]] = {}
    for rec in df.to_dict("records"):
        if rec["name"] in names:
            out[rec["name"]] = {**{f: rec[f] for f in DEFINITION_FIELDS}, "variants": list(rec["variants"])}
    for name in sorted(names - set(out)):
        out[name] = {**dict.fromkeys(DEFINITION_FIELDS), "label": name, "variants": []}
    return dict(sorted(out.items()))


def modules(store: st.Store) -> list[dict[str, Any]]:
    df = store.metric_modules()
    return [{"name": r["name"], "sha256": r["sha256"], "metrics": list(r["metrics"])} for r in df.to_dict("records")]


# ------------------------------------------------------------------------------------------------ formats

def write_parquet(rows: Sequence[tuple[Any, ...]], defs: dict[str, Any], meta: dict[str, Any], path: Path) -> None:
    import pyarrow as pa  # only this format needs pyarrow
    import pyarrow.parquet as pq

    schema = pa.schema([("run", pa.string()), ("step", pa.int64()), ("tokens_seen", pa.int64()), ("layer", pa.int64()),
                        ("metric", pa.string()), ("variant", pa.string()), ("value", pa.float64())],
                       metadata={"taco_dynamics.definitions": json.dumps(defs, sort_keys=True),
                                 **{f"taco_dynamics.{k}": json.dumps(v, sort_keys=True) for k, v in meta.items()}})
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in COLUMNS]
    table = pa.Table.from_arrays([pa.array(list(c), type=f.type) for c, f in zip(columns, schema, strict=True)],
                                 schema=schema)
    with replacing(path) as tmp:
        pq.write_table(table, tmp)


def write_csv(rows: Sequence[tuple[Any, ...]], defs: dict[str, Any], meta: dict[str, Any], out: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in r])
    write_text(out / "metrics.csv", buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("metric", *DEFINITION_FIELDS, "variants"))
    for name, d in defs.items():
        w.writerow((name, *("" if d[f] is None else d[f] for f in DEFINITION_FIELDS), "/".join(d["variants"])))
    write_text(out / "definitions.csv", buf.getvalue())
    write_json(out / "definitions.json", {**meta, "definitions": defs}, end="\n")


def write_tensorboard(rows: Sequence[tuple[Any, ...]], store: st.Store, out: Path) -> list[Path]:
    """One folder per training run with one event file: a scalar per non-NULL row, tag `metric/layerL/variant`, at
    the training step; wall time the snapshot's recorded training time (`wall_time`), else 0."""
    try:  # the optional extra
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError:
        raise ExportError(f"--format tensorboard needs TensorBoard: {TENSORBOARD_HINT}") from None
    snaps = store.snapshots()
    walls: dict[tuple[str, int], float] = {}
    for run, step, info in zip(snaps["run"], snaps["step"], snaps["info"], strict=True):
        wall = mg._json(info).get("wall_time")
        walls[(run, int(step))] = float(wall) if isinstance(wall, (int, float)) else 0.0
    by_run: dict[str, list[tuple[Any, ...]]] = {}
    for r in rows:
        if r[6] is not None:
            by_run.setdefault(r[0], []).append(r)
    written = []
    with building_dir(out / "tensorboard") as tmp:
        for run, run_rows in sorted(by_run.items()):
            folder = tmp / st._safe(run)
            folder.mkdir(parents=True)
            path = folder / "events.out.tfevents.0.taco-dynamics"
            with path.open("wb") as f:
                writer = RecordWriter(f)
                writer.write(Event(wall_time=0.0, file_version="brain.Event:2").SerializeToString())
                for r in sorted(run_rows, key=lambda r: (r[1], r[4], r[3], r[5])):  # by step, then tag
                    _, step, _, layer, metric, variant, value = r
                    summary = Summary(value=[Summary.Value(tag=f"{metric}/layer{layer}/{variant}",
                                                           simple_value=value)])
                    writer.write(Event(wall_time=walls.get((run, step), 0.0), step=step,
                                       summary=summary).SerializeToString())
                writer.flush()
            written.append(out / "tensorboard" / folder.name / path.name)
        replace_dir(tmp, out / "tensorboard")
    return written


# ---------------------------------------------------------------------------------------------- commands

def check_out(out: str | None) -> Path:
    """The output folder: given, not a file, and holding nothing an export does not write."""
    if not out:
        raise ExportError("--out DIR is required: the folder to write the export (or the merged store) into")
    path = Path(out).expanduser()
    for folder in [path, *path.parents]:
        if folder.exists() and not folder.is_dir():
            raise ExportError(f"{folder} is a file, not a folder; pass another --out")
    if path.is_dir():
        theirs = sorted(p.name for p in path.iterdir() if p.name not in OURS)
        if theirs:
            raise ExportError(f"{path} holds files an export does not write ({', '.join(theirs[:3])}); pass a new or "
                              "empty --out")
    return path


def export(store_path: str | Path, formats: Sequence[str], out: str | Path,
           probe_hash: str | None = None) -> list[Path]:
    """Write the store's rows in `formats` into folder `out` (module docstring); the files written."""
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ExportError(f"--format {','.join(formats)}: choose from {','.join(FORMATS)}")
    db = st.resolve(store_path)
    if not db.is_file():
        raise ExportError(f"{store_path}: no results store there; pass the folder a probe wrote (or its results.sqlite)")
    target = check_out(str(out))
    with st.Store(db, readonly=True, immutable=mg.settled(db)) as store:  # no -shm/-wal files left beside it
        rows, chosen = tidy(store, probe_hash)
        defs = definitions(store, {r[4] for r in rows})
        meta = {"probe_hash": chosen, "columns": list(COLUMNS), "metric_modules": modules(store)}
        written: list[Path] = []
        if "tensorboard" in formats:  # first: a missing extra stops the export before any file is written
            written += write_tensorboard(rows, store, target)
        if "parquet" in formats:
            write_parquet(rows, defs, meta, target / "metrics.parquet")
            written.append(target / "metrics.parquet")
        if "csv" in formats:
            write_csv(rows, defs, meta, target)
            written += [target / n for n in ("metrics.csv", "definitions.csv", "definitions.json")]
    return written


def build_parser() -> Parser:
    parser = Parser(ExportConfig, prog="python -m dynamics.export",
                    description="Export a results store's metric rows (parquet, csv, tensorboard) or merge stores "
                                "probed on parts of a series into one.",
                    epilog="Examples: python -m dynamics.export runs/x/dynamics --format parquet,csv --out exp/; "
                           "python -m dynamics.export --merge A/results.sqlite B/results.sqlite --out C/ (then "
                           "python -m dynamics.probe RUN --out C/ computes the run-level families). Bad input exits "
                           "with status 2 and writes nothing.")
    parser.add_argument("store", nargs="?", metavar="STORE", default=None,
                        help="a results store: the folder a probe wrote, or its results.sqlite")
    parser.add_argument("--merge", nargs="+", metavar="STORE", default=None,
                        help="merge these stores (same probe set) into a new store in --out instead of exporting")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    cfg, extra = build_parser().parse(argv)  # exits 2 with one line on a usage error
    stores, merging = extra.store, extra.merge
    try:
        if merging is not None:
            if stores is not None:
                raise ExportError(f"{stores}: give the stores to merge after --merge only (--merge A B --out C)")
            if not cfg.out:
                raise ExportError("--out DIR is required: the new folder for the merged store")
            summary = mg.merge(merging, cfg.out)
            print(f"merged {len(merging)} stores into {summary.out / st.DB_NAME}: {summary.rows['metrics']} metric "
                  f"rows, {summary.arrays} arrays; left for python -m dynamics.probe RUN --out {summary.out}: "
                  f"{', '.join(summary.dropped_families) or 'no run-level families'}, onsets", file=sys.stderr)
            return 0
        if stores is None:
            raise ExportError("pass a results store to export (STORE), or --merge A B … to merge stores")
        written = export(stores, cfg.format, cfg.out or "", cfg.probe_hash)
    except (UsageError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return UsageError.exit_code
    print(f"exported {len(written)} file(s) to {Path(cfg.out or '')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
