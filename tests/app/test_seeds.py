"""The Seeds & LLC page on a store the real probe wrote (`seed_pair`: two tiny seeds of one recipe, with a short
`llc`): the agreement chart draws the stored group rows with the number of seeds, the LLC chart and table the stored
mean, chains and spread; a store without them says how to measure them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamics.results import store
from tests.app.helpers import assert_clean, charts, texts


@pytest.fixture
def page(make_app, seed_pair: tuple[dict[str, Path], Path]):
    at = make_app(seed_pair[1].parent, page="seeds")
    assert_clean(at)
    return at


def test_agreement_and_llc_are_drawn_from_the_store(page, seed_pair: tuple[dict[str, Path], Path]) -> None:
    with store.open(seed_pair[1], readonly=True) as s:
        rows = s.group_metrics("seed_jsd")
        llc = s.metrics("llc", variant="all")
    drawn = {title: df for title, df, _ in charts(page)}
    jsd = next(df for title, df in drawn.items() if title.startswith("JSD between seeds"))
    assert sorted(jsd["value"]) == pytest.approx(sorted(rows["value"]))
    assert set(jsd["group"]) == {f"{rows['grp'].iloc[0]} (2 seeds)"}
    lines = next(df for title, df in drawn.items() if title.startswith("LLC"))
    means = lines[lines["variant"] == "all"] if "variant" in lines else lines
    assert set(llc["value"].round(9)) <= set(means["value"].round(9))
    assert "mlm-s0, mlm-s1" in texts(page)
    table = page.dataframe[0].value
    assert {"mean", "sd", "drift", "warnings"} <= set(table.columns) and len(table) == 4


def test_a_store_without_them_says_how_to_measure_them(make_app, probed_root: Path) -> None:
    at = make_app(probed_root, page="seeds")
    assert_clean(at)
    text = texts(at)
    assert "No seed-agreement rows" in text and "opt-in" in text
