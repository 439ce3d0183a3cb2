"""The results store: one SQLite file (WAL mode, so the app reads while the probe writes) plus `.npz` arrays.

Layout of a store folder (default `RUN/dynamics/`)::

    results.sqlite   tables below
    arrays/          .npz files named in the `arrays` table (paths relative to the folder)
    figures/ report.md   written by dynamics.results.figures / dynamics.results.report

Tables (`SCHEMA` lists them, their columns and indexes; nothing else does):

* `meta(key, value)`: `schema_version` (`SCHEMA_VERSION`), and `upgraded` (JSON: the version an older store was
  migrated from, when, and what its file lacked) where a store was upgraded in place
* `runs(name PK, path, kind, objective, meta JSON, updated)`; `kind` is the series layout: run | trainer | steps |
  model | hub (`Store.runs`)
* `snapshots(run, step, tokens_seen, path, info JSON)`, key (run, step); `info` is the snapshot's own record
  (`snapshot.json`) plus `info["weights_hash"]`, the hash of its weights (`dynamics.find.integrity`)
* `probe_sets(hash PK, source, n_blocks, block_size, n_tokens, n_masked, n_word_types, freq_source,
  tokenizer_hash, file, notes JSON, created, used)`
* `metrics(run, step, tokens_seen, layer, metric, variant, value, family, probe_hash)`, unique over
  (probe_hash, run, step, layer, metric, variant) — tidy rows; `value` NULL when undefined
* `arrays(run, step, kind, probe_hash, family, file, meta JSON)`, key (probe_hash, run, step, kind); run-level
  arrays (step × step CKA) use step −1
* `completed(run, step, family, probe_hash, params, finished, seconds)`, key (probe_hash, run, step, family):
  a family counts as done for a snapshot only with matching `params` (settings that change its values)
* `notes(run, step, probe_hash, family, note)` — e.g. "no MLM head: head metrics skipped"; snapshot-integrity
  flags are notes of family and probe hash "integrity" (`dynamics.find.integrity`, `replace_notes`)
* `onsets(run, metric, layer, variant, probe_hash, step, tokens_seen, change)`, key (probe_hash, run, metric,
  layer, variant): the step at which each metric curve first covered half of its change (`dynamics.results.onsets`;
  step NULL when it has none), rewritten after every probe run
* `phases(run, metric, layer, variant, probe_hash, phase, start_step, end_step, direction, size)`, key (probe_hash,
  run, metric, layer, variant, phase): each curve's phases between change points against log step
  (`dynamics.results.phases`: rise | fall | flat, size in the metric's unit), rewritten after the onsets
* `definitions(name PK, family, scope, layers, variants JSON, label, unit, definition, pointer, page, position)`:
  what each metric name means, written by the probe from its registry (`write_definitions`), so that the app
  labels curves and picks their page without importing the metric modules
* `metric_modules(name PK, path, sha256, source, metrics JSON, recorded)`: the user metrics modules
  (`dynamics.probe --metrics-module`) whose metrics the store holds, with the text and hash of their source
* `group_metrics(grp, step, tokens_seen, layer, metric, variant, value, family, probe_hash, n_runs)`, unique over
  (probe_hash, grp, step, layer, metric, variant): metrics of group scope (seed agreement,
  `dynamics.measure.agreement`) per seed group (`grp`, the group's label) and step its runs share; `n_runs` runs
  stand behind each value; `group_members(grp, run, seed, probe_hash)` lists them (`write_group_family`)

Versions: `meta.schema_version` is `SCHEMA_VERSION`. Opening an older store for writing applies `MIGRATIONS` in
order, in one transaction (a failed migration leaves the file as it was); opening it read-only (the app) reads it
through a compatibility view (temporary empty tables and NULL columns; the file is not touched), and `Store.gaps`
says what its file lacked. A store of a newer version is refused with one line naming the fix, and so is an SQLite
file without a schema version (not ours: `check_ours`). The query methods (`runs`, `snapshots`, `probe_sets`,
`metrics`, `metric_list`, `arrays`, `notes`, `completed`, `onsets`, `phases`, `definitions`) are the only SQL readers
need.

Kill safety: everything one (snapshot, family) produces is written in one transaction; its `.npz` files are
written first under fresh names (temporary file + `os.replace`) and files they supersede are deleted only after
the commit, so a kill at any point leaves either the old or the new result, never a mix.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common import files
from common.files import save_npz
from dynamics.errors import StoreError

if TYPE_CHECKING:
    import pandas as pd

    from dynamics.results.onsets import Onset
    from dynamics.results.phases import CurvePhases

DB_NAME = "results.sqlite"
# The schema's version, recorded as `meta.schema_version`. History: 1, the tables below without `definitions` (a
# version-1 file may lack `onsets`, which came without a new number, and, from a still earlier probe, other tables,
# columns and indexes: the readers used to tolerate that query by query); 2, `definitions`, and every version-1 gap
# filled by `MIGRATIONS`; 3, the tables and columns marked `since=3` (this round's analyses: user metric modules,
# phases, group-scope results), created empty by `_to_3`.
SCHEMA_VERSION = 3
# How long a connection waits for another's write lock before failing with "database is locked". Several probe
# processes (`torchrun … -m dynamics.probe`, `dynamics.shards`) write one store; each holds the lock for one
# (snapshot, family) transaction (`BEGIN IMMEDIATE`, so a writer waits at its start rather than failing on an
# upgrade), milliseconds normally, but a loaded machine can stall a process with the lock for seconds.
BUSY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Column:
    """One column: its name, its SQL declaration, and the schema version that introduced it."""

    name: str
    decl: str
    since: int = 1

    @property
    def type(self) -> str:
        """The declared type alone (what a migration adds: SQLite adds no column with a key or NOT NULL)."""
        return self.decl.split()[0]


@dataclass(frozen=True)
class Table:
    """One table: columns in order (rows are inserted by position), table constraints, the version that
    introduced it."""

    columns: tuple[Column, ...]
    keys: str = ""
    since: int = 1

    def create(self, name: str, schema: str = "") -> str:
        """`CREATE TABLE` for this table (in `schema`, e.g. "temp", when given)."""
        body = ", ".join([*(f"{c.name} {c.decl}" for c in self.columns), *([self.keys] if self.keys else [])])
        return f"CREATE TABLE {schema + '.' if schema else ''}{name} ({body})"


def _table(spec: str, keys: str = "", since: int = 1) -> Table:
    """A `Table` from "name DECL, name DECL, …" (declarations without commas)."""
    cols = tuple(Column(*part.strip().split(None, 1)) for part in spec.split(","))
    return Table(cols, keys, since)


# The schema: every table, column and index of a results store, listed here only (readers, the app and the
# migrations take it from here).
SCHEMA: dict[str, Table] = {
    "meta": _table("key TEXT PRIMARY KEY, value TEXT"),
    "runs": _table("name TEXT PRIMARY KEY, path TEXT NOT NULL, kind TEXT, objective TEXT, meta TEXT, updated REAL"),
    "snapshots": _table("run TEXT NOT NULL, step INTEGER NOT NULL, tokens_seen INTEGER, path TEXT, info TEXT",
                        "PRIMARY KEY (run, step)"),
    "probe_sets": _table("hash TEXT PRIMARY KEY, source TEXT, n_blocks INTEGER, block_size INTEGER, n_tokens INTEGER, "
                         "n_masked INTEGER, n_word_types INTEGER, freq_source TEXT, tokenizer_hash TEXT, file TEXT, "
                         "notes TEXT, created REAL, used REAL"),
    "metrics": _table("run TEXT NOT NULL, step INTEGER NOT NULL, tokens_seen INTEGER, layer INTEGER NOT NULL, "
                      "metric TEXT NOT NULL, variant TEXT NOT NULL, value REAL, family TEXT NOT NULL, "
                      "probe_hash TEXT NOT NULL", "UNIQUE (probe_hash, run, step, layer, metric, variant)"),
    "arrays": _table("run TEXT NOT NULL, step INTEGER NOT NULL, kind TEXT NOT NULL, probe_hash TEXT NOT NULL, "
                     "family TEXT NOT NULL, file TEXT NOT NULL, meta TEXT", "PRIMARY KEY (probe_hash, run, step, kind)"),
    "completed": _table("run TEXT NOT NULL, step INTEGER NOT NULL, family TEXT NOT NULL, probe_hash TEXT NOT NULL, "
                        "params TEXT NOT NULL, finished REAL, seconds REAL", "PRIMARY KEY (probe_hash, run, step, family)"),
    "notes": _table("run TEXT NOT NULL, step INTEGER NOT NULL, probe_hash TEXT NOT NULL, family TEXT NOT NULL, "
                    "note TEXT NOT NULL", "UNIQUE (probe_hash, run, step, family, note)"),
    "onsets": _table("run TEXT NOT NULL, metric TEXT NOT NULL, layer INTEGER NOT NULL, variant TEXT NOT NULL, "
                     "probe_hash TEXT NOT NULL, step INTEGER, tokens_seen INTEGER, change REAL",
                     "PRIMARY KEY (probe_hash, run, metric, layer, variant)"),
    # Phases of each stored curve (`dynamics.results.phases`): change points against log step, rewritten after onsets.
    "phases": _table("run TEXT NOT NULL, metric TEXT NOT NULL, layer INTEGER NOT NULL, variant TEXT NOT NULL, "
                     "probe_hash TEXT NOT NULL, phase INTEGER NOT NULL, start_step INTEGER, end_step INTEGER, "
                     "direction TEXT, size REAL", "PRIMARY KEY (probe_hash, run, metric, layer, variant, phase)",
                     since=3),
    # What each stored metric name means, written by the probe from its registry (`Store.write_definitions`), so
    # that readers label curves without importing the metric modules. `variants` is JSON; `position` the order.
    "definitions": _table("name TEXT PRIMARY KEY, family TEXT, scope TEXT, layers TEXT, variants TEXT, label TEXT, "
                          "unit TEXT, definition TEXT, pointer TEXT, page TEXT, position INTEGER", since=2),
    # The user metrics modules (`dynamics.probe --metrics-module`, `dynamics.metrics.user`) whose metrics the store
    # holds: the name given, the file it was read from, the sha256 and text of its source, the metric names it
    # registered (JSON), when it was last recorded.
    "metric_modules": _table("name TEXT PRIMARY KEY, path TEXT, sha256 TEXT, source TEXT, metrics TEXT, recorded REAL",
                             since=3),
    # Metrics of group scope (seed agreement): per seed group and shared step; `n_runs` runs behind each value.
    "group_metrics": _table("grp TEXT NOT NULL, step INTEGER NOT NULL, tokens_seen INTEGER, layer INTEGER NOT NULL, "
                            "metric TEXT NOT NULL, variant TEXT NOT NULL, value REAL, family TEXT NOT NULL, "
                            "probe_hash TEXT NOT NULL, n_runs INTEGER",
                            "UNIQUE (probe_hash, grp, step, layer, metric, variant)", since=3),
    "group_members": _table("grp TEXT NOT NULL, run TEXT NOT NULL, seed INTEGER, probe_hash TEXT NOT NULL",
                            "PRIMARY KEY (probe_hash, grp, run)", since=3),
}
# index name → (table, columns)
INDEXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "metrics_by_family": ("metrics", ("probe_hash", "run", "step", "family")),
    "metrics_by_metric": ("metrics", ("probe_hash", "metric")),
}
TABLES: dict[str, tuple[str, ...]] = {name: tuple(c.name for c in t.columns) for name, t in SCHEMA.items()}
_METRIC_COLUMNS = ("run", "step", "tokens_seen", "layer", "metric", "variant", "value", "family")
# Which page of the app shows a metric of each family (`write_definitions`, for a registration without `page`).
_FAMILY_PAGES = {"anchors": "anchors", "drift": "anchors", "context": "context", "geometry": "geometry",
                 "ln_outliers": "geometry", "cka_steps": "cka", "acquisition": "acquisition"}


@dataclass(frozen=True)
class Gaps:
    """What a store's file lacks of `SCHEMA`: whole tables, columns of the tables it has, indexes."""

    tables: tuple[str, ...] = ()
    columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    indexes: tuple[str, ...] = ()

    @property
    def shimmed(self) -> set[str]:
        """The tables a read-only connection reads through a compatibility view (`_shim`)."""
        return {*self.tables, *self.columns}

    def lines(self, upto: int = SCHEMA_VERSION) -> list[str]:
        """The missing tables and columns introduced by version `upto` or before, in words ("no `arrays` table",
        "table `metrics` lacks `family`"); an index is no loss of data and is left out."""
        out = [f"no `{t}` table" for t in self.tables if SCHEMA[t].since <= upto]
        for table, cols in self.columns.items():
            since = {c.name: c.since for c in SCHEMA[table].columns}
            if old := [c for c in cols if since[c] <= upto]:
                out.append(f"table `{table}` lacks {', '.join(f'`{c}`' for c in old)}")
        return out


def _gaps(conn: sqlite3.Connection, upto: int = SCHEMA_VERSION) -> Gaps:
    """The tables, columns and indexes of `SCHEMA` introduced by version `upto` or before that the file (schema
    "main") lacks."""
    tables, columns = [], {}
    for name, table in SCHEMA.items():
        if table.since > upto:
            continue
        have = {r[1] for r in conn.execute(f"PRAGMA main.table_info({name})")}
        if not have:
            tables.append(name)
        elif missing := tuple(c.name for c in table.columns if c.since <= upto and c.name not in have):
            columns[name] = missing
    have_index = {r[0] for r in conn.execute("SELECT name FROM main.sqlite_master WHERE type='index'")}
    indexes = tuple(i for i, (t, _) in INDEXES.items() if SCHEMA[t].since <= upto and i not in have_index)
    return Gaps(tuple(tables), columns, indexes)


def _fill(conn: sqlite3.Connection, gaps: Gaps) -> None:
    """Create what `gaps` names in the file: tables empty, columns NULL in the existing rows, indexes built."""
    for name in gaps.tables:
        conn.execute(SCHEMA[name].create(name))
    for name, cols in gaps.columns.items():
        for col in (c for c in SCHEMA[name].columns if c.name in cols):
            conn.execute(f"ALTER TABLE {name} ADD COLUMN {col.name} {col.type}")
    for index in gaps.indexes:
        table, cols = INDEXES[index]
        conn.execute(f"CREATE INDEX {index} ON {table} ({', '.join(cols)})")


def _shim(conn: sqlite3.Connection, gaps: Gaps) -> None:
    """Show a read-only connection the file as if `gaps` were filled, without writing it: a missing table is an
    empty temporary table, a table with missing columns a temporary view (shadowing it) with those columns NULL.
    A missing index stays missing (queries scan)."""
    for name in gaps.tables:
        conn.execute(SCHEMA[name].create(name, schema="temp"))
    for name, cols in gaps.columns.items():
        select = ", ".join(f"NULL AS {c.name}" if c.name in cols else c.name for c in SCHEMA[name].columns)
        conn.execute(f"CREATE TEMP VIEW {name} AS SELECT {select} FROM main.{name}")


@dataclass(frozen=True)
class Migration:
    """One step of the schema's history: brings a store of version `to` − 1 to version `to`."""

    to: int
    says: str
    apply: Callable[[sqlite3.Connection], None]


def _to_2(conn: sqlite3.Connection) -> None:
    lacked = _gaps(conn, upto=1)
    _fill(conn, lacked)  # version 1's own gaps first: what the readers once tolerated query by query
    if "family" in lacked.columns.get("metrics", ()):
        # Downstream rows (`experiments.results`) carry their family as their probe hash; the probe's rows get
        # theirs from the definitions the probe stores (`write_definitions`). A family rewritten later then
        # replaces its old rows instead of colliding with them.
        conn.execute("UPDATE metrics SET family = probe_hash WHERE probe_hash = 'downstream'")
    _fill(conn, _gaps(conn, upto=2))  # then what version 2 adds


def _to_3(conn: sqlite3.Connection) -> None:
    _fill(conn, _gaps(conn, upto=3))  # version 3 only adds: its tables empty, its columns NULL


# Ordered; opening an older store for writing applies every migration past its version, in one transaction.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(2, "version 1 → 2: what a version-1 file lacks of version 1 is created — a missing table empty (onsets "
              "came under version 1 without a new number; arrays, notes, completed or probe_sets from an earlier "
              "probe), a missing column NULL in the existing rows (metrics.family: downstream rows get theirs), a "
              "missing index built — then the definitions table", _to_2),
    Migration(3, "version 2 → 3: the tables and columns of version 3 are created, empty or NULL", _to_3),
)


MetricRow = tuple[int, str, str, float | None]  # (layer, metric, variant, value)


@dataclass
class FamilyResult:
    """What one metric family produced for one snapshot: tidy rows, named arrays, notes."""

    rows: list[MetricRow]
    arrays: dict[str, dict[str, np.ndarray]]  # kind → arrays saved together in one .npz
    notes: list[str]
    seconds: float | None = None  # compute time, when the family measured it itself


def resolve(path: str | Path) -> Path:
    """The database file for `path`: a `.sqlite`/`.db` file itself; for a folder, `path/results.sqlite`, or
    `path/dynamics/results.sqlite` when only that exists (a run folder)."""
    p = Path(path)
    if p.suffix in (".sqlite", ".db") and not p.is_dir():
        return p
    if not (p / DB_NAME).is_file() and (p / "dynamics" / DB_NAME).is_file():
        return p / "dynamics" / DB_NAME
    return p / DB_NAME


SQLITE_HEADER = b"SQLite format 3\x00"


def check_ours(db_path: str | Path) -> None:
    """Refuse, touching nothing, to write where a results store cannot be: `StoreError` when the store's folder
    (or a folder above it) is a file or cannot be written (`common.files.check_directory`), when `results.sqlite` is a directory or not an SQLite database, or when it is
    an SQLite database that is not one of ours (tables, but no `meta.schema_version`). A new or empty database
    passes."""
    path = Path(db_path)
    if not path.exists():  # a new store: its folder (or the nearest one above it) must be a folder it can be made in
        files.check_directory(path.parent, str(path.parent), "pass another --out", create=False, error=StoreError)
        return
    if not path.is_file():
        raise StoreError(f"{path} is not a file; remove it or pass another --out")
    with path.open("rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if not head:
        return  # an empty file is an empty database
    if head != SQLITE_HEADER:
        raise StoreError(f"{path} is not an SQLite database (not a results store); move it away or pass another "
                         "--out")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, timeout=30)  # no -wal/-shm files
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            version = (conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                       if "meta" in tables else None)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} cannot be read as a results store ({exc}); move it away or pass another "
                         "--out") from None
    number = _version(version[0] if version else None)
    if tables and number is None:
        raise StoreError(f"{path} is an SQLite database but not a taco-dynamics results store (tables: "
                         f"{', '.join(sorted(tables)[:5])}); refusing to write into it: pass another --out")
    if number is not None and number > SCHEMA_VERSION:
        raise StoreError(_newer(path, number))


def _version(value: object) -> int | None:
    """`meta.schema_version` as a number; None when absent or not a whole number (not one of ours)."""
    try:
        return None if value is None else int(str(value))
    except ValueError:
        return None


def _newer(path: Path, version: int) -> str:
    return (f"{path} was written by a newer taco-dynamics (store schema {version}; this one reads up to "
            f"{SCHEMA_VERSION}): update taco-dynamics (git pull, then pip install -e .) to read or write it")


def open(path: str | Path, readonly: bool = False) -> Store:  # noqa: A001 - the documented API name
    """Open (creating unless `readonly`) the store at `path` (a store folder, its database, or a run folder)."""
    return Store(resolve(path), readonly=readonly)


class Store:
    """A results store; writers go through `write_family`, readers through the DataFrame query helpers.

    Opening brings an older store to `SCHEMA`: for writing, by `MIGRATIONS` in the file, in one transaction (a
    failed migration leaves the file as it was); read-only, through a compatibility view (`_shim`: temporary empty
    tables and views with NULL columns, the file untouched). `gaps` says what the file lacked, `file_version` which
    schema it had. A newer store, and a database that is not ours, are refused (`StoreError`)."""

    def __init__(self, db_path: Path, readonly: bool = False, immutable: bool = False) -> None:
        """`immutable` (with `readonly`): read the file as it is, without SQLite's `-shm`/`-wal` files, leaving its
        folder byte for byte as it was (`dynamics.results.merge`: only for a store no process is writing and whose
        write-ahead log is empty or absent)."""
        self.path = Path(db_path)
        self.root = self.path.parent
        self.readonly = readonly
        self.gaps = Gaps()
        if readonly:
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.path}: no results store; run python -m dynamics.probe first")
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro{'&immutable=1' if immutable else ''}", uri=True,
                                        timeout=BUSY_TIMEOUT_S,
                                        isolation_level=None, check_same_thread=False)
            try:
                self.file_version = self._readable_version()
                self.gaps = _gaps(self.conn)
                _shim(self.conn, self.gaps)
            except BaseException:
                self.conn.close()
                raise
        else:
            check_ours(self.path)
            self.root.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                        check_same_thread=False)
            try:
                self.file_version = self._create_or_migrate()
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
            except BaseException:
                self.conn.close()
                raise
        self._metric_index = "metrics" not in self.gaps.shimmed and "metrics_by_metric" not in self.gaps.indexes

    def _readable_version(self) -> int:
        """The file's schema version; `StoreError` for an empty database, someone else's, or a newer store."""
        tables = self.table_names()
        version = self.schema_version()
        if version is None:
            if not tables:
                raise StoreError(f"{self.path}: an empty database, not a results store (a probe stopped before its "
                                 "first write?); run python -m dynamics.probe with --out set to its folder")
            raise StoreError(f"{self.path}: an SQLite database but not a results store (tables: "
                             f"{', '.join(tables[:5])}); results stores are written by python -m dynamics.probe "
                             "and python -m experiments.evaluate")
        if version > SCHEMA_VERSION:
            raise StoreError(_newer(self.path, version))
        return version

    def _create_or_migrate(self) -> int:
        """Create the schema in a new database, or bring an older store to `SCHEMA_VERSION` by `MIGRATIONS`, in
        one transaction taken before reading the version (another writer may be migrating it); returns the
        version the file had (`SCHEMA_VERSION` for a new one)."""
        with self._transaction() as conn:
            version = self.schema_version()
            if version is None:  # a new or empty database (`check_ours` refused anything else)
                for name, table in SCHEMA.items():
                    conn.execute(table.create(name))
                for name, (table, cols) in INDEXES.items():
                    conn.execute(f"CREATE INDEX {name} ON {table} ({', '.join(cols)})")
                conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                return SCHEMA_VERSION
            if version > SCHEMA_VERSION:
                raise StoreError(_newer(self.path, version))
            if version < SCHEMA_VERSION:
                lacked = _gaps(conn, upto=version)
                for migration in MIGRATIONS:
                    if migration.to > version:
                        migration.apply(conn)
                conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('upgraded', ?)",
                             (json.dumps({"from": version, "at": time.time(), "lacked": lacked.lines()}),))
            return version

    def upgraded(self) -> dict[str, Any] | None:
        """How this store was upgraded in place, if it was: {"from": version, "at": time, "lacked": what the older
        file lacked, in words}; None for a store written at this schema."""
        row = self.conn.execute("SELECT value FROM meta WHERE key='upgraded'").fetchone()
        try:
            value = json.loads(row[0]) if row else None
        except (TypeError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    # ------------------------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def arrays_dir(self) -> Path:
        return self.root / "arrays"

    def _transaction(self) -> _Tx:
        return _Tx(self.conn)

    # ---------------------------------------------------------------------------------------------- writes
    def upsert_run(self, name: str, path: Path, kind: str, objective: str | None, meta: Mapping[str, Any]) -> None:
        with self._transaction():
            self.conn.execute(
                _insert("runs") + " ON CONFLICT(name) DO UPDATE SET path=excluded.path, "
                "kind=excluded.kind, objective=excluded.objective, meta=excluded.meta, updated=excluded.updated",
                (name, str(path), kind, objective, json.dumps(meta, default=str), time.time()))

    def write_onsets(self, probe_hash: str, run: str, onsets: Iterable[Onset]) -> None:
        """Replace the onsets of `run` under `probe_hash` by `onsets`, in one transaction."""
        rows = [(o.run, o.metric, o.layer, o.variant, probe_hash, o.step, o.tokens_seen, o.change) for o in onsets]
        if any(r[0] != run for r in rows):
            raise ValueError(f"onsets of another run than {run!r}")
        with self._transaction():
            self.conn.execute("DELETE FROM onsets WHERE probe_hash=? AND run=?", (probe_hash, run))
            self.conn.executemany(_insert("onsets"), rows)

    def write_phases(self, probe_hash: str, run: str, curves: Iterable[CurvePhases]) -> None:
        """Replace the phases of `run` under `probe_hash` by those of `curves`, in one transaction."""
        rows = [(c.run, c.metric, c.layer, c.variant, probe_hash, p.index, p.start_step, p.end_step, p.direction,
                 _finite(p.size)) for c in curves for p in c.phases]
        if any(r[0] != run for r in rows):
            raise ValueError(f"phases of another run than {run!r}")
        with self._transaction():
            self.conn.execute("DELETE FROM phases WHERE probe_hash=? AND run=?", (probe_hash, run))
            self.conn.executemany(_insert("phases"), rows)

    def upsert_snapshots(self, rows: Iterable[tuple[str, int, int | None, str, Mapping[str, Any]]]) -> None:
        """Rows (run, step, tokens_seen, path, info)."""
        with self._transaction():
            self.conn.executemany(
                _insert("snapshots") + " ON CONFLICT(run, step) DO UPDATE SET "
                "tokens_seen=excluded.tokens_seen, path=excluded.path, info=excluded.info",
                [(r, s, t, p, json.dumps(i, default=str)) for r, s, t, p, i in rows])

    def add_probe_set(self, *, hash: str, source: str, n_blocks: int, block_size: int, n_tokens: int,  # noqa: A002
                      n_masked: int, n_word_types: int, freq_source: str, tokenizer_hash: str, file: str,
                      notes: Sequence[str]) -> None:
        now = time.time()
        with self._transaction():
            self.conn.execute(
                _insert("probe_sets") + " ON CONFLICT(hash) DO UPDATE SET "
                "used=excluded.used, file=excluded.file",
                (hash, source, n_blocks, block_size, n_tokens, n_masked, n_word_types, freq_source, tokenizer_hash,
                 file, json.dumps(list(notes)), now, now))

    def completed_params(self, probe_hash: str) -> dict[tuple[str, int, str], str]:
        """(run, step, family) → params of every finished family under `probe_hash`."""
        cur = self.conn.execute("SELECT run, step, family, params FROM completed WHERE probe_hash=?", (probe_hash,))
        return {(r, s, f): p for r, s, f, p in cur}

    def write_family(self, *, run: str, step: int, tokens_seen: int | None, family: str, probe_hash: str,
                     params: str, result: FamilyResult, seconds: float | None = None) -> None:
        """Replace everything stored for (run, step, family, probe_hash) by `result`, in one transaction."""
        written: list[tuple[str, str, Path]] = []
        try:
            for kind, arrays in result.arrays.items():
                rel = Path("arrays") / _safe(run) / f"{_safe(kind)}-{step:07d}-{probe_hash[:12]}-{uuid.uuid4().hex[:8]}.npz"
                save_npz(self.root / rel, **arrays)
                written.append((kind, rel.as_posix(), self.root / rel))
            kinds = [w[0] for w in written]
            with self._transaction():
                key = (probe_hash, run, step)
                marks = ",".join("?" * len(kinds))
                stale = f"probe_hash=? AND run=? AND step=? AND (family=? OR kind IN ({marks}))"
                old = [r[0] for r in self.conn.execute(f"SELECT file FROM arrays WHERE {stale}", (*key, family, *kinds))]
                self.conn.execute(f"DELETE FROM arrays WHERE {stale}", (*key, family, *kinds))
                for table in ("metrics", "completed", "notes"):
                    self.conn.execute(f"DELETE FROM {table} WHERE probe_hash=? AND run=? AND step=? AND family=?",
                                      (*key, family))
                self.conn.executemany(
                    _insert("metrics"),
                    [(run, step, tokens_seen, int(layer), metric, variant, _finite(value), family, probe_hash)
                     for layer, metric, variant, value in result.rows])
                self.conn.executemany(
                    _insert("arrays"),
                    [(run, step, kind, probe_hash, family, rel, json.dumps({"keys": sorted(result.arrays[kind])}))
                     for kind, rel, _ in written])
                self.conn.executemany(_insert("notes", "INSERT OR IGNORE"),
                                      [(run, step, probe_hash, family, n) for n in result.notes])
                self.conn.execute(_insert("completed"),
                                  (run, step, family, probe_hash, params, time.time(), seconds))
        except BaseException:
            for _, _, path in written:
                path.unlink(missing_ok=True)
            raise
        keep = {rel for _, rel, _ in written}
        for rel in set(old) - keep:
            (self.root / rel).unlink(missing_ok=True)

    def write_run_family(self, *, run: str, family: str, probe_hash: str, params: str,
                         step_rows: Mapping[int, tuple[int | None, Sequence[MetricRow]]],
                         arrays: dict[str, dict[str, np.ndarray]], notes: Sequence[str] = ()) -> None:
        """Replace a run-level family (rows at many steps, arrays at step −1) in one transaction.

        `step_rows`: step → (tokens_seen, rows). Completion is recorded at step −1.
        """
        written: list[tuple[str, str, Path]] = []
        try:
            for kind, arr in arrays.items():
                rel = Path("arrays") / _safe(run) / f"{_safe(kind)}-run-{probe_hash[:12]}-{uuid.uuid4().hex[:8]}.npz"
                save_npz(self.root / rel, **arr)
                written.append((kind, rel.as_posix(), self.root / rel))
            with self._transaction():
                key = (probe_hash, run, family)
                old = [r[0] for r in self.conn.execute(
                    "SELECT file FROM arrays WHERE probe_hash=? AND run=? AND family=?", key)]
                for table in ("metrics", "arrays", "completed", "notes"):
                    self.conn.execute(f"DELETE FROM {table} WHERE probe_hash=? AND run=? AND family=?", key)
                self.conn.executemany(
                    _insert("metrics"),
                    [(run, step, tokens, int(layer), metric, variant, _finite(value), family, probe_hash)
                     for step, (tokens, rows) in step_rows.items() for layer, metric, variant, value in rows])
                self.conn.executemany(
                    _insert("arrays"),
                    [(run, -1, kind, probe_hash, family, rel, json.dumps({"keys": sorted(arrays[kind])}))
                     for kind, rel, _ in written])
                self.conn.executemany(_insert("notes", "INSERT OR IGNORE"),
                                      [(run, -1, probe_hash, family, n) for n in notes])
                self.conn.execute(_insert("completed"),
                                  (run, -1, family, probe_hash, params, time.time(), None))
        except BaseException:
            for _, _, path in written:
                path.unlink(missing_ok=True)
            raise
        for rel in set(old) - {rel for _, rel, _ in written}:
            (self.root / rel).unlink(missing_ok=True)

    def write_definitions(self, metrics: Iterable[Any]) -> None:
        """Store what each metric name means, so that readers (the app) label and place curves from the store alone:
        `metrics` are registrations (`dynamics.metrics.registry.Metric`-like: name, family, scope, layers, variants,
        label, unit, definition, pointer, and page — derived from the family where a registration has none), in
        registry order. Replaces the definitions of these names and keeps the others (rows of a metric that a newer
        registry dropped keep their label). In an upgraded store whose rows lacked a family, rows of a defined
        metric get the family its definition names."""
        rows = [(m.name, m.family, m.scope, m.layers, json.dumps(list(m.variants)), m.label, m.unit, m.definition,
                 m.pointer, getattr(m, "page", None) or _FAMILY_PAGES.get(m.family), i) for i, m in enumerate(metrics)]
        with self._transaction():
            self.conn.executemany(_insert("definitions", "INSERT OR REPLACE"), rows)
            if self.upgraded() is not None:
                self.conn.execute("UPDATE metrics SET family = (SELECT d.family FROM definitions d WHERE d.name = "
                                  "metrics.metric) WHERE family IS NULL AND metric IN (SELECT name FROM definitions)")

    def write_metric_modules(self, modules: Iterable[Any]) -> None:
        """Record user metrics modules (`dynamics.metrics.user.UserModule`-like: name, source (its file), sha256 and
        text of the source, metrics); a module recorded before under the same name is replaced."""
        rows = [(m.name, m.source, m.sha256, m.text, json.dumps(list(m.metrics)), time.time()) for m in modules]
        if rows:
            with self._transaction():
                self.conn.executemany(_insert("metric_modules", "INSERT OR REPLACE"), rows)

    def insert_rows(self, tables: Mapping[str, Iterable[Sequence[Any]]]) -> None:
        """Insert whole rows (every column of `TABLES[table]`, in order) into each table, in one transaction: how
        `dynamics.results.merge` fills a new store."""
        with self._transaction():
            for table, rows in tables.items():
                self.conn.executemany(_insert(table), rows)

    def write_group_family(self, *, group: str, family: str, probe_hash: str,
                           members: Sequence[tuple[str, int | None]],
                           step_rows: Mapping[int, tuple[int | None, Sequence[MetricRow]]]) -> None:
        """Replace a group-scope family of one seed group (`members`: (run, seed) pairs; `step_rows`: step →
        (tokens_seen, rows)) in one transaction."""
        with self._transaction():
            self.conn.execute("DELETE FROM group_metrics WHERE probe_hash=? AND grp=? AND family=?",
                              (probe_hash, group, family))
            self.conn.execute("DELETE FROM group_members WHERE probe_hash=? AND grp=?", (probe_hash, group))
            self.conn.executemany(_insert("group_members"), [(group, run, seed, probe_hash) for run, seed in members])
            self.conn.executemany(
                _insert("group_metrics"),
                [(group, step, tokens, int(layer), metric, variant, _finite(value), family, probe_hash, len(members))
                 for step, (tokens, rows) in step_rows.items() for layer, metric, variant, value in rows])

    def group_metrics(self, metric: str | Sequence[str] | None = None, *, group: str | Sequence[str] | None = None,
                      probe_hash: str | None = None) -> pd.DataFrame:
        """Group-scope rows (grp, step, tokens_seen, layer, metric, variant, value, family, n_runs) of one probe set."""
        return self._select("group_metrics", ["grp", "step", "tokens_seen", "layer", "metric", "variant", "value",
                                              "family", "n_runs"],
                            {"probe_hash": self._hash(probe_hash), "metric": metric, "grp": group},
                            order=["grp", "metric", "variant", "layer", "step"])

    def group_members(self, probe_hash: str | None = None) -> pd.DataFrame:
        """The runs behind each group's group-scope rows: grp, run, seed."""
        return self._select("group_members", ["grp", "run", "seed"], {"probe_hash": self._hash(probe_hash)},
                            order=["grp", "run"])

    def replace_notes(self, *, run: str, family: str, probe_hash: str, notes: Iterable[tuple[int, str]]) -> None:
        """Replace every note of (run, family, probe_hash) by `notes` ((step, note) pairs), in one transaction."""
        with self._transaction():
            self.conn.execute("DELETE FROM notes WHERE probe_hash=? AND run=? AND family=?", (probe_hash, run, family))
            self.conn.executemany(_insert("notes", "INSERT OR IGNORE"),
                                  [(run, int(step), probe_hash, family, note) for step, note in notes])

    # --------------------------------------------------------------------------------------------- queries
    # Every table and column of `SCHEMA` is there (an older store was migrated or is read through `_shim`).
    # `probe_hash=None` means the most recently used probe set; in a store that records none (one from before probe
    # sets were recorded) it means every row.

    def columns(self, table: str) -> list[str]:
        """The columns of `table` (one of `TABLES`) as this connection reads them."""
        if table not in TABLES:
            raise ValueError(f"{table!r}: not a table of the results store ({', '.join(TABLES)})")
        return [row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")]

    def has_index(self, name: str) -> bool:
        """Whether the store's file has the index `name` (an older store read-only may lack one: a slower scan)."""
        return self.conn.execute("SELECT 1 FROM main.sqlite_master WHERE type='index' AND name=?",
                                 (name,)).fetchone() is not None

    def table_names(self) -> list[str]:
        """The tables in the store's file (any, not only `TABLES`), sorted."""
        return sorted(r[0] for r in self.conn.execute("SELECT name FROM main.sqlite_master WHERE type='table'"))

    def schema_version(self) -> int | None:
        """`meta.schema_version` of the file; None when it has none (not a results store, or an empty database)."""
        if "meta" not in self.table_names():
            return None
        row = self.conn.execute("SELECT value FROM main.meta WHERE key='schema_version'").fetchone()
        return _version(row[0] if row else None)

    def value_problems(self) -> tuple[int, int]:
        """(metric values that are not numbers, metric values that are ±inf): what a reader leaves out."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(typeof(value) NOT IN ('real', 'integer', 'null')), 0), "
            "COALESCE(SUM(typeof(value) = 'real' AND abs(value) > 1.7976931348623157e308), 0) FROM metrics").fetchone()
        return int(row[0]), int(row[1])

    def _df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        import pandas as pd

        cur = self.conn.execute(sql, tuple(params))
        cols = [c[0] for c in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=cols)

    def _select(self, table: str, columns: Sequence[str], where: Mapping[str, Any] | None = None,
                order: Sequence[str] = (), *, distinct: bool = False, limit: int | None = None) -> pd.DataFrame:
        """`columns` of `table`, rows filtered by the `where` items whose value is not None (a str or number: equal
        to it; any other iterable: in it), ordered by the `order` terms ("step", "used DESC")."""
        clauses, args = [], []
        for col, val in (where or {}).items():
            if val is None:
                continue
            if isinstance(val, (str, bytes, int, float, np.generic)):
                clauses.append(f"{col}=?")
                args.append(val.item() if isinstance(val, np.generic) else val)
            else:
                vals = [v.item() if isinstance(v, np.generic) else v for v in val]
                clauses.append(f"{col} IN ({','.join('?' * len(vals))})")
                args.extend(vals)
        sql = (f"SELECT {'DISTINCT ' if distinct else ''}{', '.join(columns)} FROM {table}"
               + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
               + (f" ORDER BY {', '.join(order)}" if order else "")
               + (f" LIMIT {int(limit)}" if limit is not None else ""))
        return self._df(sql, args)

    def latest_probe_hash(self) -> str | None:
        """The probe set used most recently (the default for every query below); None when none is recorded."""
        df = self._select("probe_sets", ["hash"], order=["used DESC"], limit=1)
        return None if df.empty else df["hash"].iloc[0]

    def _hash(self, probe_hash: str | None) -> str | None:
        return probe_hash or self.latest_probe_hash()

    def runs(self) -> pd.DataFrame:
        """One row per run: name, path, kind (the series layout, `dynamics.find.series`: "run" for taco.train's,
        "trainer" for Trainer `checkpoint-N/` folders, "steps" for `NAME-step_N/` folders, "model" for one model
        folder, "hub" for revisions in the Hugging Face cache), objective, meta (JSON: the series' metadata plus
        the probe's `probe_device` and `architecture_kind`, "encoder" | "causal"), updated."""
        return self._select("runs", TABLES["runs"], order=["name"])

    def snapshots(self, run: str | None = None) -> pd.DataFrame:
        """Snapshots known to the store: run, step, tokens_seen, path, info (JSON)."""
        return self._select("snapshots", TABLES["snapshots"], {"run": run}, order=["run", "step"])

    def tokens_seen(self, run: str, steps: Sequence[int]) -> list[int | None]:
        """Tokens seen at each of the run's `steps` (None where the snapshot records none or is not stored)."""
        snaps = self.snapshots(run)
        known = {int(s): t for s, t in zip(snaps["step"], snaps["tokens_seen"], strict=True)}
        return [None if known.get(s) is None or np.isnan(known[s]) else int(known[s]) for s in steps]

    def probe_sets(self) -> pd.DataFrame:
        """All probe sets (the columns of `TABLES["probe_sets"]`), most recently used first."""
        return self._select("probe_sets", TABLES["probe_sets"], order=["used DESC"])

    def metrics(self, metric: str | Sequence[str] | None = None, *, run: str | Sequence[str] | None = None,
                layer: int | None = None, variant: str | None = None, family: str | None = None,
                probe_hash: str | None = None) -> pd.DataFrame:
        """Tidy metric rows (run, step, tokens_seen, layer, metric, variant, value, family) for one probe set,
        filtered by the arguments given (a sequence of metrics or runs: any of them)."""
        where = {"probe_hash": self._hash(probe_hash), "metric": metric, "run": run, "layer": layer,
                 "variant": variant, "family": family}
        return self._select("metrics", _METRIC_COLUMNS, where, order=["run", "metric", "variant", "layer", "step"])

    def metric_names(self, probe_hash: str | None = None) -> pd.DataFrame:
        """Distinct (family, metric, variant) with their row counts."""
        return self._df("SELECT family, metric, variant, COUNT(*) AS n FROM metrics WHERE probe_hash=? "
                        "GROUP BY family, metric, variant ORDER BY family, metric, variant", [self._hash(probe_hash)])

    def metric_list(self, probe_hash: str | None = None) -> pd.DataFrame:
        """Distinct (family, metric, variant) under the probe set, sorted, without counting rows (cheaper than
        `metric_names` on a large store): through the (probe_hash, metric) index — the distinct metrics by a skip
        scan, then each metric's families and variants from its own index range — or, where an older store read
        read-only has no such index, by one scan of the table."""
        cols = ["family", "metric", "variant"]
        h = self._hash(probe_hash)
        if h is None or not self._metric_index:
            df = self._select("metrics", cols, {"probe_hash": h}, distinct=True)
        else:
            import pandas as pd

            metrics = [r[0] for r in self.conn.execute(
                "WITH RECURSIVE m(name) AS (SELECT MIN(metric) FROM metrics WHERE probe_hash=?1 UNION ALL "
                "SELECT (SELECT MIN(metric) FROM metrics WHERE probe_hash=?1 AND metric > m.name) FROM m "
                "WHERE m.name IS NOT NULL) SELECT name FROM m WHERE name IS NOT NULL", (h,))]
            rows = []
            for metric in metrics:
                found = self.conn.execute("SELECT DISTINCT family, variant FROM metrics INDEXED BY metrics_by_metric "
                                          "WHERE probe_hash=? AND metric=?", (h, metric)).fetchall()
                rows += [(f, metric, v) for f, v in found]
            df = pd.DataFrame(rows, columns=cols)
        return df.sort_values(cols).reset_index(drop=True)

    def definitions(self) -> pd.DataFrame:
        """The stored metric definitions (`TABLES["definitions"]`, `variants` decoded to a tuple) in registry
        order; empty for a store written before definitions were stored."""
        df = self._select("definitions", TABLES["definitions"], order=["position", "name"])
        df["variants"] = [_variants(v) for v in df["variants"]]
        return df

    def metric_modules(self) -> pd.DataFrame:
        """The recorded user metrics modules: name, path, sha256, source, metrics (decoded to a tuple), recorded."""
        df = self._select("metric_modules", TABLES["metric_modules"], order=["name"])
        df["metrics"] = [_variants(v) for v in df["metrics"]]
        return df

    def arrays(self, kind: str | None = None, *, run: str | None = None, step: int | None = None,
               probe_hash: str | None = None) -> pd.DataFrame:
        """Array index rows (run, step, kind, family, file, meta); `file` is relative to the store folder."""
        where = {"probe_hash": self._hash(probe_hash), "kind": kind, "run": run, "step": step}
        return self._select("arrays", ["run", "step", "kind", "family", "file", "meta"], where,
                            order=["run", "step", "kind"])

    def load_array(self, file: str) -> dict[str, np.ndarray]:
        """The arrays in `file` (a path from the `arrays` table), loaded into memory."""
        with np.load(self.root / file, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def _one_array(self, kind: str, run: str, step: int, probe_hash: str | None) -> dict[str, np.ndarray] | None:
        df = self.arrays(kind, run=run, step=step, probe_hash=probe_hash)
        return None if df.empty else self.load_array(df.iloc[0]["file"])

    def cka_layers(self, run: str, step: int, probe_hash: str | None = None) -> dict[str, np.ndarray] | None:
        """Layer × layer debiased CKA of one snapshot: {"debiased": (L+1, L+1)}."""
        return self._one_array("cka_layers", run, step, probe_hash)

    def cka_steps(self, run: str, probe_hash: str | None = None) -> dict[str, np.ndarray] | None:
        """Step × step CKA per layer: {"steps": (S,), "debiased": (L+1, S, S), "biased": (L+1, S, S)}."""
        return self._one_array("cka_steps", run, -1, probe_hash)

    def projection(self, run: str, step: int, probe_hash: str | None = None) -> dict[str, np.ndarray] | None:
        """2-D PCA projections of the fixed token sample: {"xy": (L+1, n, 2), "explained": (L+1, 2),
        "xy_g": (L, n, 2), "explained_g": (L, 2) (of g = h − e, layers 1…L), "xy_e", "explained_e" (of e),
        "tokens": (n,) str, "token_ids": (n,), "seq_ids": (n,), "freq_bin": (n,), "bin_names": (3,),
        "index": (n,) indices into the probe set's content tokens}."""
        return self._one_array("projection", run, step, probe_hash)

    def notes(self, probe_hash: str | None = None) -> pd.DataFrame:
        """Notes (run, step, family, note) recorded while measuring, e.g. skipped head metrics."""
        return self._select("notes", ["run", "step", "family", "note"], {"probe_hash": self._hash(probe_hash)},
                            order=["run", "step"])

    def onsets(self, probe_hash: str | None = None, *, run: str | Sequence[str] | None = None,
               metric: str | Sequence[str] | None = None) -> pd.DataFrame:
        """Onset rows (run, metric, layer, variant, step, tokens_seen, change) of one probe set; step None where
        the curve has no onset."""
        return self._select("onsets", ["run", "metric", "layer", "variant", "step", "tokens_seen", "change"],
                            {"probe_hash": self._hash(probe_hash), "run": run, "metric": metric},
                            order=["run", "metric", "variant", "layer"])

    def phases(self, probe_hash: str | None = None, *, run: str | Sequence[str] | None = None,
               metric: str | Sequence[str] | None = None) -> pd.DataFrame:
        """Phase rows (run, metric, layer, variant, phase, start_step, end_step, direction, size) of one probe set."""
        return self._select("phases", ["run", "metric", "layer", "variant", "phase", "start_step", "end_step",
                                       "direction", "size"],
                            {"probe_hash": self._hash(probe_hash), "run": run, "metric": metric},
                            order=["run", "metric", "variant", "layer", "phase"])

    def completed(self, probe_hash: str | None = None) -> pd.DataFrame:
        """Finished (run, step, family) units with params, finish time and seconds spent."""
        return self._select("completed", ["run", "step", "family", "params", "finished", "seconds"],
                            {"probe_hash": self._hash(probe_hash)}, order=["run", "step", "family"])


class _Tx:
    """`BEGIN IMMEDIATE` … `COMMIT`, or `ROLLBACK` on any exception (KeyboardInterrupt included)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    v = float(value)
    return v if np.isfinite(v) else None


def _insert(table: str, verb: str = "INSERT") -> str:
    """`verb INTO table (columns) VALUES (?, …)` with the columns named: an upgraded table may hold a column added by
    a migration at its end rather than where `SCHEMA` lists it."""
    cols = TABLES[table]
    return f"{verb} INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


def _variants(text: object) -> tuple[str, ...]:
    try:
        value = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


def remove_stale_tmp(root: Path) -> None:
    """Delete temporary `.npz` files left by a killed writer (never a committed file): `common.files.save_npz`'s
    `.NAME.PID.RANDOM.tmp.npz`, and `.NAME.PID.tmp` of earlier versions."""
    arrays = root / "arrays"
    if arrays.is_dir():
        for pattern in (".*.tmp", ".*.tmp.npz"):
            for tmp in arrays.rglob(pattern):
                try:
                    if time.time() - tmp.stat().st_mtime > 60:
                        tmp.unlink()
                except OSError:
                    pass
