"""The Timeline page (seed groups' onsets, earliest first, with Student-t intervals) and phase spans on a metric
page, on a synthetic store whose onsets and phases are written as the probe writes them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from dynamics.measure.run_families import write_onsets_and_phases
from dynamics.results import store as dstore
from dynamics.results.onsets import curve_rows
from dynamics.results.phases import series_phases
from tests.app.helpers import assert_clean, charts, texts
from tests.app.synthetic import PROBE_HASH, write_store

RUNS = [("mlm-s1", "mlm"), ("mlm-s2", "mlm"), ("mlm-s3", "mlm"), ("taco-s1", "taco"), ("taco-s2", "taco"),
        ("taco-s3", "taco")]
SEEDS = {name: int(name[-1]) for name, _ in RUNS}
STEPS = (0, 1, 2, 4, 8, 16, 32, 64)


@pytest.fixture(scope="module")
def timed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("app-timeline")
    db = write_store(root, runs=RUNS, steps=STEPS, n_metrics=40, projection_tokens=0, seeds=SEEDS)
    with sqlite3.connect(db) as conn:  # seeds reach their halfway points at different steps
        conn.execute("UPDATE metrics SET value = value + (CASE run WHEN 'taco-s1' THEN 0.004 WHEN 'taco-s3' THEN "
                     "-0.002 WHEN 'mlm-s2' THEN 0.003 ELSE 0 END) * step")
        # one curve with a clean break in log step for the phase spans: flat, then a rise
        conn.execute("UPDATE metrics SET value = CASE WHEN step <= 8 THEN 1.0 ELSE 1.0 + (step / 8.0) END "
                     "WHERE metric = 'anisotropy' AND run = 'mlm-s1'")
    conn.close()
    with dstore.open(db) as s:
        for run, _ in RUNS:
            write_onsets_and_phases(s, PROBE_HASH, run)
    return root


def test_timeline_sorted_with_group_intervals(make_app, timed: Path) -> None:
    at = make_app(timed, page="timeline")
    assert_clean(at)
    title, data, spec = charts(at)[0]
    assert title == "Onsets, earliest first" and set(data["group"]) == {"mlm", "taco"}
    # rows in order of the earliest group's mean log10 onset
    first = data.groupby("label", sort=False)["mean"].min()
    assert list(first) == sorted(first)
    # one curve's numbers against the stored onsets: mean of log10 step over the seeds, as a geometric mean step
    with dstore.open(timed / "dynamics", readonly=True) as s:
        on = s.onsets(PROBE_HASH, metric="anisotropy").query("variant == 'all' and layer == 2")
    steps = on[on["run"].str.startswith("taco")]["step"].to_numpy(dtype=float)
    row = data[(data["metric"] == "anisotropy") & (data["group"] == "taco")].iloc[0]
    assert row["step"] == pytest.approx(10 ** np.log10(steps).mean()) and row["n"] == 3
    assert (np.ptp(steps) == 0) == (row["step_low"] == pytest.approx(row["step_high"]))
    assert "Student-t 95% interval" in texts(at) and "mlm: 3 runs" in texts(at)
    # one layer for every metric
    at.selectbox(key="timeline:layer").set_value(1).run()
    assert_clean(at)
    assert set(charts(at)[0][1]["layer"]) == {1}


def test_phase_spans_on_a_metric_page(make_app, timed: Path) -> None:
    at = make_app(timed, page="geometry")
    at.multiselect(key="geometry:runs").set_value(["mlm-s1"]).run()
    at.selectbox(key="geometry:metric").set_value("anisotropy").run()
    assert_clean(at)
    _, data, spec = charts(at)[0]
    rects = [layer for layer in spec.get("layer", []) if (layer.get("mark") or {}).get("type") == "rect"]
    assert rects, "no phase spans"
    spans = data.dropna(subset=["direction"])
    assert list(spans["direction"]) == ["flat", "rise"] and int(spans["start_step"].iloc[1]) in (8, 16)
    assert "phases between change points" in texts(at)
    at.toggle(key="geometry:phases").set_value(False).run()
    spec = charts(at)[0][2]
    assert not [la for la in spec.get("layer", []) if (la.get("mark") or {}).get("type") == "rect"]


def test_figures_of_the_order_and_the_phases(timed: Path, tmp_path: Path) -> None:
    from dynamics.results import figures
    from dynamics.results.groups import seed_groups, stored_configs
    from dynamics.results.onsets import group_onsets, order_of_learning

    with dstore.open(timed / "dynamics", readonly=True) as s:
        known = s.runs()
        groups = seed_groups(stored_configs(known["name"], known["meta"]))
        order = order_of_learning(group_onsets(s.onsets(PROBE_HASH), groups))
        df = s.metrics(["rankme", "ctx_gap_all"], probe_hash=PROBE_HASH)
        phases = s.phases(PROBE_HASH)
    assert list(order["group"].unique()) == ["mlm", "taco"] and order["rank"].is_monotonic_increasing
    runs = [r for r, _ in RUNS]
    timeline = figures.timeline_figure(order, tmp_path / "timeline.png", {"mlm": "#1f77b4", "taco": "#ff7f0e"})
    spans = figures.phases_figure(df, phases, runs, tmp_path / "phases.png")
    for path in (timeline, spans):
        assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figures.timeline_figure(order.iloc[:0], tmp_path / "none.png", {}) is None

    # a label far longer than the figure is wide wraps and stays inside the image, whole
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    long = {m: f"{m} measured over every masked position of the probe set " * 4 for m in order["metric"]}
    fig = figures.timeline_drawing(order, {"mlm": "#1f77b4", "taco": "#ff7f0e"}, long)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    ticks = fig.axes[0].get_yticklabels()
    assert len(ticks) == order["metric"].nunique()
    for tick in ticks:
        box = tick.get_window_extent(renderer)
        assert box.x0 >= 0 and box.y0 >= 0 and box.y1 <= fig.bbox.height, (tick.get_text(), box)
        assert " ".join(tick.get_text().split()).startswith(" ".join(long[tick.get_text().split()[0]].split()))


def test_probe_stores_phases_and_reports_them(probed_root: Path) -> None:
    with dstore.open(probed_root / "dynamics", readonly=True) as s:
        stored = s.phases()
        df = s.metrics()
    assert set(stored["run"]) == {"mlm-tiny", "taco-tiny"}
    rows = curve_rows(df)
    want = {(c.run, c.metric, c.layer, c.variant, p.index, p.start_step, p.end_step, p.direction)
            for c in series_phases(rows) for p in c.phases}
    got = set(zip(stored["run"], stored["metric"], stored["layer"], stored["variant"], stored["phase"],
                  stored["start_step"], stored["end_step"], stored["direction"], strict=True))
    assert got == want and len(got)
    report = (probed_root / "dynamics" / "report.md").read_text()
    assert "## Order of learning" in report and "## Phases" in report
    assert "curves with ≥ 1 break" in report
