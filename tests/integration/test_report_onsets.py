"""The report's "Onsets" section: on real tiny runs (two MLM seeds forming a seed group, and a TACO run) the table
equals the onsets recomputed here from the store's metric rows by the definition (first measured step past half of
the curve's change) and the store's own onsets table; the group's mean ± std cell, unit-level, on constructed
onsets."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

import pandas as pd
import pytest

from dynamics import probe
from dynamics.results import report, store
from dynamics.results.groups import Group
from tests.integration.conftest import build_tiny_run, one_torch_thread

METRICS = ("ctx_gap_window", "ctx_same_window", "anisotropy", "rankme", "masked_accuracy", "tc_loss")


@pytest.fixture(scope="module")
def probed(tiny_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> probe.ProbeSummary:
    """The tiny MLM (seed 0) and TACO runs plus a second MLM seed ("mlm-seed2", same recipe, seed 2), probed."""
    root = tmp_path_factory.mktemp("report-onsets")
    with one_torch_thread():
        second = build_tiny_run(root / "mlm-seed2", objective="mlm", seed=2,
                                tokenizer_dir=tiny_runs["mlm"] / "tokenizer")
        return probe.run([tiny_runs["mlm"], second, tiny_runs["taco"]], out=root / "dyn", probe_blocks=8,
                         metrics=["anchors", "context", "geometry"], progress=False, figures=False)


def _onset_by_definition(steps: list[int], values: list[float | None]) -> int | None:
    """The first measured step at which (v − v_first) / (v_last − v_first) ≥ 1/2; None without a change."""
    points = sorted((s, float(v)) for s, v in zip(steps, values, strict=True)
                    if v is not None and math.isfinite(float(v)))
    if len(points) < 2:
        return None
    first, last = points[0][1], points[-1][1]
    if abs(last - first) <= 1e-12 + 1e-9 * max(abs(v) for _, v in points):
        return None
    return next(s for s, v in points if (v - first) / (last - first) >= 0.5)


def _section_table(text: str) -> dict[str, dict[str, str]]:
    """The Onsets section's table: metric name → {column header → cell}."""
    section = text.split("## Onsets\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    out = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[re.search(r"`(\w+)`", cells[0]).group(1)] = dict(zip(header, cells, strict=True))
    return out


def test_onsets_table_matches_the_definition_and_the_store(probed: probe.ProbeSummary) -> None:
    text = probed.report.read_text()
    assert "## Onsets" in text and "An onset is the first measured step" in text
    table = _section_table(text)
    assert list(table) == list(METRICS)
    runs = ["mlm", "mlm-seed2", "taco"]
    with store.open(probed.out, readonly=True) as s:
        rows = s.metrics(list(METRICS), run=runs, variant="all")
        stored = s.onsets(run=runs, metric=list(METRICS)).query("variant == 'all'")
    seen_onset = False
    for metric in METRICS:
        for run in runs:
            r = rows[(rows["metric"] == metric) & (rows["run"] == run)]
            if r.empty:
                assert table[metric][run] == "not measured"
                continue
            last = r[r["layer"] == r["layer"].max()]
            want = _onset_by_definition(last["step"].astype(int).tolist(), last["value"].tolist())
            assert table[metric][run] == ("–" if want is None else str(want)), (metric, run)
            on = stored[(stored["metric"] == metric) & (stored["run"] == run)]
            on = on[on["layer"] == on["layer"].max()]["step"].iloc[0]
            assert (None if on is None or math.isnan(on) else int(on)) == want
            seen_onset |= want is not None
    assert seen_onset, "no curve had an onset: the comparison above checked only dashes"


def test_the_seed_group_gets_mean_and_std(probed: probe.ProbeSummary) -> None:
    table = _section_table(probed.report.read_text())
    column = "mlm (group of 2)"
    assert all(column in cells for cells in table.values())
    assert not any(h.startswith("taco (group") for cells in table.values() for h in cells)  # a group of one
    for metric, cells in table.items():
        found = [int(cells[r]) for r in ("mlm", "mlm-seed2") if cells[r] not in ("–", "not measured")]
        if len(found) == 2:
            mean, std = statistics.mean(found), statistics.stdev(found)
            assert cells[column] == f"{mean:.4g} ± {std:.4g} (n = 2 of 2)", metric
        elif len(found) == 1:
            assert cells[column] == f"{found[0]} (n = 1 of 2)", metric
        else:
            assert cells[column] == "– (n = 0 of 2)", metric


def test_group_onset_line() -> None:
    assert report.group_onset([100, 200, None, 300]) == "200 ± 100 (n = 3 of 4)"
    assert report.group_onset([10, 11]) == "10.5 ± 0.7071 (n = 2 of 2)"
    assert report.group_onset([120_000, 150_000, 180_000]) == "150000 ± 30000 (n = 3 of 3)"
    assert report.group_onset([None, 40, None]) == "40 (n = 1 of 3)"
    assert report.group_onset([None, None]) == "– (n = 0 of 2)"


def test_onsets_section_from_constructed_onsets() -> None:
    rows = [("a-s1", "anisotropy", 0, "all", 1), ("a-s1", "anisotropy", 2, "all", 40),
            ("a-s2", "anisotropy", 2, "all", 80), ("a-s3", "anisotropy", 2, "all", None),
            ("a-s1", "anisotropy", 2, "rare", 999), ("b", "anisotropy", 2, "all", 5),
            ("a-s1", "rankme", 2, "all", 16), ("a-s2", "rankme", 2, "all", 32), ("a-s3", "rankme", 2, "all", 24)]
    onsets = pd.DataFrame(rows, columns=["run", "metric", "layer", "variant", "step"])
    group = Group("a", "k", ("a-s1", "a-s2", "a-s3"), (1, 2, 3), "mlm")
    lines = report.onsets_section(onsets, ["a-s1", "a-s2", "a-s3", "b"], [group, Group("b", "j", ("b",), (0,), "taco")])
    table = _section_table("## Onsets\n" + "\n".join(lines))
    assert list(table) == list(METRICS)
    assert table["anisotropy"] == {"metric": "Anisotropy (`anisotropy`)", "a-s1": "40", "a-s2": "80", "a-s3": "–",
                                   "b": "5", "a (group of 3)": "60 ± 28.28 (n = 2 of 3)"}
    assert table["rankme"]["b"] == "not measured" and table["rankme"]["a (group of 3)"] == "24 ± 8 (n = 3 of 3)"
    assert table["tc_loss"]["a (group of 3)"] == "– (n = 0 of 3)"
    assert "mean onset step ± its sample standard deviation" in lines[0]
