"""benchmarks/compare_stores.py: metric rows of two results stores matched and compared within a tolerance."""

import importlib.util
import sqlite3
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_stores.py"
spec = importlib.util.spec_from_file_location("compare_stores", SCRIPT)
compare_stores = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_stores)


def _store(folder: Path, rows: list[tuple]) -> Path:
    folder.mkdir()
    con = sqlite3.connect(folder / "results.sqlite")
    con.execute("CREATE TABLE metrics (run TEXT, step INTEGER, tokens_seen INTEGER, layer INTEGER, metric TEXT, "
                "variant TEXT, value REAL, family TEXT, probe_hash TEXT)")
    con.executemany("INSERT INTO metrics VALUES (?, ?, 0, ?, ?, ?, ?, 'f', 'h')", rows)
    con.commit()
    con.close()
    return folder


ROWS = [("r", 0, 1, "anisotropy", "", 0.25), ("r", 0, 2, "anisotropy", "", 0.5), ("r", 4, 1, "tc_loss", "", None),
        ("r", 4, 1, "twonn", "", float("nan"))]


def test_same_rows_within_tolerance_pass_and_a_changed_or_missing_row_fails(tmp_path, capsys):
    a = _store(tmp_path / "a", ROWS)
    near = _store(tmp_path / "near", [r[:5] + (r[5] + 5e-7,) if isinstance(r[5], float) and r[5] == r[5] else r
                                      for r in ROWS])
    assert compare_stores.main([str(a), str(near)]) == 0
    assert "SAME" in capsys.readouterr().out
    far = _store(tmp_path / "far", ROWS[:1] + [("r", 0, 2, "anisotropy", "", 0.5 + 2e-6)] + ROWS[2:])
    assert compare_stores.main([str(a), str(far / "results.sqlite")]) == 1
    out = capsys.readouterr().out
    assert "anisotropy []: 1 row(s) beyond tolerance" in out and "DIFFERENT" in out
    assert compare_stores.main([str(a), str(far), "--atol", "1e-5"]) == 0
    missing = _store(tmp_path / "missing", ROWS[:3])
    assert compare_stores.main([str(a), str(missing)]) == 1
    assert "1 only in A" in capsys.readouterr().out
    null = _store(tmp_path / "null", ROWS[:2] + [("r", 4, 1, "tc_loss", "", 1.0)] + ROWS[3:])
    assert compare_stores.main([str(a), str(null)]) == 1
