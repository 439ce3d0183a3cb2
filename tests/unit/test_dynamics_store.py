"""The results store: tidy rows, arrays, replacement, atomicity, completion bookkeeping, read-only access."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from dynamics import store as st
from dynamics.store import FamilyResult

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
