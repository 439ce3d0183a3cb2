"""The results store: tidy rows, arrays, replacement, atomicity, completion bookkeeping, read-only access."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from dynamics.results import store as st
from dynamics.results.store import FamilyResult

H = "a" * 64


def _store(tmp_path: Path) -> st.Store:
    s = st.open(tmp_path / "dyn")
    s.add_probe_set(hash=H, source="test", n_blocks=2, block_size=8, n_tokens=12, n_masked=2, n_word_types=1,
                    freq_source="probe set", tokenizer_hash="t", file="arrays/probe.npz", notes=[])
    return s


def _write(s: st.Store, step: int, value: float, family: str = "geometry", params: str = "p1") -> None:
    s.write_family(run="r", step=step, tokens_seen=step * 10, family=family, probe_hash=H, params=params,
                   result=FamilyResult([(0, "anisotropy", "all", value), (1, "anisotropy", "all", float("nan"))],
                                       {"projection": {"xy": np.full((2, 3, 2), value)}}, ["a note"]))


def test_open_resolves_folders(tmp_path: Path) -> None:
    s = st.open(tmp_path / "new")
    assert s.path == tmp_path / "new" / "results.sqlite" and s.path.is_file()
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()
    run = tmp_path / "run"
    st.open(run / "dynamics").close()
    assert st.resolve(run) == run / "dynamics" / "results.sqlite"
    assert st.resolve(tmp_path / "x.sqlite") == tmp_path / "x.sqlite"


def test_write_and_query(tmp_path: Path) -> None:
    s = _store(tmp_path)
    _write(s, 0, 0.5)
    _write(s, 10, 0.25)
    df = s.metrics("anisotropy", run="r", layer=0)
    assert list(df["step"]) == [0, 10] and list(df["value"]) == [0.5, 0.25] and list(df["tokens_seen"]) == [0, 100]
    assert s.metrics("anisotropy", layer=1)["value"].isna().all()  # NaN is stored as NULL
    proj = s.projection("r", 10)
    assert proj is not None and proj["xy"].shape == (2, 3, 2) and proj["xy"][0, 0, 0] == 0.25
    assert s.latest_probe_hash() == H
    assert list(s.notes()["note"]) == ["a note", "a note"]
    assert s.completed_params(H) == {("r", 0, "geometry"): "p1", ("r", 10, "geometry"): "p1"}
    assert set(s.metric_names()["metric"]) == {"anisotropy"}
    cat = s.metric_list()
    assert list(cat.columns) == ["family", "metric", "variant"]
    assert cat.to_dict("records") == s.metric_names()[["family", "metric", "variant"]].to_dict("records")
    assert s.metric_list("no-such-hash").empty


def test_rewrite_replaces_rows_and_files(tmp_path: Path) -> None:
    s = _store(tmp_path)
    _write(s, 0, 0.5)
    old_file = s.arrays("projection")["file"].iloc[0]
    _write(s, 0, 0.75, params="p2")
    df = s.metrics("anisotropy", layer=0)
    assert list(df["value"]) == [0.75]
    new_file = s.arrays("projection")["file"].iloc[0]
    assert new_file != old_file and not (s.root / old_file).exists() and (s.root / new_file).exists()
    assert s.completed_params(H)[("r", 0, "geometry")] == "p2"


def test_failed_write_leaves_the_old_result(tmp_path: Path) -> None:
    s = _store(tmp_path)
    _write(s, 0, 0.5)
    files_before = sorted(p.name for p in (s.root / "arrays").rglob("*.npz"))
    bad = FamilyResult([(0, "anisotropy", "all", 0.9), (1, "anisotropy", "all", "not a number")],  # type: ignore[list-item]
                       {"projection": {"xy": np.zeros(3)}}, [])
    with pytest.raises(ValueError):
        s.write_family(run="r", step=0, tokens_seen=0, family="geometry", probe_hash=H, params="p9", result=bad)
    assert list(s.metrics("anisotropy", layer=0)["value"]) == [0.5]
    assert s.completed_params(H)[("r", 0, "geometry")] == "p1"
    assert sorted(p.name for p in (s.root / "arrays").rglob("*.npz")) == files_before


def test_run_level_family(tmp_path: Path) -> None:
    s = _store(tmp_path)
    arrays = {"cka_steps": {"steps": np.array([0, 10]), "debiased": np.eye(2)[None], "biased": np.eye(2)[None]}}
    rows = {0: (0, [(0, "cka_final", "all", 0.3)]), 10: (100, [(0, "cka_final", "all", 1.0)])}
    for _ in range(2):  # a second write replaces the first
        s.write_run_family(run="r", family="cka_steps", probe_hash=H, params="s", step_rows=rows, arrays=arrays)
    assert list(s.metrics("cka_final")["value"]) == [0.3, 1.0]
    cka = s.cka_steps("r")
    assert cka is not None and list(cka["steps"]) == [0, 10]
    assert len(list((s.root / "arrays").rglob("cka_steps-*.npz"))) == 1
    assert s.completed_params(H)[("r", -1, "cka_steps")] == "s"


def test_readonly(tmp_path: Path) -> None:
    s = _store(tmp_path)
    _write(s, 0, 0.5)
    s.close()
    ro = st.open(tmp_path / "dyn", readonly=True)
    assert len(ro.metrics()) == 2
    with pytest.raises(sqlite3.OperationalError):
        ro.conn.execute("DELETE FROM metrics")
    with pytest.raises(FileNotFoundError):
        st.open(tmp_path / "nothing", readonly=True)


# ------------------------------------------------------------------------------------------------ reading

def _readonly_copy(tmp_path: Path, script: str) -> st.Store:
    """A store with rows of two runs and two metrics, changed by the SQL `script`, opened read-only."""
    s = _store(tmp_path)
    _write(s, 0, 0.5)
    _write(s, 10, 0.25)
    s.write_family(run="q", step=0, tokens_seen=0, family="context", probe_hash=H, params="p",
                   result=FamilyResult([(1, "ctx_gap_all", "all", 0.1), (1, "ctx_gap_window", "w5", 0.2)], {}, []))
    s.upsert_run("r", tmp_path / "r", "run", "mlm", {"preset": "mini"})
    s.upsert_snapshots([("r", 0, 0, str(tmp_path / "r" / "step-0"), {}), ("r", 10, 100, "x", {})])
    s.conn.executescript("PRAGMA wal_checkpoint(TRUNCATE);" + script)
    s.close()
    return st.open(tmp_path / "dyn", readonly=True)


def test_tables_lists_the_schema(tmp_path: Path) -> None:
    s = _store(tmp_path)
    assert {t: tuple(s.columns(t)) for t in st.TABLES} == st.TABLES
    assert all(s.has_index(i) for i in st.INDEXES) and not s.has_index("no_such_index")
    assert s.schema_version() == st.SCHEMA_VERSION and s.gaps == st.Gaps() and s.upgraded() is None
    with pytest.raises(ValueError, match="not a table"):
        s.columns("metrics; DROP TABLE runs")


def test_queries_filter_by_any_of_several_values(tmp_path: Path) -> None:
    ro = _readonly_copy(tmp_path, "")
    assert set(ro.metrics(["anisotropy", "ctx_gap_all"])["metric"]) == {"anisotropy", "ctx_gap_all"}
    assert set(ro.metrics(run=("r", "q"))["run"]) == {"r", "q"} and ro.metrics(run=[]).empty
    assert ro.metrics(family="context", variant="w5")["value"].tolist() == [0.2]
    assert ro.arrays("projection", run="r", step=np.int64(10))["step"].tolist() == [10]  # numpy ints bind
    assert ro.snapshots("r")["step"].tolist() == [0, 10] and ro.runs()["name"].tolist() == ["r"]
    assert list(ro.probe_sets().columns) == list(st.TABLES["probe_sets"])


def test_metric_list_without_the_metric_index(tmp_path: Path) -> None:
    """A store read read-only without `metrics_by_metric` (an older one; read-only, the index cannot be built)
    lists the same catalogue by a scan (it used to fail with "no such index", and the app drew no charts)."""
    with _readonly_copy(tmp_path / "a", "") as ro:
        expected = ro.metric_list().to_dict("records")
    assert expected == [{"family": "context", "metric": "ctx_gap_all", "variant": "all"},
                        {"family": "context", "metric": "ctx_gap_window", "variant": "w5"},
                        {"family": "geometry", "metric": "anisotropy", "variant": "all"}]
    ro = _readonly_copy(tmp_path / "b", "DROP INDEX metrics_by_metric;")
    assert not ro.has_index("metrics_by_metric") and ro.gaps.indexes == ("metrics_by_metric",)
    assert ro.metric_list().to_dict("records") == expected
    assert ro.metric_list("no-such-hash").empty
    assert len(ro.metrics("anisotropy")) == 4
    ro = _readonly_copy(tmp_path / "c", "DROP INDEX metrics_by_metric; DROP INDEX metrics_by_family;")
    assert ro.metric_list().to_dict("records") == expected and len(ro.metrics(family="geometry")) == 4


def test_store_without_probe_sets_reads_every_row(tmp_path: Path) -> None:
    """`probe_hash=None` in a store that records no probe set means every row (an explicit one still filters)."""
    ro = _readonly_copy(tmp_path, "DELETE FROM probe_sets;")
    assert ro.latest_probe_hash() is None and ro.probe_sets().empty
    assert len(ro.metrics()) == 6 and len(ro.metric_list()) == 3 and len(ro.notes()) == 2
    assert ro.metrics(probe_hash="other").empty


def test_remove_stale_tmp_deletes_only_old_temporaries(tmp_path: Path) -> None:
    import os
    import time

    folder = tmp_path / "arrays" / "r"
    folder.mkdir(parents=True)
    names = {"kept.npz": True, ".a.npz.12.1f2e3d4c.tmp.npz": False, ".b.npz.12.tmp": False,
             ".fresh.npz.13.0a0b0c0d.tmp.npz": True}
    for name in names:
        (folder / name).write_bytes(b"x")
        if not names[name] or name == "kept.npz":
            os.utime(folder / name, (time.time() - 600, time.time() - 600))
    st.remove_stale_tmp(tmp_path)
    assert {n: (folder / n).exists() for n in names} == names
