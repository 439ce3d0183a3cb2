"""Seed groups and onsets in the app: the group frames and the paired difference against values recomputed from the
store, the sidebar's group mode on the metric pages (mean, band, Student-t difference), and onset markers."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.data import seed_groups
from dynamics.results import store as dstore
from dynamics.results.onsets import curve_rows, series_onsets
from tests.app.helpers import assert_clean, charts, texts
from tests.app.synthetic import PROBE_HASH, write_store

T_975_DF2 = 4.3026527  # Student's t quantile 0.975, 2 degrees of freedom (tables)
RUNS = [("mlm-s1", "mlm"), ("mlm-s2", "mlm"), ("mlm-s3", "mlm"), ("taco-s1", "taco"), ("taco-s2", "taco"),
        ("taco-s3", "taco")]
SEEDS = {name: int(name[-1]) for name, _ in RUNS}


@pytest.fixture(scope="module")
def grouped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("app-groups")
    db = write_store(root, runs=RUNS, steps=(0, 1, 2, 4, 8), projection_tokens=0, seeds=SEEDS)
    with sqlite3.connect(db) as conn:  # seed-to-seed spread that differs between the groups
        conn.execute("UPDATE metrics SET value = value + (CASE run WHEN 'taco-s1' THEN 0.013 WHEN 'taco-s2' THEN "
                     "-0.007 WHEN 'taco-s3' THEN 0.021 WHEN 'mlm-s2' THEN 0.004 ELSE 0 END) * (step + 1)")
    conn.close()
    return root


def _values(db: Path, metric: str, layer: int) -> pd.DataFrame:
    with sqlite3.connect(db) as conn:
        return pd.read_sql_query("SELECT run, step, value FROM metrics WHERE metric=? AND layer=? AND variant='all'",
                                 conn, params=(metric, layer))


def test_store_groups_by_seed(grouped: Path) -> None:
    groups = {g.label: g for g in seed_groups.store_groups(str(grouped / "dynamics" / "results.sqlite"), ())}
    assert set(groups) == {"mlm", "taco"}
    assert groups["mlm"].runs == ("mlm-s1", "mlm-s2", "mlm-s3") and groups["taco"].seeds == (1, 2, 3)


def test_group_frame_and_difference_against_the_store(grouped: Path) -> None:
    db = grouped / "dynamics" / "results.sqlite"
    groups = seed_groups.store_groups(str(db), ())
    with dstore.open(db, readonly=True) as s:
        df = s.metrics("anisotropy")
    vals = _values(db, "anisotropy", 1).pivot(index="step", columns="run", values="value")
    frame = seed_groups.group_frame(df, groups).query("layer == 1 and group == 'taco'").set_index("step")
    want = vals[["taco-s1", "taco-s2", "taco-s3"]]
    np.testing.assert_allclose(frame["value"], want.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(frame["low"], want.min(axis=1), rtol=1e-12)
    np.testing.assert_allclose(frame["high"], want.max(axis=1), rtol=1e-12)
    std = seed_groups.group_frame(df, groups, "std").query("layer == 1 and group == 'taco'").set_index("step")
    np.testing.assert_allclose(std["high"] - std["value"], want.std(axis=1, ddof=1), rtol=1e-9)
    by = {g.label: g for g in groups}
    diff, pairs = seed_groups.group_difference(df, by["taco"], by["mlm"])
    assert pairs == 3
    d = diff.query("layer == 1").set_index("step")
    per_seed = np.stack([vals[f"taco-s{k}"] - vals[f"mlm-s{k}"] for k in (1, 2, 3)])
    np.testing.assert_allclose(d["value"], per_seed.mean(0), rtol=1e-12)
    half = T_975_DF2 * per_seed.std(0, ddof=1) / math.sqrt(3)
    np.testing.assert_allclose(d["high"] - d["value"], half, rtol=1e-6)
    assert (d["n"] == 3).all()


def test_group_mode_on_a_metric_page(make_app, grouped: Path) -> None:
    at = make_app(grouped, page="geometry")
    assert_clean(at)
    at.sidebar.toggle(key="ctx:groups").set_value(True).run()
    assert_clean(at)
    title, data, _ = charts(at)[0]
    assert set(data["group"]) == {"mlm", "taco"} and "layer" in title
    assert "band = min – max over seeds" in texts(at) and "mlm: 3 runs" in texts(at)
    at.sidebar.radio(key="ctx:band").set_value("std").run()
    assert "mean ± 1 std" in texts(at)
    # the Difference tab: two groups paired by seed, with the t interval and a word on how few seeds stand behind it
    assert "paired by seed (3 pairs)" in texts(at) and "wide by design" in texts(at)
    diff = [c for c in charts(at) if c[0].startswith("mlm − taco")]
    assert diff
    points = diff[0][1].dropna(subset=["step"])  # the chart's data also holds its zero line
    assert (points["n"] == 3).all() and points["low"].notna().all() and (points["low"] < points["high"]).all()


def test_onsets_are_drawn_as_markers(make_app, tmp_path: Path) -> None:
    db = write_store(tmp_path, steps=(0, 1, 2, 4, 8, 16), projection_tokens=0)
    with dstore.open(db) as s:
        for run in ("mlm-syn", "taco-syn"):
            s.write_onsets(PROBE_HASH, run, series_onsets(curve_rows(s.metrics(run=run, probe_hash=PROBE_HASH))))
        stored = s.onsets(PROBE_HASH, metric="anisotropy").query("layer == 0 and variant == 'all'")
    assert len(stored) == 2 and stored["step"].notna().all()
    at = make_app(tmp_path, page="geometry")
    assert_clean(at)
    _, data, spec = charts(at)[0]
    marks = [layer for layer in spec.get("layer", []) if (layer.get("mark") or {}).get("shape") == "diamond"]
    assert marks, "no onset markers"
    assert "onset" in texts(at)


def test_probe_stores_onsets(probed_root: Path) -> None:
    with dstore.open(probed_root / "dynamics", readonly=True) as s:
        on = s.onsets()
        rows = s.metrics("anisotropy")
    assert len(on) and set(on["run"]) == {"mlm-tiny", "taco-tiny"}
    # every stored onset is a step the run measured, where the curve has passed half of its change
    one = on.query("metric == 'anisotropy' and layer == 1 and variant == 'all' and run == 'mlm-tiny'")
    curve = rows.query("layer == 1 and variant == 'all' and run == 'mlm-tiny'").sort_values("step")
    v = curve["value"].to_numpy()
    if len(one) and not math.isnan(one["step"].iloc[0]):
        k = list(curve["step"]).index(int(one["step"].iloc[0]))
        frac = (v - v[0]) / (v[-1] - v[0])
        assert frac[k] >= 0.5 and (frac[:k] < 0.5).all()
