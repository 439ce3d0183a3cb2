"""The app against damaged results stores and run directories, table-driven: each case damages one piece beside a good
store and good runs, then every page is drawn (the damaged store selected in the sidebar where it is offered).

Each case asserts: no exception and no "Could not draw" error on any page; the good runs are still listed and the good
store still draws charts; the page says, naming the damaged file, what cannot be read (where the piece is unreadable);
where the damaged piece feeds only a secondary element, the damaged store's page still draws its other charts
(`draws`); and every file that existed before is byte-identical afterwards (the app only reads; SQLite's own -wal/-shm
files of a store in WAL mode may appear).
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from dynamics.results import store as dstore
from tests.app.conftest import PAGES
from tests.app.helpers import charts, texts
from tests.app.synthetic import PROBE_HASH, write_downstream

GOOD_RUNS = ("mlm-syn", "taco-syn")


@dataclass(frozen=True)
class Case:
    damage: Callable[[Path], Path]  # damages a piece under the root; returns the damaged path
    says: str | None  # what the page must say about it (with the damaged file's folder), or None: nothing to say
    store: bool = True  # a store case: the damaged store is selected in the sidebar when offered
    draws: tuple[str, str] | None = None  # (page, a chart title fragment) the damaged store's page still draws


def _bad_store(root: Path) -> Path:
    """A copy of the good store (database and arrays) at root/bad/dynamics; returns its database."""
    shutil.copytree(root / "dynamics", root / "bad" / "dynamics")
    return root / "bad" / "dynamics" / "results.sqlite"


def _sql(script: str) -> Callable[[Path], Path]:
    def damage(root: Path) -> Path:
        db = _bad_store(root)
        with sqlite3.connect(db) as conn:
            conn.executescript(script)
        conn.close()
        return db
    return damage


def _bytes(edit: Callable[[bytes], bytes]) -> Callable[[Path], Path]:
    def damage(root: Path) -> Path:
        db = _bad_store(root)
        db.write_bytes(edit(db.read_bytes()))
        return db
    return damage


def _replace_store(make: Callable[[Path], None]) -> Callable[[Path], Path]:
    def damage(root: Path) -> Path:
        db = root / "bad" / "dynamics" / "results.sqlite"
        db.parent.mkdir(parents=True)
        make(db)
        return db
    return damage


def _foreign(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.executescript("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'a');")
    conn.close()


def _corrupt_middle(data: bytes) -> bytes:
    page = 4096
    mid = (len(data) // page // 2) * page
    return data[:mid] + b"\xff" * (2 * page) + data[mid + 2 * page:]


def _wal_garbage(root: Path) -> Path:
    db = _bad_store(root)
    Path(str(db) + "-wal").write_bytes(b"not a write-ahead log " * 100)
    return db


def _array_file(edit: Callable[[Path], None]) -> Callable[[Path], Path]:
    def damage(root: Path) -> Path:
        db = _bad_store(root)
        files = sorted((db.parent / "arrays").rglob("*.npz"))
        for f in files:
            edit(f)
        return db
    return damage


def _bad_run(edit: Callable[[Path], None]) -> Callable[[Path], Path]:
    """A copy of the run directory mlm-syn as root/broken-run, then `edit(run_dir)`."""
    def damage(root: Path) -> Path:
        run = root / "broken-run"
        shutil.copytree(root / "mlm-syn", run)
        edit(run)
        return run
    return damage


def _write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        path = run / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return edit


def _append_log(text: bytes) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        with (run / "log.jsonl").open("ab") as f:
            f.write(text)
    return edit


def _log_as_folder(run: Path) -> None:
    (run / "log.jsonl").unlink()
    (run / "log.jsonl").mkdir()


def _snapshots_as_file(run: Path) -> None:
    shutil.rmtree(run / "snapshots")
    (run / "snapshots").write_text("not a folder")


def _npz(kind: str, edit: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> Callable[[Path], Path]:
    """Rewrite every `kind` array file of the bad store with `edit(arrays)`; returns the database."""
    def damage(root: Path) -> Path:
        db = _bad_store(root)
        with sqlite3.connect(db) as conn:
            files = [r[0] for r in conn.execute("SELECT file FROM arrays WHERE kind = ?", (kind,))]
        conn.close()
        assert files, kind
        for rel in files:
            path = db.parent / rel
            with np.load(path) as data:
                arrays = {k: data[k] for k in data.files}
            np.savez(path, **edit(arrays))
        return db
    return damage


def _without(key: str) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    return lambda arrays: {k: v for k, v in arrays.items() if k != key}


def _with(key: str, value: np.ndarray) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    return lambda arrays: {**arrays, key: value}


def _acquisition(arrays: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Word acquisition of five word types for each run of the bad store, written as the probe writes it; `arrays`
    replaces parts of mlm-syn's (taco-syn's stays whole)."""
    steps = np.array([1, 2, 4, 8, 16], dtype=np.int64)
    aoa = np.log10([2.0, 3.0, 5.0, 8.0, 12.0])
    whole = {"word_types": np.arange(5, dtype=np.int64), "words": np.array(["the", "of", "and", "cat", "sat"]),
             "counts": np.full(5, 4, dtype=np.int64), "status": np.zeros(5, dtype=np.int64),
             "frequency": np.array([900, 500, 300, 40, 10], dtype=np.int64), "aoa": aoa,
             "hi": np.full(5, 9.0), "lo": np.full(5, 2.0), "k": np.full(5, 4.0), "x0": aoa,
             "steps": steps, "tokens_seen": steps * 256, "surprisal": np.linspace(9, 2, 25).reshape(5, 5),
             "vocab": np.array(8000)}
    return whole if arrays is None else {**whole, **arrays}


def _acquisition_store(edit: dict[str, np.ndarray | None]) -> Callable[[Path], Path]:
    """The bad store with word acquisition for both runs, mlm-syn's array with `edit` applied (None drops a key)."""
    def damage(root: Path) -> Path:
        db = _bad_store(root)
        with dstore.open(db.parent) as s:
            for run in GOOD_RUNS:
                arrays = _acquisition(None)
                if run == "mlm-syn":
                    arrays = {k: v for k, v in {**arrays, **edit}.items() if v is not None}
                s.write_run_family(run=run, family="acquisition", probe_hash=PROBE_HASH, params="synthetic",
                                   step_rows={}, arrays={"word_acquisition": arrays})
        return db
    return damage


def _downstream_then(script: str) -> Callable[[Path], Path]:
    """The bad store with downstream scores (`tests.app.synthetic.write_downstream`), then `script`."""
    def damage(root: Path) -> Path:
        db = _bad_store(root)
        write_downstream(db.parent)
        with sqlite3.connect(db) as conn:
            conn.executescript(script)
        conn.close()
        return db
    return damage


ONE_PER_RUN = "rowid IN (SELECT min(rowid) FROM {table} GROUP BY run)"  # one row per run (unique keys stay unique)
TEXT = "hold text where numbers belong"
DAMAGED = "is damaged"
CANNOT = "cannot"
CASES: dict[str, Case] = {
    # results stores
    "store-not-sqlite": Case(_replace_store(lambda db: db.write_bytes(b"garbage, not SQLite " * 200)), CANNOT),
    "store-empty-file": Case(_replace_store(lambda db: db.write_bytes(b"")), "not a results store"),
    "store-truncated": Case(_bytes(lambda d: d[: len(d) // 2]), CANNOT),
    "store-first-page-only": Case(_bytes(lambda d: d[:4096]), CANNOT),
    "store-corrupt-pages": Case(_bytes(_corrupt_middle), CANNOT),
    "store-foreign-sqlite": Case(_replace_store(_foreign), "not a results store"),
    "store-is-a-folder": Case(_replace_store(lambda db: db.mkdir()), None),  # not a store: not offered
    "store-garbage-wal": Case(_wal_garbage, None),
    "store-no-metrics-table": Case(_sql("DROP TABLE metrics;"), "no `metrics` table"),
    "store-no-value-column": Case(_sql("ALTER TABLE metrics DROP COLUMN value;"), "lacks `value`"),
    "store-no-runs-table": Case(_sql("DROP TABLE runs;"), "no `runs` table"),
    "store-no-snapshots-table": Case(_sql("DROP TABLE snapshots;"), "no `snapshots` table"),
    "store-no-meta": Case(_sql("DROP TABLE meta;"), "not a results store"),
    "store-text-values": Case(_sql("UPDATE metrics SET value = 'n/a' WHERE rowid % 3 = 0;"), "not numbers"),
    "store-infinite-values": Case(_sql("UPDATE metrics SET value = 1e999 WHERE rowid % 5 = 0;"), "not finite"),
    "store-unknown-metrics": Case(_sql("UPDATE metrics SET metric = 'x_' || metric WHERE rowid % 2 = 0;"), None),
    "store-empty-schema": Case(_sql("DELETE FROM metrics; DELETE FROM snapshots; DELETE FROM runs; "
                                    "DELETE FROM probe_sets; DELETE FROM arrays;"), None),
    "store-array-files-truncated": Case(_array_file(lambda f: f.write_bytes(f.read_bytes()[:100])), CANNOT),
    "store-array-files-missing": Case(_array_file(lambda f: f.unlink()), CANNOT),
    "store-future-schema": Case(_sql("UPDATE meta SET value = '999' WHERE key = 'schema_version';"), "newer"),
    # run directories
    "run-json-not-json": Case(_bad_run(_write("run.json", "{not json")), "run.json", store=False),
    "run-json-a-list": Case(_bad_run(_write("run.json", "[1, 2, 3]")), "run.json", store=False),
    "run-json-empty": Case(_bad_run(_write("run.json", b"")), "run.json", store=False),
    "run-json-binary": Case(_bad_run(_write("run.json", b"\xff\xfe\x00garbage")), "run.json", store=False),
    "log-binary-line": Case(_bad_run(_append_log(b"\xff\xfe\x00\x01 binary\n")), None, store=False),
    "log-non-finite": Case(_bad_run(_append_log(b'{"step": 99, "loss": NaN, "lr": 1e999}\n')), None, store=False),
    "log-wrong-types": Case(_bad_run(_append_log(b'{"step": "late", "loss": "high"}\n[1, 2]\n"text"\n')), None,
                            store=False),
    "log-is-a-folder": Case(_bad_run(_log_as_folder), None, store=False),
    "snapshots-is-a-file": Case(_bad_run(_snapshots_as_file), None, store=False),
    # arrays that lack the keys or shapes their kind has: the element that reads them is left out, naming the file
    "array-cka-steps-without-steps": Case(_npz("cka_steps", _without("steps")), "lacks steps",
                                          draws=("cka", "layer × layer")),
    "array-cka-steps-wrong-shape": Case(_npz("cka_steps", _with("debiased", np.zeros(3))), DAMAGED,
                                        draws=("cka", "layer × layer")),
    "array-cka-steps-text-tokens": Case(_npz("cka_steps", lambda a: {**a, "tokens_seen": np.array(
        ["many"] * len(a["steps"]))}), DAMAGED, draws=("cka", "layer × layer")),
    "array-cka-layers-flat": Case(_npz("cka_layers", _with("debiased", np.zeros(3))), DAMAGED,
                                  draws=("cka", "step × step")),
    "array-projection-flat": Case(_npz("projection", _with("xy", np.zeros((3, 4)))), DAMAGED),
    "array-projection-text-bins": Case(_npz("projection", lambda a: {**a, "freq_bin": np.array(
        ["x"] * a["xy"].shape[1])}), DAMAGED),
    "array-acquisition-without-surprisal": Case(_acquisition_store({"surprisal": None}), DAMAGED,
                                                draws=("acquisition", "Age of acquisition")),
    "array-acquisition-wrong-lengths": Case(_acquisition_store({"aoa": np.zeros(2)}), DAMAGED,
                                            draws=("acquisition", "Age of acquisition")),
    # tables with text where numbers belong: those rows are left out, counted, and the rest is drawn
    "table-snapshots-text-step": Case(_sql(f"UPDATE snapshots SET step = 'late' WHERE {ONE_PER_RUN}"
                                           .format(table="snapshots")), TEXT, draws=("anchors", "layer")),
    "table-completed-text-step": Case(_sql(f"UPDATE completed SET step = 'late' WHERE {ONE_PER_RUN}"
                                           .format(table="completed")), TEXT, draws=("anchors", "layer")),
    "table-metrics-text-layer": Case(_sql("UPDATE metrics SET layer = 'top' WHERE rowid IN (SELECT min(rowid) "
                                          "FROM metrics GROUP BY run, metric);"), TEXT, draws=("geometry", "layer")),
    "table-metrics-text-step": Case(_sql("UPDATE metrics SET step = 'late' WHERE rowid IN (SELECT min(rowid) "
                                         "FROM metrics GROUP BY run, metric);"), TEXT, draws=("context", "layer")),
    "table-notes-text-step": Case(_sql(f"INSERT INTO notes VALUES ('mlm-syn', 'late', '{PROBE_HASH}', 'anchors', "
                                       "'a note'); INSERT INTO notes VALUES ('mlm-syn', 2, "
                                       f"'{PROBE_HASH}', 'anchors', 'another note');"), TEXT,
                                  draws=("anchors", "layer")),
    "table-onsets-text": Case(_sql("INSERT INTO onsets SELECT run, metric, layer, variant, probe_hash, 'soon', "
                                   "'many', 'x' FROM (SELECT DISTINCT run, metric, layer, variant, probe_hash "
                                   "FROM metrics);"), TEXT, draws=("anchors", "layer")),
    "table-arrays-text-step": Case(_sql("UPDATE arrays SET step = 'late' WHERE kind = 'cka_layers' AND rowid IN "
                                        "(SELECT min(rowid) FROM arrays WHERE kind = 'cka_layers' GROUP BY run);"),
                                   TEXT, draws=("cka", "step × step")),
    "table-probe-sets-text": Case(_sql("UPDATE probe_sets SET n_tokens = 'many', n_blocks = 'few';"), TEXT,
                                  draws=("geometry", "layer")),
    "table-downstream-text": Case(_downstream_then("UPDATE metrics SET layer = 'x' WHERE rowid IN (SELECT "
                                                   "min(rowid) FROM metrics WHERE family = 'downstream' GROUP BY "
                                                   "metric);"), TEXT, draws=("downstream", "")),
    "table-integrity-flag-text-step": Case(_sql("INSERT INTO notes VALUES ('mlm-syn', 'late', 'integrity', "
                                                "'integrity', 'steps 1 and 2 hold identical weights');"),
                                           "hold identical weights"),  # a flag is shown whatever its step says
    "table-runs-text-name": Case(_sql("UPDATE runs SET name = 7 WHERE rowid = 1;"), None),
}


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _check(at: object, where: str) -> None:
    assert not at.exception, (where, [e.value for e in at.exception])  # type: ignore[attr-defined]
    assert not at.error, (where, [e.value for e in at.error])  # type: ignore[attr-defined]


def _all_text(at: object) -> str:
    text = texts(at)
    for frame in at.dataframe:  # type: ignore[attr-defined]
        text += "\n" + frame.value.to_string()
    return text


@pytest.mark.parametrize("name", list(CASES))
def test_app_reads_around_a_damaged_piece(make_app, synthetic_root: Path, tmp_path: Path, name: str) -> None:
    case = CASES[name]
    root = tmp_path / "runs"
    shutil.copytree(synthetic_root, root)
    damaged = case.damage(root)
    before = _hashes(root)
    at = make_app(root)
    _check(at, "overview")
    listed = set(at.dataframe[0].value["run"])
    assert set(GOOD_RUNS) <= listed, listed
    said = _all_text(at)
    drawn = False
    for page in PAGES[1:]:
        at.switch_page(f"views/{page}.py").run()
        _check(at, page)
        if page == "geometry":
            assert charts(at), "the good store must still draw its charts"
        if case.store:
            box = at.sidebar.selectbox(key="ctx:store")
            if any(o.startswith(f"{damaged.parent.resolve()} (") for o in box.options):
                box.set_value(str(damaged.resolve())).run()
                _check(at, f"{page} on the damaged store")
                said += "\n" + _all_text(at)
                if case.draws is not None and case.draws[0] == page:
                    titles = [title for title, _, _ in charts(at)]
                    assert any(case.draws[1] in t for t in titles), (page, case.draws, titles)
                    drawn = True
                at.sidebar.selectbox(key="ctx:store").set_value(str((root / "dynamics" / "results.sqlite").resolve()))
                at.run()
        said += "\n" + _all_text(at)
    assert case.draws is None or drawn, f"the damaged store was not offered on {case.draws[0]}"
    if case.says is not None:  # one message says what is wrong and names the damaged store or run
        name = damaged.name if not case.store else f"{damaged.parent.parent.name}/{damaged.parent.name}"
        lines = [line for line in said.splitlines() if case.says in line]
        assert any(name in line for line in lines), (case.says, name, lines or said[-3000:])
    after = _hashes(root)
    assert {f: after.get(f) for f in before} == before, "the app changed a file"
