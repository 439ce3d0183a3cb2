"""The app against damaged results stores and run directories, table-driven: each case damages one piece beside a good
store and good runs, then every page is drawn (the damaged store selected in the sidebar where it is offered).

Each case asserts: no exception and no "Could not draw" error on any page; the good runs are still listed and the good
store still draws charts; the page says, naming the damaged file, what cannot be read (where the piece is unreadable);
and every file that existed before is byte-identical afterwards (the app only reads; SQLite's own -wal/-shm files
of a store in WAL mode may appear).
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.app.conftest import PAGES
from tests.app.helpers import charts, texts

GOOD_RUNS = ("mlm-syn", "taco-syn")


@dataclass(frozen=True)
class Case:
    damage: Callable[[Path], Path]  # damages a piece under the root; returns the damaged path
    says: str | None  # what the page must say about it (with the damaged file's folder), or None: nothing to say
    store: bool = True  # a store case: the damaged store is selected in the sidebar when offered


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
                at.sidebar.selectbox(key="ctx:store").set_value(str((root / "dynamics" / "results.sqlite").resolve()))
                at.run()
        said += "\n" + _all_text(at)
    if case.says is not None:  # one message says what is wrong and names the damaged store or run
        name = damaged.name if not case.store else f"{damaged.parent.parent.name}/{damaged.parent.name}"
        lines = [line for line in said.splitlines() if case.says in line]
        assert any(name in line for line in lines), (case.says, name, lines or said[-3000:])
    after = _hashes(root)
    assert {f: after.get(f) for f in before} == before, "the app changed a file"
