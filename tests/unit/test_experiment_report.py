"""The analysis behind the experiment reports (`experiments.report`): when a curve reaches a target, the speed-up
and its undefined cases, the paired difference with its t-interval, and rebuilding the committed mlm_vs_taco
report from its curves.csv and summary.json alone."""

from __future__ import annotations

import math
import re
import shutil
import types
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from experiments.errors import EvalError
from experiments.report import (
    COLUMNS,
    Results,
    Speedup,
    gather_run,
    paired_difference,
    paired_runs,
    pooled_speedup,
    speedups,
    steps_to_reach,
    write_report,
)
from experiments.spec import load

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "experiments" / "results" / "mlm_vs_taco"
NAN = math.nan


# ------------------------------------------------------------------------------------------------ steps_to_reach

@pytest.mark.parametrize("values, target, expected", [
    ([10, 20, 30], 25, 150.0),  # halfway between the snapshots at 100 and 200
    ([10, 20, 30], 20, 100.0),  # exactly at a snapshot
    ([10, 20, 30], 12, 20.0),
    ([10, 20, 30], 10, 0.0),  # the first point already reaches it
    ([10, 20, 30], 5, 0.0),
    ([10, 20, 30], 30.5, None),  # never reached
    ([10, 30, 20], 25, 75.0),  # the first crossing counts, not a later one
    ([10, NAN, 30], 20, 100.0),  # the NaN snapshot is skipped: interpolate 0 → 200
    ([NAN, 20, 30], 15, 100.0),  # a NaN first point is skipped too: the first real point reaches it
    ([NAN, NAN, NAN], 0, None),
])
def test_steps_to_reach(values: list[float], target: float, expected: float | None) -> None:
    got = steps_to_reach([0, 100, 200], values, target)
    assert got == (None if expected is None else pytest.approx(expected))


def test_steps_to_reach_between_uneven_snapshots() -> None:
    # 40 → 44 between steps 250 and 1000: 42 is reached at 250 + 0.5 * 750
    assert steps_to_reach([0, 250, 1000], [39.0, 40.0, 44.0], 42.0) == pytest.approx(625.0)
    with pytest.raises(ValueError):
        steps_to_reach([0, 1], [1.0], 0.5)  # steps and values must pair up


# ------------------------------------------------------------------------------------------------ Speedup

def test_speedup_ratio_and_description() -> None:
    s = Speedup("mlm / taco", target=50.0, mlm_steps=1000, taco_steps=250.0, untrained=40.0)
    assert s.ratio == pytest.approx(4.0) and s.describe() == "4.00×"
    slow = Speedup("p", target=50.0, mlm_steps=1000, taco_steps=1500.0, untrained=40.0)
    assert slow.ratio == pytest.approx(2 / 3) and slow.describe() == "0.67×"  # TACO slower: below 1
    never = Speedup("p", target=50.0, mlm_steps=1000, taco_steps=None, untrained=40.0)
    assert never.ratio is None and never.describe() == "not reached within the budget"
    for untrained in (50.0, 55.0):  # MLM ends no better than the untrained model: no speed-up to speak of
        flat = Speedup("p", target=50.0, mlm_steps=1000, taco_steps=0.0, untrained=untrained)
        assert flat.ratio is None
        assert flat.describe() == "undefined: MLM's final score is not above the untrained model's"


# ------------------------------------------------------------------------------------------------ Results helpers

def _results(curves: dict[str, dict[int, float]], metric: str = "glue/average", layer: int = 2) -> Results:
    """Linear-probe curves (run → step → score) as tidy rows, with each run's settings from its name."""
    rows = []
    for run, curve in curves.items():
        for step, value in curve.items():
            rows.append({"run": run, "step": step, "tokens_seen": step * 256, "source": "downstream",
                         "metric": metric, "variant": "linear/mean", "layer": layer, "value": value})
            # an earlier layer with other numbers: the report reads the last layer only
            rows.append({"run": run, "step": step, "tokens_seen": step * 256, "source": "downstream",
                         "metric": metric, "variant": "linear/mean", "layer": layer - 1, "value": -1.0})
    runs = {r: {"config": {"objective": r.split("-")[0], "seed": int(r.split("-s")[1])}} for r in curves}
    return Results(pd.DataFrame(rows, columns=COLUMNS), runs)


def test_speedups_per_seed_pair_and_pooled() -> None:
    res = _results({
        "mlm-s1": {0: 40.0, 100: 44.0, 200: 48.0},
        "mlm-s2": {0: 40.0, 100: 42.0, 200: 44.0},
        "taco-s1": {0: 40.0, 100: 48.0, 200: 50.0},
        "taco-s2": {0: 41.0, 100: 43.0, 200: 45.0},
    })
    pairs = paired_runs(None, res)  # type: ignore[arg-type]  # the experiment is not consulted
    assert pairs == [("mlm-s1", "taco-s1"), ("mlm-s2", "taco-s2")]
    one, two = speedups(res, pairs, "glue/average", "linear")
    assert (one.target, one.mlm_steps, one.untrained) == (48.0, 200, 40.0)
    assert one.taco_steps == pytest.approx(100.0) and one.ratio == pytest.approx(2.0)
    assert two.taco_steps == pytest.approx(150.0)  # 43 → 45 between 100 and 200 reaches 44 halfway
    assert two.ratio == pytest.approx(200 / 150)
    pooled = pooled_speedup(res, ["mlm-s1", "mlm-s2"], ["taco-s1", "taco-s2"], "glue/average", "linear")
    # seed means: MLM 40, 43, 46; TACO 40.5, 45.5, 47.5 → 46 is reached at 100 + 0.5/2 * 100
    assert pooled is not None and pooled.target == pytest.approx(46.0) and pooled.untrained == pytest.approx(40.5)
    assert pooled.taco_steps == pytest.approx(125.0) and pooled.ratio == pytest.approx(200 / 125)


def test_two_runs_with_one_seed_and_objective_are_refused() -> None:
    res = _results({"mlm-s1": {0: 40.0, 200: 45.0}, "taco-s1": {0: 40.0, 200: 46.0}})
    res.runs["taco-init"] = {"config": {"objective": "taco", "seed": 1, "init_embeddings": "runs/x/mlm-s1"}}
    exp = types.SimpleNamespace(name="study")
    with pytest.raises(EvalError, match="taco-s1 and taco-init share seed 1 and objective taco"):
        paired_runs(exp, res)  # type: ignore[arg-type]


def test_paired_difference_matches_a_hand_computation() -> None:
    res = _results({
        "mlm-s1": {0: 40.0, 200: 45.0}, "taco-s1": {0: 40.0, 200: 47.0},  # +2
        "mlm-s2": {0: 40.0, 200: 46.0}, "taco-s2": {0: 40.0, 200: 45.0},  # -1
        "mlm-s3": {0: 40.0, 200: 44.0}, "taco-s3": {0: 40.0, 200: 44.5},  # +0.5
        "mlm-s4": {0: 40.0, 200: 44.0},  # no TACO partner: not a pair
    })
    pairs = paired_runs(None, res)  # type: ignore[arg-type]
    assert pairs == [("mlm-s1", "taco-s1"), ("mlm-s2", "taco-s2"), ("mlm-s3", "taco-s3")]
    diff = paired_difference(res, pairs, "glue/average", "linear")
    assert diff is not None
    # mean 0.5; deviations 1.5, -1.5, 0 → sample std sqrt(4.5 / 2) = 1.5; half-width t(0.975, 2) * 1.5 / sqrt(3)
    t = stats.t.ppf(0.975, 2)
    assert t == pytest.approx(4.302652729911275)
    half = t * 1.5 / math.sqrt(3)
    assert diff["per_seed"] == pytest.approx([2.0, -1.0, 0.5]) and diff["n"] == 3
    assert diff["mean"] == pytest.approx(0.5) and diff["std"] == pytest.approx(1.5)
    assert diff["ci_low"] == pytest.approx(0.5 - half) and diff["ci_high"] == pytest.approx(0.5 + half)
    assert paired_difference(res, pairs[:1], "glue/average", "linear") is None  # one pair: no interval
    assert paired_difference(res, [("mlm-s1", "taco-s9"), *pairs[:1]], "glue/average", "linear") is None


# ------------------------------------------------------------------------------------------------ rebuilding

def _section(text: str, heading: str) -> str:
    """The text of a `## heading` section, up to the next `## `."""
    match = re.search(rf"^## {re.escape(heading)}.*?$(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"no section {heading!r}"
    return match.group(1)


def _table_lines(section: str) -> list[str]:
    return [line for line in section.splitlines() if line.startswith("|")]


def test_committed_mlm_vs_taco_report_rebuilds_from_curves_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    for name in ("curves.csv", "summary.json"):
        shutil.copy(COMMITTED / name, out / name)
    empty_runs = tmp_path / "runs"
    empty_runs.mkdir()
    exp = load(REPO / "experiments" / "configs" / "mlm_vs_taco.yaml", runs_dir=empty_runs)

    rebuilt = write_report(exp, out).read_text()
    committed = (COMMITTED / "report.md").read_text()
    speed, speed_committed = _section(rebuilt, "Speed-up"), _section(committed, "Speed-up")
    assert _table_lines(speed) == _table_lines(speed_committed) and len(_table_lines(speed)) >= 4
    assert speed.strip() == speed_committed.strip()  # the speed-up and paired-difference sentences too
    final, final_committed = _section(rebuilt, "Final scores"), _section(committed, "Final scores")
    assert _table_lines(final) == _table_lines(final_committed) and len(_table_lines(final)) >= 6
    assert (out / "figures" / "scores.png").is_file() and (out / "figures" / "dynamics.png").is_file()
    assert not any(empty_runs.iterdir())  # nothing was written where the runs would be


def test_report_without_runs_or_curves_names_the_command(tmp_path: Path) -> None:
    exp = load(REPO / "experiments" / "configs" / "mlm_vs_taco.yaml", runs_dir=tmp_path / "runs")
    with pytest.raises(EvalError, match=r"no trained runs under .* run `python -m experiments.run "):
        write_report(exp, tmp_path / "results")


def test_gather_run_reads_a_damaged_log_and_names_a_broken_run_json(tmp_path: Path) -> None:
    """`log.jsonl` with a binary line, a non-finite value and a line cut by a kill gives the readable rows (read
    through `common.run_dir`); an unreadable run.json is an EvalError naming it."""
    run = tmp_path / "mlm"
    run.mkdir()
    (run / "run.json").write_text('{"config": {"seed": 1}, "model_config": {"num_hidden_layers": 2}}')
    (run / "log.jsonl").write_bytes(
        b'{"step": 10, "split": "validation", "mlm_loss": 5.0, "tc_loss": NaN}\n\xff\xfe\x00\n'
        b'{"step": 20, "split": "validation", "mlm_loss": 4.0, "mlm_accuracy": 0.25}\n{"step": 30, "split": "val')
    rows, info = gather_run(run, "mlm")
    assert info["config"] == {"seed": 1} and info["layers"] == 2
    assert [(r["step"], r["metric"], r["value"]) for r in rows] == [
        (10, "val_mlm_loss", 5.0), (20, "val_mlm_loss", 4.0), (20, "val_mlm_accuracy", 0.25)]
    assert gather_run(tmp_path / "absent", "x") == ([], {})
    (run / "run.json").write_text("{cut")
    with pytest.raises(EvalError, match="run.json"):
        gather_run(run, "mlm")
