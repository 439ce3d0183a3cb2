"""`dynamics.probe --metrics-module`: the worked example measured, stored, recorded and reported like a built-in;
a changed module measured again; a bad module refused with one line before anything is written."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from dynamics import probe
from dynamics.metrics import registry
from dynamics.results import store as st

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "my_metric.py"
NAME = "peak_coordinate_share"


def run_probe(run: Path, out: Path, module: Path) -> probe.ProbeSummary:
    return probe.run(run, out=out, probe_blocks=8, metrics=["geometry"], progress=False, figures=False,
                     metrics_module=[str(module)])


def test_example_metric_is_measured_recorded_and_reported(tiny_run: Path, tmp_path: Path) -> None:
    module = shutil.copy(EXAMPLE, tmp_path / "my_metric.py")
    before = list(registry.load())
    run_probe(tiny_run, tmp_path / "out", module)
    assert list(registry.load()) == before  # registered for that run only
    with st.open(tmp_path / "out", readonly=True) as store:
        rows = store.metrics(NAME)
        snaps = sorted(store.snapshots()["step"])
        layers = sorted(store.metrics("norm_h")["layer"].unique())
        assert sorted(zip(rows["step"], rows["layer"], strict=True)) == [(s, lyr) for s in snaps for lyr in layers]
        # between 1/√H (all coordinates equal; the tiny run has H = 64) and 1 (one axis)
        assert ((rows["value"] >= 1 / 8) & (rows["value"] <= 1)).all() and set(rows["family"]) == {"geometry"}
        defs = store.definitions().set_index("name")
        assert defs.loc[NAME, "label"] == "Peak coordinate share" and defs.loc[NAME, "page"] == "geometry"
        assert defs.loc[NAME, "pointer"] == f"my_metric.{NAME}"
        mods = store.metric_modules()
        digest = hashlib.sha256(module.read_bytes()).hexdigest()
        assert list(mods["name"]) == ["my_metric"] and list(mods["sha256"]) == [digest]
        assert mods["source"].iloc[0] == module.read_text() and mods["metrics"].iloc[0] == (NAME,)
        params = store.completed()
        geometry = params[params["family"] == "geometry"]["params"]
        assert geometry.str.endswith(f"user=my_metric:{digest[:16]}").all()
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Your metrics (--metrics-module)" in report and f"Peak coordinate share (`{NAME}`" in report

    # the same module again: nothing measured; a changed module: its family measured again
    again = run_probe(tiny_run, tmp_path / "out", module)
    assert not [u for u in again.computed if u[1] >= 0]
    module.write_text(module.read_text() + "\n# changed\n")
    changed = run_probe(tiny_run, tmp_path / "out", module)
    assert {u[2] for u in changed.computed if u[1] >= 0} == {"geometry"}
    assert len([u for u in changed.computed if u[1] >= 0]) == len(snaps)


@pytest.mark.parametrize(("body", "says"), [
    ("@register('anisotropy', family='geometry', page='geometry', layers=ALL_LAYERS, label='x', unit='u', "
     "definition='x.')\ndef f(h):\n    return 1.0\n", "already registered"),
    ("@register('mine', family='geometry', page='geometry', layers=ALL_LAYERS, label='x', unit='u', "
     "definition='x.')\ndef f(h, hidden):\n    return 1.0\n", "not probe inputs"),
    ("import no_such_dependency_xyz\n", "ModuleNotFoundError"),
])
def test_bad_module_is_one_error_line_and_nothing_written(tiny_run: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str], body: str,
                                                          says: str) -> None:
    bad = tmp_path / "bad_metrics.py"
    bad.write_text("from dynamics.metrics import register\nfrom dynamics.metrics.registry import ALL_LAYERS\n" + body)
    code = probe.main([str(tiny_run), "--out", str(tmp_path / "out"), "--metrics-module", str(bad), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: --metrics-module {bad}: ") and says in err[0]
    assert not (tmp_path / "out").exists()
