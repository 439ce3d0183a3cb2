"""The engine's one rule for every scope (`dynamics.measure.engine`): an input that is None → no row; a ValueError →
one NULL row per name the function computes, with one note per name; values become rows per variant, and a
per-step run-level metric becomes rows at each measured step."""

from __future__ import annotations

import numpy as np
import pytest

from dynamics.measure import engine
from dynamics.metrics import registry
from dynamics.metrics.rogue import ln_outlier_persistence


def _computation(fn, *names: str) -> registry.Computation:
    metrics = tuple(registry.Metric(name=name, family="geometry", scope="layer", layers=registry.ALL_LAYERS,
                                    variants=("all",), label=name, definition="x.", unit="u", fn=fn, page="geometry")
                    for name in names)
    return registry.Computation(fn, metrics)


def test_an_input_that_is_none_stores_no_row() -> None:
    def needs_g(g: np.ndarray) -> float:
        return float(np.sum(g))

    out = engine.Collector()
    assert out.evaluate(_computation(needs_g, "a"), {"g": None}) is None
    assert out.rows == [] and out.notes == []


def test_a_value_error_stores_null_for_every_name_with_a_note_each() -> None:
    def pair(h: np.ndarray) -> dict[str, float]:
        raise ValueError("no word type occurs twice")

    out = engine.Collector()
    values = out.evaluate(_computation(pair, "a", "a_adj"), {"h": np.zeros(3)})
    assert values == {"a": None, "a_adj": None}
    for name, value in values.items():
        out.put(4, name, value)
    assert out.rows == [(4, "a", "all", None), (4, "a_adj", "all", None)]
    assert out.notes == ["a undefined: no word type occurs twice", "a_adj undefined: no word type occurs twice"]


def test_values_become_rows_per_variant_and_several_names_come_from_one_call() -> None:
    calls = []

    def both(h: np.ndarray) -> dict[str, object]:
        calls.append(1)
        return {"b": 0.5, "c": {"all": 1.0, "rare": None}}

    out = engine.Collector()
    for name, value in out.evaluate(_computation(both, "b", "c"), {"h": np.ones(2)}).items():
        out.put(0, name, value)
    assert calls == [1]
    assert out.rows == [(0, "b", "all", 0.5), (0, "c", "all", 1.0), (0, "c", "rare", None)]


def test_per_step_rows_by_the_registered_series_metric() -> None:
    """`ln_outlier_persistence` at layer 0 (masks given) and not at layer 1 (no LayerNorm there: None)."""
    masks = np.array([[1, 0, 0, 1], [1, 1, 0, 0], [0, 1, 0, 1]], dtype=bool)
    out = engine.Collector()
    rows = engine.per_step_rows("ln_outliers", {0: {"outlier_masks": masks}, 1: {"outlier_masks": None}}, 1, 3, out)
    expected = ln_outlier_persistence(masks)  # {k: |O_k ∩ O_last| / |O_last|}
    assert expected == {0: 0.5, 1: 0.5, 2: 1.0}
    assert rows == {k: [(0, "ln_outlier_persistence", "all", pytest.approx(v))] for k, v in expected.items()}


def test_family_params_are_sorted_and_versioned() -> None:
    assert engine.family_params("x", b=2, a="s") == f"{engine.PARAMS_VERSION};a=s;b=2"
