"""The results store's schema over time: stores of every older version (built here by raw SQL, as the probe of
that version left them) are migrated in place when opened for writing, in one transaction, and read through a
compatibility view when opened read-only; a newer store and someone else's database are refused; definitions
round-trip."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dynamics.errors import StoreError
from dynamics.results import store as st

REPO = Path(__file__).resolve().parents[2]
H = "b" * 64

# Version 1 as the probe wrote it (meta.schema_version = 1), without the onsets table that came later under the
# same number; typed out here, not taken from the store module.
V1_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE runs (name TEXT PRIMARY KEY, path TEXT NOT NULL, kind TEXT, objective TEXT, meta TEXT, updated REAL);
CREATE TABLE snapshots (run TEXT NOT NULL, step INTEGER NOT NULL, tokens_seen INTEGER, path TEXT, info TEXT,
    PRIMARY KEY (run, step));
CREATE TABLE probe_sets (hash TEXT PRIMARY KEY, source TEXT, n_blocks INTEGER, block_size INTEGER, n_tokens INTEGER,
    n_masked INTEGER, n_word_types INTEGER, freq_source TEXT, tokenizer_hash TEXT, file TEXT, notes TEXT,
    created REAL, used REAL);
CREATE TABLE metrics (run TEXT NOT NULL, step INTEGER NOT NULL, tokens_seen INTEGER, layer INTEGER NOT NULL,
    metric TEXT NOT NULL, variant TEXT NOT NULL, value REAL, family TEXT NOT NULL, probe_hash TEXT NOT NULL,
    UNIQUE (probe_hash, run, step, layer, metric, variant));
CREATE INDEX metrics_by_family ON metrics (probe_hash, run, step, family);
CREATE INDEX metrics_by_metric ON metrics (probe_hash, metric);
CREATE TABLE arrays (run TEXT NOT NULL, step INTEGER NOT NULL, kind TEXT NOT NULL, probe_hash TEXT NOT NULL,
    family TEXT NOT NULL, file TEXT NOT NULL, meta TEXT, PRIMARY KEY (probe_hash, run, step, kind));
CREATE TABLE completed (run TEXT NOT NULL, step INTEGER NOT NULL, family TEXT NOT NULL, probe_hash TEXT NOT NULL,
    params TEXT NOT NULL, finished REAL, seconds REAL, PRIMARY KEY (probe_hash, run, step, family));
CREATE TABLE notes (run TEXT NOT NULL, step INTEGER NOT NULL, probe_hash TEXT NOT NULL, family TEXT NOT NULL,
    note TEXT NOT NULL, UNIQUE (probe_hash, run, step, family, note));
"""
V1_ROWS = f"""
INSERT INTO runs VALUES ('r', '/runs/r', 'run', 'mlm', '{{"preset": "mini"}}', 1.0);
INSERT INTO snapshots VALUES ('r', 0, 0, '/runs/r/snapshots/step-0000000', '{{}}'),
                             ('r', 10, 100, '/runs/r/snapshots/step-0000010', '{{}}');
INSERT INTO probe_sets VALUES ('{H}', 'test', 2, 8, 12, 2, 1, 'probe set', 't', 'arrays/probe.npz', '[]', 1.0, 2.0);
INSERT INTO metrics VALUES ('r', 0, 0, 0, 'anisotropy', 'all', 0.5, 'geometry', '{H}'),
                           ('r', 10, 100, 0, 'anisotropy', 'all', 0.25, 'geometry', '{H}'),
                           ('r', 10, 100, 1, 'ctx_gap_all', 'all', NULL, 'context', '{H}'),
                           ('r', 10, 100, -1, 'sst2/score', 'linear/mean', 81.5, 'downstream', 'downstream');
INSERT INTO completed VALUES ('r', 0, 'geometry', '{H}', 'p', 1.0, 0.1), ('r', 10, 'geometry', '{H}', 'p', 2.0, 0.1);
INSERT INTO notes VALUES ('r', 10, '{H}', 'context', 'a note');
"""
# What an earlier probe (still version 1) had not written: the tables, the metrics column and the indexes that the
# readers tolerated query by query before there were migrations.
EARLIER = ("DROP TABLE arrays; DROP TABLE notes; DROP TABLE completed; DROP INDEX metrics_by_family; "
           "DROP INDEX metrics_by_metric; ALTER TABLE metrics DROP COLUMN family;")
ONSETS = ("CREATE TABLE onsets (run TEXT NOT NULL, metric TEXT NOT NULL, layer INTEGER NOT NULL, variant TEXT NOT NULL, "
          "probe_hash TEXT NOT NULL, step INTEGER, tokens_seen INTEGER, change REAL, "
          "PRIMARY KEY (probe_hash, run, metric, layer, variant));")
# name → (extra SQL after the version-1 tables and rows, the gaps in words)
OLD_STORES = {
    "v1-with-onsets": (ONSETS, []),
    "v1-before-onsets": ("", ["no `onsets` table"]),
    "v1-earlier-probe": (EARLIER, ["no `arrays` table", "no `completed` table", "no `notes` table",
                                   "no `onsets` table", "table `metrics` lacks `family`"]),
}


def _old_store(folder: Path, extra: str) -> Path:
    folder.mkdir(parents=True)
    db = folder / st.DB_NAME
    conn = sqlite3.connect(db)
    conn.executescript(V1_TABLES + V1_ROWS + extra)
    conn.close()
    return db


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _metric_rows(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute("SELECT run, step, tokens_seen, layer, metric, variant, value, probe_hash FROM main.metrics "
                        "ORDER BY run, step, layer, metric").fetchall()


def _fresh_schema(tmp_path: Path) -> dict[str, list[tuple[str, str]]]:
    with st.open(tmp_path / "fresh") as s:
        return {t: sorted((r[1], r[2]) for r in s.conn.execute(f"PRAGMA table_info({t})")) for t in st.TABLES}


@pytest.mark.parametrize("name", OLD_STORES)
def test_an_older_store_is_migrated_when_opened_for_writing(tmp_path: Path, name: str) -> None:
    extra, lacked = OLD_STORES[name]
    db = _old_store(tmp_path / name, extra)
    with sqlite3.connect(db) as conn:
        before = _metric_rows(conn)
    assert len(before) == 4
    with st.open(db) as s:
        assert s.file_version == 1 and s.schema_version() == st.SCHEMA_VERSION
        columns = {t: sorted((r[1], r[2]) for r in s.conn.execute(f"PRAGMA table_info({t})")) for t in st.TABLES}
        assert columns == _fresh_schema(tmp_path)  # every table and column, with its type, as a new store has them
        assert all(s.has_index(i) for i in st.INDEXES)
        assert _metric_rows(s.conn) == before  # the rows are kept as they were
        assert s.upgraded() is not None and s.upgraded()["from"] == 1 and s.upgraded()["lacked"] == lacked
        families = s.metrics()["family"].tolist()
        assert families == ([None] * 3 if "family" in str(lacked) else ["geometry", "geometry", "context"])
        assert s.metrics(probe_hash="downstream")["family"].tolist() == ["downstream"]  # named by its probe hash
        # a downstream unit written again replaces its old row (no collision with a row lacking its family)
        s.write_family(run="r", step=10, tokens_seen=100, family="downstream", probe_hash="downstream", params="u",
                       result=st.FamilyResult([(-1, "sst2/score", "linear/mean", 82.0)], {}, []))
        assert s.metrics(probe_hash="downstream")["value"].tolist() == [82.0]
        assert s.definitions().empty
        # the upgraded store takes new results like a new one
        s.write_family(run="r", step=20, tokens_seen=200, family="geometry", probe_hash=H, params="p",
                       result=st.FamilyResult([(0, "anisotropy", "all", 0.125)], {"projection": {"xy": np.ones(2)}},
                                              ["n"]))
        new = s.metrics("anisotropy", layer=0, run="r")
        assert new["value"].tolist()[-1] == 0.125 and new["family"].tolist()[-1] == "geometry"  # in its column
        assert s.notes()["note"].tolist()[-1] == "n" and ("r", 20, "geometry") in s.completed_params(H)
    with st.open(db) as again:  # a second open finds it current: nothing more happens
        assert again.file_version == st.SCHEMA_VERSION and again.upgraded()["lacked"] == lacked


@pytest.mark.parametrize("name", OLD_STORES)
def test_an_older_store_is_read_read_only_through_a_compatibility_view(tmp_path: Path, name: str) -> None:
    extra, lacked = OLD_STORES[name]
    db = _old_store(tmp_path / name, extra)
    digest = _sha(db)
    with st.open(db, readonly=True) as ro:
        assert ro.file_version == 1 and ro.gaps.lines(upto=1) == lacked
        assert "definitions" in ro.gaps.tables and ro.definitions().empty  # new in 2: not a gap of version 1
        assert {t: tuple(ro.columns(t)) for t in st.TABLES} == st.TABLES
        df = ro.metrics("anisotropy", run="r", layer=0)
        assert df["value"].tolist() == [0.5, 0.25] and df["step"].tolist() == [0, 10]
        assert set(ro.metric_list()["metric"]) == {"anisotropy", "ctx_gap_all"}
        assert ro.onsets().empty and ro.arrays().empty and ro.cka_steps("r") is None
        assert len(ro.notes()) == (0 if "notes" in str(lacked) else 1)
        assert ro.latest_probe_hash() == H and ro.runs()["objective"].tolist() == ["mlm"]
        assert ro.snapshots("r")["tokens_seen"].tolist() == [0, 100]
    assert _sha(db) == digest and sorted(p.name for p in db.parent.iterdir()) == [st.DB_NAME]


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = _old_store(tmp_path / "old", EARLIER)
    digest = _sha(db)
    real = st.MIGRATIONS[0].apply

    def half_then_fail(conn: sqlite3.Connection) -> None:
        real(conn)  # every table, column and index created, then
        conn.execute("INSERT INTO definitions (name) VALUES ('x')")
        raise RuntimeError("disk full")

    monkeypatch.setattr(st, "MIGRATIONS", (st.Migration(st.SCHEMA_VERSION, "fails", half_then_fail),))
    with pytest.raises(RuntimeError, match="disk full"):
        st.open(db)
    assert _sha(db) == digest
    assert sorted(p.name for p in db.parent.iterdir() if p.name.endswith("-journal")) == []
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
    monkeypatch.undo()
    with st.open(db) as s:  # the real migration then succeeds
        assert s.schema_version() == st.SCHEMA_VERSION and s.upgraded()["from"] == 1


def test_a_newer_store_is_refused_untouched(tmp_path: Path) -> None:
    with st.open(tmp_path / "new") as s:
        s.conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(st.SCHEMA_VERSION + 1),))
        s.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db = tmp_path / "new" / st.DB_NAME
    digest = _sha(db)
    for attempt in (lambda: st.check_ours(db), lambda: st.open(db), lambda: st.open(db, readonly=True)):
        with pytest.raises(StoreError, match=r"newer taco-dynamics \(store schema 4; this one reads up to 3\): "
                                             r"update taco-dynamics") as exc:
            attempt()
        assert "\n" not in str(exc.value)
    assert _sha(db) == digest


def test_a_database_that_is_not_ours_is_still_refused(tmp_path: Path) -> None:
    db = tmp_path / "foreign" / st.DB_NAME
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE metrics (run TEXT, step INTEGER)")  # our table name, but no schema version
    digest = _sha(db)
    with pytest.raises(StoreError, match="not a taco-dynamics results store"):
        st.open(db)
    with pytest.raises(StoreError, match="not a results store"):
        st.open(db, readonly=True)
    assert _sha(db) == digest
    empty = tmp_path / "empty" / st.DB_NAME
    empty.parent.mkdir()
    empty.write_bytes(b"")
    with pytest.raises(StoreError, match="an empty database"):
        st.open(empty, readonly=True)


def _metric(name: str, family: str, **extra: object) -> SimpleNamespace:
    return SimpleNamespace(name=name, family=family, scope=extra.pop("scope", "layer"), layers="0…L",
                           variants=("all", "frequent"), label=name.title(), unit="cosine", definition=f"{name}.",
                           pointer=f"dynamics.metrics.x.{name}", **extra)


def test_definitions_round_trip(tmp_path: Path) -> None:
    with st.open(tmp_path / "d") as s:
        s.write_definitions([_metric("zeta", "drift"), _metric("alpha", "cka_steps", scope="series"),
                             _metric("mid", "geometry", page="cka")])
        s.write_definitions([_metric("alpha", "cka_steps", scope="series")])  # replaces alpha, keeps the others
    with st.open(tmp_path / "d", readonly=True) as ro:
        df = ro.definitions()
    assert df["name"].tolist() == ["alpha", "zeta", "mid"]  # by position, then name
    zeta = df.set_index("name").loc["zeta"]
    assert (zeta["family"], zeta["scope"], zeta["layers"], zeta["variants"], zeta["label"], zeta["unit"],
            zeta["definition"], zeta["pointer"]) == ("drift", "layer", "0…L", ("all", "frequent"), "Zeta", "cosine",
                                                     "zeta.", "dynamics.metrics.x.zeta")
    assert df.set_index("name")["page"].to_dict() == {"alpha": "cka", "zeta": "anchors", "mid": "cka"}


def test_definitions_of_the_registry(tmp_path: Path) -> None:
    from dynamics.metrics import registry

    reg = registry.load()
    with st.open(tmp_path / "d") as s:
        s.write_definitions(reg.values())
        df = s.definitions()
    assert df["name"].tolist() == list(reg)
    for row in df.itertuples(index=False):
        m = reg[row.name]
        assert (row.family, row.scope, row.layers, row.variants, row.label, row.unit, row.definition, row.pointer) == (
            m.family, m.scope, m.layers, m.variants, m.label, m.unit, m.definition, m.pointer)
        assert row.page in set(registry.PAGES)


def test_definitions_give_an_upgraded_store_its_families(tmp_path: Path) -> None:
    db = _old_store(tmp_path / "old", EARLIER)
    with st.open(db) as s:
        assert s.metrics()["family"].isna().all()
        s.write_definitions([_metric("anisotropy", "geometry")])
        families = s.metrics().set_index("metric")["family"]
        assert families["anisotropy"].tolist() == ["geometry", "geometry"]
        assert families.isna()["ctx_gap_all"]  # no definition: no family


def test_the_store_module_imports_no_metric_module() -> None:
    code = "import sys, dynamics.results.store; print(sorted(m for m in sys.modules if m.startswith('dynamics.metrics')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
