"""The metric registry: one name, one function; binding by input name; docs/metrics.md's table is the registry's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dynamics.metrics import registry

REPO = Path(__file__).resolve().parents[2]


def test_registry_lists_every_family_with_documented_functions() -> None:
    reg = registry.load()
    assert len(reg) >= 37 and {m.family for m in reg.values()} == set(registry.FAMILIES)
    for m in reg.values():
        assert m.fn.__doc__ and m.unit and m.label and m.definition.endswith(".")
        assert set(m.parameters) <= set(registry.INPUTS)
        assert m.pointer.startswith("dynamics.metrics.") and m.pointer.endswith(m.fn.__name__)
    assert [m.family for m in reg.values()] == sorted((m.family for m in reg.values()), key=registry.FAMILIES.index)


def test_register_rejects_a_second_function_for_one_name_and_unknown_inputs() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register("anisotropy", family="geometry", layers=registry.ALL_LAYERS, label="x",
                          definition="x.", unit="u")(lambda h: 0.0)
    with pytest.raises(ValueError, match="not probe inputs"):
        registry.register("brand_new", family="geometry", layers=registry.ALL_LAYERS, label="x",
                          definition="x.", unit="u")(lambda hidden_states: 0.0)
    with pytest.raises(ValueError, match="unknown family"):
        registry.register("brand_new", family="nope", layers=registry.ALL_LAYERS, label="x", definition="x.",
                          unit="u")
    assert "brand_new" not in registry.REGISTRY


def test_a_metric_binds_its_inputs_by_name_and_is_skipped_when_one_is_none() -> None:
    def fn(h, seq_ids, scale=2.0):  # noqa: ANN001, ANN202 - a toy registered function
        """h and seq_ids from the inputs; scale keeps its default."""
        return (h + seq_ids) * scale

    m = registry.Metric("toy", "geometry", "layer", registry.ALL_LAYERS, ("all",), "Toy", "Toy.", "u", fn)
    assert m.parameters == ["h", "seq_ids"]
    assert m({"h": 1.0, "seq_ids": 2.0, "g": None}) == 6.0
    assert m.applicable({"h": 1.0, "seq_ids": 2.0}) and not m.applicable({"h": None, "seq_ids": 2.0})


def test_get_names_the_known_metrics_for_an_unknown_one() -> None:
    assert registry.get("tc_loss").family == "context"
    with pytest.raises(KeyError, match="anisotropy"):
        registry.get("anisotropy_typo")


def test_metrics_table_is_generated_from_the_registry() -> None:
    text = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- metrics-table:start -->\n(.*?)<!-- metrics-table:end -->", text, re.S)
    assert found, "docs/metrics.md lost its metrics-table markers"
    assert found.group(1) == registry.markdown_table(), "regenerate it: python -m dynamics.metrics"
