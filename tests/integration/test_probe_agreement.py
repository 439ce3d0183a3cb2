"""Seed agreement and the opt-in `llc` family end to end: two tiny runs of one recipe that differ only in seed, probed
together, give group-scope rows (JSD between the seeds' output distributions at the last layer, CKA between seeds at
every layer) in the store's group tables, equal to the metric functions on the stored arrays; `--metrics llc` stores
the estimate with its chains and settings; `--agreement-positions 0` stores no output sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dynamics import probe
from dynamics.metrics import agreement as A
from dynamics.results import store
from tests.integration.conftest import one_torch_thread

RUNS = ("mlm-s0", "mlm-s1")


@pytest.fixture(scope="module")
def probed(seed_pair: tuple[dict[str, Path], Path]) -> Path:
    return seed_pair[1]


def test_group_rows_equal_the_metrics_on_the_stored_arrays(probed: Path) -> None:
    with store.open(probed, readonly=True) as s:
        members = s.group_members()
        assert set(members["run"]) == set(RUNS) and members["grp"].nunique() == 1
        rows = s.group_metrics()
        assert set(rows["n_runs"]) == {2} and set(rows["step"]) == {0, 4}
        jsd = rows[rows["metric"] == "seed_jsd"]
        assert set(jsd["layer"]) == {2} and len(jsd) == 2
        assert set(rows[rows["metric"] == "seed_cka"]["layer"]) == {0, 1, 2}
        for step in (0, 4):
            outs = [s.load_array(s.arrays("output_sample", run=r, step=step)["file"].iloc[0]) for r in RUNS]
            assert outs[0]["log_probs"].dtype == np.float16 and outs[0]["log_probs"].shape[0] == 32
            assert np.array_equal(outs[0]["index"], outs[1]["index"])
            want = A.seed_jsd([o["log_probs"] for o in outs])
            assert jsd[jsd["step"] == step]["value"].iloc[0] == pytest.approx(want, rel=1e-12)
            assert 0 < want < np.log(2)
            samples = [s.load_array(s.arrays("cka_sample", run=r, step=step)["file"].iloc[0]) for r in RUNS]
            cka = rows[(rows["metric"] == "seed_cka") & (rows["step"] == step) & (rows["layer"] == 1)]["value"].iloc[0]
            assert cka == pytest.approx(A.seed_cka([x["h1"] for x in samples]), rel=1e-9)


def test_llc_is_stored_with_its_chains_spread_and_settings(probed: Path) -> None:
    with store.open(probed, readonly=True) as s:
        df = s.metrics("llc")
        assert set(df["run"]) == set(RUNS) and set(df["step"]) == {0, 4} and set(df["layer"]) == {0}
        one = df[(df["run"] == "mlm-s0") & (df["step"] == 4)].set_index("variant")["value"]
        assert set(one.index) == {"all", "sd", "drift", "chain_1", "chain_2"}
        assert one["all"] == pytest.approx((one["chain_1"] + one["chain_2"]) / 2)
        params = s.completed()
        llc = params[params["family"] == "llc"]["params"].iloc[0]
        assert "llc_chains=2" in llc and "llc_step_size=1e-05" in llc and "llc_draws=15" in llc
        assert any("nβ =" in n for n in s.notes()["note"])


def test_no_output_sample_without_agreement_positions(seed_pair: tuple[dict[str, Path], Path], tmp_path: Path) -> None:
    with one_torch_thread():
        probe.run(seed_pair[0]["mlm-s0"], out=tmp_path / "dyn", probe_blocks=8, progress=False, figures=False,
                  metrics=["anchors"], steps=[4], agreement_positions=0)
    with store.open(tmp_path / "dyn", readonly=True) as s:
        assert s.arrays("output_sample").empty and not s.arrays("word_surprisal").empty
        assert s.group_metrics().empty


def test_report_sections_and_figure_of_agreement_and_llc(probed: Path, tmp_path: Path) -> None:
    from dynamics.results import agreement, figures, llc_checks

    report = (probed / "report.md").read_text()
    with store.open(probed, readonly=True) as s:
        rows, llc = s.group_metrics(), s.metrics("llc")
    assert "## Agreement between seeds" in report and "## Local learning coefficient" in report
    jsd = rows[rows["metric"] == "seed_jsd"].sort_values("step")
    lines = agreement.report_lines(rows)
    group_row = next(line for line in lines if line.startswith("| mlm"))
    cells = [c.strip() for c in group_row.strip("|").split("|")]
    assert cells[1:3] == ["2", "2"]  # two seeds, two shared steps
    assert cells[5] == f"{jsd['value'].iloc[-1]:.4g} (step 4)" and group_row in report
    table = [line for line in llc_checks.report_lines(llc) if line.startswith("| mlm-s")]
    assert len(table) == 4 and all(line in report for line in table)  # two runs × two steps
    one = llc[(llc["run"] == "mlm-s1") & (llc["step"] == 4)].set_index("variant")["value"]
    assert f"| mlm-s1 | 4 | {one['all']:.4g} | {one['sd']:.3g} |" in report
    colours = {"mlm": "#1f77b4"}
    path = figures.agreement_figure(rows, tmp_path / "agreement.png", colours)
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figures.agreement_figure(rows.iloc[:0], tmp_path / "none.png", colours) is None
    assert agreement.report_lines(rows.iloc[:0]) == [] and llc_checks.report_lines(llc.iloc[:0]) == []
