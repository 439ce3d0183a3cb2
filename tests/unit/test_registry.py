"""The metric registry: each stored name leads to the one function that computes it (named after it, or computing
it with the names it shares work with), shown on one app page; binding by input name; docs/metrics.md's table is
the registry's."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import numpy as np
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
        assert m.page in registry.PAGES
    assert [m.family for m in reg.values()] == sorted((m.family for m in reg.values()), key=registry.FAMILIES.index)


def test_register_rejects_a_second_function_for_one_name_and_unknown_inputs() -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register("anisotropy", family="geometry", page="geometry", layers=registry.ALL_LAYERS, label="x",
                          definition="x.", unit="u")(lambda h: 0.0)
    with pytest.raises(ValueError, match="not probe inputs"):
        registry.register("brand_new", family="geometry", page="geometry", layers=registry.ALL_LAYERS, label="x",
                          definition="x.", unit="u")(lambda hidden_states: 0.0)
    with pytest.raises(ValueError, match="unknown family"):
        registry.register("brand_new", family="nope", page="geometry", layers=registry.ALL_LAYERS, label="x",
                          definition="x.", unit="u")
    with pytest.raises(ValueError, match="unknown page"):
        registry.register("brand_new", family="geometry", page="nope", layers=registry.ALL_LAYERS, label="x",
                          definition="x.", unit="u")
    assert "brand_new" not in registry.REGISTRY


def test_names_computed_together_need_one_family_scope_and_layers() -> None:
    from dynamics.metrics import geometry

    with pytest.raises(ValueError, match="computes"):
        registry.register("anisotropy_elsewhere", family="geometry", page="geometry", layers=registry.LAST_LAYER,
                          label="x", definition="x.", unit="u")(geometry.anisotropy)
    assert "anisotropy_elsewhere" not in registry.REGISTRY


def test_every_page_is_an_app_page_and_the_families_keep_theirs() -> None:
    for page in registry.PAGES:
        assert (REPO / "app" / "views" / f"{page}.py").is_file(), page
    pages = {(m.family, m.scope): m.page for m in registry.load().values()}
    assert pages == {("anchors", "layer"): "anchors", ("drift", "snapshot"): "anchors", ("context", "layer"): "context",
                     ("geometry", "layer"): "geometry", ("ln_outliers", "series"): "geometry",
                     ("geometry", "layer_pair"): "cka", ("cka_steps", "series"): "cka",
                     ("acquisition", "series"): "acquisition", ("llc", "snapshot"): "seeds",
                     ("agreement", "group"): "seeds",
                     ("attention", "layer"): "attention", ("copying", "layer"): "attention"}


def test_a_stored_name_leads_to_the_one_function_that_computes_it() -> None:
    reg = registry.load()
    together: dict[object, list[str]] = {}
    for m in reg.values():
        together.setdefault(m.fn, []).append(m.name)
    for fn, names in together.items():
        if len(names) == 1:
            assert fn.__name__ == names[0], f"{names[0]} is computed by {fn.__qualname__}"
        assert fn.__name__ not in reg or fn.__name__ in names
    # no other function of the metric modules bears a stored name (a `uniformity` that is not the stored one)
    for module in {m.module for m in reg.values()}:
        for name, obj in vars(importlib.import_module(module)).items():
            if name in reg and inspect.isfunction(obj):
                assert obj is reg[name].fn, f"{module}.{name} is not the function that computes {name}"


def test_computations_list_each_function_once_with_its_names_in_written_order() -> None:
    comps = registry.computations("geometry")
    assert len({c.fn for c in comps}) == len(comps)
    assert [n for c in comps for n in c.names] == [m.name for m in registry.metrics("geometry", "layer")]
    by_name = {c.fn.__name__: c.names for c in comps}
    assert by_name["mev"] == ("mev", "mev_adj", "mev_adj_pc1")
    assert by_name["rogue_shares"] == ("rogue_top1_share", "rogue_top3_share")
    assert by_name["anisotropy"] == ("anisotropy",)
    assert [c.names for c in registry.computations("drift", "snapshot")] == [("anchor_drift", "anchor_drift_probe")]


def test_a_function_of_several_names_returns_each_once_and_a_metric_reads_its_own() -> None:
    def toy(h):  # noqa: ANN001, ANN202 - a toy function computing two names
        """{"a": h, "b": 2h}."""
        return {"a": h, "b": 2 * h}

    ms = tuple(registry.Metric(n, "geometry", "layer", registry.ALL_LAYERS, ("all",), n, "x.", "u", toy, "geometry")
               for n in ("a", "b"))
    assert registry.Computation(toy, ms)({"h": 3.0}) == {"a": 3.0, "b": 6.0}
    with pytest.raises(TypeError, match="computes"):
        registry.Computation(toy, ms[:1] + (ms[0],))({"h": 3.0})
    mev = registry.get("mev_adj")
    assert mev.together == ("mev", "mev_adj", "mev_adj_pc1")
    x = np.random.default_rng(0).normal(size=(40, 6)) + 1.0
    types = np.repeat(np.arange(8), 5)
    inputs = {"h": x, "word_type": types}
    assert mev(inputs) == registry.get("mev").fn(x, types)["mev_adj"]


def test_a_metric_binds_its_inputs_by_name_and_is_skipped_when_one_is_none() -> None:
    def fn(h, seq_ids, scale=2.0):  # noqa: ANN001, ANN202 - a toy registered function
        """h and seq_ids from the inputs; scale keeps its default."""
        return (h + seq_ids) * scale

    m = registry.Metric("toy", "geometry", "layer", registry.ALL_LAYERS, ("all",), "Toy", "Toy.", "u", fn, "geometry")
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
