"""Seed groups across the app: the Runs page lists the groups of a store whose runs differ only by seed (and shows
no such table for runs that form none), and every page renders clean with the sidebar's "Seed groups" toggle on,
the metric pages then drawing groups."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.app.conftest import PAGES
from tests.app.helpers import assert_clean, charts, texts
from tests.app.synthetic import write_store

RUNS = [("mlm-s1", "mlm"), ("mlm-s2", "mlm"), ("mlm-s3", "mlm"), ("taco-s1", "taco"), ("taco-s2", "taco"),
        ("solo", "taco")]
SEEDS = {"mlm-s1": 1, "mlm-s2": 2, "mlm-s3": 3, "taco-s1": 1, "taco-s2": 2, "solo": 7}
METRIC_PAGES = ("anchors", "context", "geometry")


@pytest.fixture(scope="module")
def grouped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two groups (mlm × 3 seeds, taco × 2) and a run of a recipe of its own ("solo": another learning rate)."""
    import sqlite3

    root = tmp_path_factory.mktemp("app-runs-groups")
    db = write_store(root, runs=RUNS, steps=(0, 1, 2, 4, 8), n_metrics=40, projection_tokens=20, seeds=SEEDS)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET meta = json_set(meta, '$.config.lr', 1e-3) WHERE name = 'solo'")
    conn.close()
    return root


def _group_tables(at: object) -> list[pd.DataFrame]:
    return [d.value for d in at.dataframe if "group" in d.value.columns]  # type: ignore[attr-defined]


def test_runs_page_lists_the_seed_groups(make_app, grouped: Path) -> None:
    at = make_app(grouped)
    assert_clean(at)
    (table,) = _group_tables(at)
    assert "Seed groups" in [s.value for s in at.subheader]
    assert table.to_dict("records") == [
        {"group": "mlm", "objective": "mlm", "runs": "mlm-s1, mlm-s2, mlm-s3", "seeds": "1, 2, 3", "n": 3},
        {"group": "solo", "objective": "taco", "runs": "solo", "seeds": "7", "n": 1},
        {"group": "taco", "objective": "taco", "runs": "taco-s1, taco-s2", "seeds": "1, 2", "n": 2},
    ]
    assert "Runs whose configs are equal except for the seed" in texts(at)


def test_no_group_table_without_groups(make_app, synthetic_root: Path) -> None:
    at = make_app(synthetic_root)
    assert_clean(at)
    assert not _group_tables(at)
    assert "Seed groups" not in [s.value for s in at.subheader]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_with_seed_groups_on(make_app, grouped: Path, page: str) -> None:
    at = make_app(grouped, page=page)
    assert_clean(at)
    at.sidebar.toggle(key="ctx:groups").set_value(True).run()
    assert_clean(at)
    if page in METRIC_PAGES:
        _, data, _ = charts(at)[0]
        assert "group" in data.columns and {"mlm", "taco"} <= set(data["group"]), page
