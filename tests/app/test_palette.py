"""Run colours in the app: every chart that colours by run maps each run to its `dynamics.results.palette` colour,
assigned over all runs the app found, so a run keeps its colour whichever runs a page selects."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynamics.results import palette
from tests.app.helpers import assert_clean, charts


def _run_scales(spec: dict) -> list[dict]:
    """The scale of every colour encoding on the field "run" in a (layered / faceted) Vega-Lite spec."""
    out, stack = [], [spec]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            colour = node.get("encoding", {}).get("color", {}) if isinstance(node.get("encoding"), dict) else {}
            if colour.get("field") == "run":
                out.append(colour.get("scale", {}))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def _mapping(scale: dict) -> dict[str, str]:
    return dict(zip(scale.get("domain", []), scale.get("range", []), strict=True))


@pytest.fixture(scope="module")
def scored_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic store's two runs (fewer snapshots) with downstream scores."""
    from tests.app.synthetic import write_downstream, write_store

    root = tmp_path_factory.mktemp("palette-scored")
    write_downstream(write_store(root, steps=(0, 2, 8), n_metrics=8, projection_tokens=0))
    return root


@pytest.mark.parametrize("page", ["overview", "geometry", "downstream"])
def test_charts_map_the_two_runs_to_the_palette(make_app, synthetic_root: Path, scored_root: Path,
                                                 page: str) -> None:
    expected = palette.run_colours([("mlm-syn", "mlm"), ("taco-syn", "taco")])
    assert expected["mlm-syn"] != expected["taco-syn"]
    at = make_app(scored_root if page == "downstream" else synthetic_root, page=page)
    assert_clean(at)
    scales = [s for _, _, spec in charts(at) for s in _run_scales(spec)]
    assert scales, f"no chart coloured by run on the {page} page"
    for scale in scales:
        assert _mapping(scale) == expected


def test_a_run_keeps_its_colour_when_others_are_deselected(make_app, tmp_path: Path) -> None:
    from tests.app.synthetic import write_store

    runs = [("mlm-a", "mlm"), ("mlm-b", "mlm"), ("taco-a", "taco")]
    write_store(tmp_path, runs=runs, steps=(0, 1, 4), n_layers=2, projection_tokens=0)
    expected = palette.run_colours(runs)
    at = make_app(tmp_path, page="geometry")
    first = _mapping(_run_scales(charts(at)[0][2])[0])
    assert first == expected
    at.multiselect(key="geometry:runs").set_value(["mlm-b"]).run()
    assert_clean(at)
    scales = [s for _, _, spec in charts(at) for s in _run_scales(spec)]
    assert scales and all(_mapping(s) == {"mlm-b": expected["mlm-b"]} for s in scales)
    assert expected["mlm-b"] == palette.shade("mlm", 1)  # the second MLM shade, not the first one alone would get
