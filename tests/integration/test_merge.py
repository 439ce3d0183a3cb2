"""Stores probed on parts of one series (disjoint `--steps`) merged into one (`dynamics.export --merge`): the merged
store, once the probe has added the run-level families, equals the store of one probe over all steps; inputs are
untouched; conflicting rows and different probe sets are refused with one line and nothing written."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sqlite3
from pathlib import Path

import pytest

from dynamics import export, probe

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("compare_stores", REPO / "benchmarks" / "compare_stores.py")
compare_stores = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_stores)

SETTINGS = dict(probe_blocks=8, progress=False, figures=False)


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def parts(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A probe of the tiny run (steps 0, 1, 2, 4) over all steps, and two over disjoint parts of them."""
    root = tmp_path_factory.mktemp("merge")
    probe.run(tiny_run, out=root / "whole", **SETTINGS)
    probe.run(tiny_run, out=root / "a", steps=[0, 1, 2], **SETTINGS)
    probe.run(tiny_run, out=root / "b", steps=[4], **SETTINGS)
    return {"root": root, "whole": root / "whole", "a": root / "a", "b": root / "b"}


def rejected(capsys: pytest.CaptureFixture[str], code: int, *names: object) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert all(str(n) in err[0] for n in names), err[0]
    return err[0]


def test_merged_then_probed_equals_one_probe_over_all_steps(parts: dict[str, Path], tiny_run: Path,
                                                            tmp_path: Path) -> None:
    before = {k: digest(parts[k]) for k in ("a", "b")}
    merged = tmp_path / "c"
    assert export.main(["--merge", str(parts["a"] / "results.sqlite"), str(parts["b"] / "results.sqlite"),
                        "--out", str(merged)]) == 0
    assert {k: digest(parts[k]) for k in ("a", "b")} == before  # the inputs are only read
    summary = probe.run(tiny_run, out=merged, **SETTINGS)
    # no snapshot measured again: only the run-level families (step −1)
    assert summary.computed and all(step == -1 for _, step, _ in summary.computed)
    assert {f for _, step, f in summary.reused if step >= 0} == {"anchors", "drift", "context", "geometry"}
    a, hashes_a = compare_stores.metric_rows(merged / "results.sqlite")
    b, hashes_b = compare_stores.metric_rows(parts["whole"] / "results.sqlite")
    only_a, only_b, bad = compare_stores.compare(a, b, atol=0.0, rtol=0.0)
    assert hashes_a == hashes_b and not only_a and not only_b and not bad and len(a) > 0
    assert compare_stores.everything(merged / "results.sqlite", parts["whole"] / "results.sqlite", show=5)


def test_merge_refuses_conflicts_other_probe_sets_and_used_folders(parts: dict[str, Path], tiny_run: Path,
                                                                   tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    tampered = shutil.copytree(parts["b"], tmp_path / "b2")
    with sqlite3.connect(tampered / "results.sqlite") as con:
        metric, layer = con.execute("SELECT metric, layer FROM metrics WHERE family='geometry' AND value IS NOT NULL "
                                    "ORDER BY metric LIMIT 1").fetchone()
        con.execute("UPDATE metrics SET value = value + 1 WHERE metric=? AND layer=? AND variant='all'", (metric, layer))
    out = tmp_path / "c"
    code = export.main(["--merge", str(parts["b"]), str(tampered), "--out", str(out)])
    line = rejected(capsys, code, "conflicting rows", f"metric {metric} of run mlm at step 4", tampered)
    assert "layer" in line and not out.exists()

    other = tmp_path / "other"
    probe.run(tiny_run, out=other, steps=[4], probe_blocks=6, progress=False, figures=False)
    rejected(capsys, export.main(["--merge", str(parts["a"]), str(other), "--out", str(out)]),
             "different probe sets", parts["a"], other)
    assert not out.exists()

    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    rejected(capsys, export.main(["--merge", str(parts["a"]), str(parts["b"]), "--out", str(tmp_path / "used")]),
             tmp_path / "used")
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["keep.txt"]
    rejected(capsys, export.main(["--merge", str(parts["a"]), "--out", str(out)]), "at least two")
