"""Unit tests of `app.charts`: every builder gives a valid Vega-Lite spec with the encodings the pages rely on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app import charts


def _metric(runs: tuple[str, ...] = ("mlm", "taco"), layers: int = 3, steps: tuple[int, ...] = (0, 1, 10, 100),
            variants: tuple[str, ...] = ("all",)) -> pd.DataFrame:
    rows = [(r, s, s * 100, layer, v, 0.1 * layer + s / 1000 + 0.01 * k)
            for k, r in enumerate(runs) for s in steps for layer in range(layers) for v in variants]
    return pd.DataFrame(rows, columns=["run", "step", "tokens_seen", "layer", "variant", "value"])


def _spec(chart: object) -> dict:
    return chart.to_dict()  # type: ignore[attr-defined] # validates against the Vega-Lite schema


def _encodings(spec: dict) -> list[dict]:
    """Every encoding block in a (layered / faceted) spec."""
    out = []
    stack = [spec]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "encoding" in node:
                out.append(node["encoding"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def test_log_ticks() -> None:
    assert charts.log_ticks(20) == [0, 1, 2, 5, 10, 20]
    assert charts.log_ticks(40) == [0, 1, 2, 5, 10, 20, 40] and charts.log_ticks(4) == [0, 1, 2, 4]
    assert charts.log_ticks(0) == [0] and charts.log_ticks(float("nan")) == [0]
    assert charts.log_ticks(3e6) == [0, 1, 10, 100, 1e3, 1e4, 1e5, 1e6, 3e6]


@pytest.mark.parametrize("log_x", [False, True])
def test_metric_lines_overlays_runs(log_x: bool) -> None:
    df = _metric()
    spec = _spec(charts.metric_lines(df[df["layer"] == 2], x="tokens_seen", log_x=log_x, title="T", y_title="Y"))
    assert spec["title"] == "T" and len(spec["layer"]) == 2
    enc = spec["layer"][0]["encoding"]
    assert enc["x"]["field"] == "tokens_seen" and enc["color"]["field"] == "run"
    assert enc["color"]["scale"]["domain"] == ["mlm", "taco"]
    assert (enc["x"]["scale"].get("type") == "symlog") is log_x
    if log_x:
        assert enc["x"]["axis"]["values"] == charts.log_ticks(10000) == [0, 1, 10, 100, 1000, 10000]


def test_metric_lines_by_bin_orders_bins_and_dashes_runs() -> None:
    df = _metric(variants=("rare", "frequent", "medium"))
    spec = _spec(charts.metric_lines(df, color="variant", dash="run"))
    line = spec["layer"][0]["encoding"]
    assert line["color"]["scale"]["domain"] == ["frequent", "medium", "rare"]
    assert line["strokeDash"]["field"] == "run"


def test_layer_grid_facets_by_layer() -> None:
    spec = _spec(charts.layer_grid(_metric(layers=13), log_x=True, title="every layer"))
    assert spec["facet"]["field"] == "layer" and spec["columns"] == 4 and spec["title"] == "every layer"
    assert "data" in spec and "data" not in spec["spec"]  # the facet filters the data for each panel


def test_difference_lines_and_diverging_heatmap() -> None:
    diff = pd.DataFrame({"step": [0, 1, 2], "tokens_seen": [0, 10, 20], "layer": 1, "variant": "all",
                         "a": [1.0, 2.0, 3.0], "b": [1.0, 1.0, 4.0], "value": [0.0, 1.0, -1.0]})
    spec = _spec(charts.difference_lines(diff, title="a − b"))
    assert spec["title"] == "a − b" and any(e.get("y", {}).get("field") == "zero" for e in _encodings(spec))
    heat = _spec(charts.heatmap(diff, x="step", y="layer", diverging=True))
    assert heat["encoding"]["color"]["scale"]["domainMid"] == 0
    assert heat["encoding"]["y"]["sort"] == "descending"  # the last layer on top
    assert heat["autosize"]["type"] == "pad" and heat["width"]["step"] >= 6


def test_heatmaps_fixed_domain_and_grid() -> None:
    n = 5
    df = pd.DataFrame([(layer, a, b, 1 - abs(a - b) / 10) for layer in range(3) for a in range(n) for b in range(n)],
                      columns=["layer", "step_a", "step_b", "value"])
    one = _spec(charts.heatmap(df[df["layer"] == 0], x="step_a", y="step_b", domain=(0.0, 1.0)))
    assert one["encoding"]["color"]["scale"]["domain"] == [0.0, 1.0]
    grid = _spec(charts.heatmap_grid(df, x="step_a", y="step_b"))
    assert grid["facet"]["field"] == "layer" and grid["spec"]["mark"]["type"] == "rect"


def test_distance_lines_colour_steps_panel_per_run() -> None:
    df = _metric(variants=("d001", "d002"))
    df["distance"] = df["variant"].str[1:].astype(int)
    spec = _spec(charts.distance_lines(df))
    enc = _encodings(spec)[0]
    assert enc["x"]["field"] == "distance" and enc["color"]["field"] == "step"
    assert spec["facet"]["column"]["field"] == "run"


def test_training_curves_panel_per_quantity() -> None:
    df = pd.DataFrame({"run": "a", "split": ["train", "train", "validation", "train"], "step": [1, 2, 2, 2],
                       "tokens_seen": [10, 20, 20, 20], "quantity": ["loss", "loss", "loss", "lr"],
                       "value": [5.0, 4.0, 4.5, 0.0]})
    spec = _spec(charts.training_curves(df, log_y=False))
    assert spec["facet"]["field"] == "quantity_title" and spec["resolve"]["scale"]["y"] == "independent"
    assert spec["facet"]["sort"] == ["Loss", "Learning rate"]
    logged = _spec(charts.training_curves(df, log_y=True))
    data = next(iter(logged["datasets"].values()))
    assert all(row["value"] > 0 for row in data)  # lr = 0 cannot be drawn on a log axis


@pytest.mark.parametrize("colour", ["sequence", "freq_bin"])
def test_projection_scatter_and_grid(colour: str) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=30), "y": rng.normal(size=30), "token": [f"t{i}" for i in range(30)],
                       "sequence": np.arange(30) // 10, "freq_bin": ["rare", "frequent", "medium"] * 10,
                       "point": np.arange(30), "step": np.arange(30) % 2})
    spec = _spec(charts.projection_scatter(df, color_by=colour, title="p", x_title="PC 1 (30%)"))
    assert spec["encoding"]["color"]["field"] == colour and spec["encoding"]["x"]["title"] == "PC 1 (30%)"
    assert {t["field"] for t in spec["encoding"]["tooltip"]} >= {"token", "sequence", "freq_bin"}
    grid = _spec(charts.projection_grid(df, color_by=colour))
    assert grid["facet"]["field"] == "step" and grid["resolve"]["scale"]["x"] == "independent"


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_export_renders_files(fmt: str) -> None:
    from app import ui

    if not ui.can_export():
        pytest.skip("vl-convert-python is not installed: the app offers the Vega-Lite spec instead")
    out = ui.export(charts.metric_lines(_metric(), title="exported"), fmt)()
    if fmt == "svg":
        assert isinstance(out, str) and out.lstrip().startswith("<svg") and "exported" in out
    else:
        assert isinstance(out, bytes) and out.startswith(b"\x89PNG") and len(out) > 5000
