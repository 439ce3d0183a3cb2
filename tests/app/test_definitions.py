"""The app's metric definitions come from the metric registry, so every pointer names the function that computed
the stored value; the variant helpers read the probe's names."""

from __future__ import annotations

import importlib

import pytest

from app import definitions as d
from dynamics.metrics import registry


def _resolve(pointer: str) -> object:
    module, _, name = pointer.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("metric", sorted(registry.load()))
def test_pointer_is_the_registered_function(metric: str) -> None:
    m, reg = d.METRICS[metric], registry.get(metric)
    assert _resolve(m.pointer) is reg.fn  # the function the probe calls for this name, not a look-alike
    assert (reg.fn.__doc__ or "").strip() and m.label == reg.label and m.definition == reg.definition
    assert m.definition.endswith(".") and "\n" not in m.definition and m.label and m.unit
    assert d.family_of(metric) == reg.family


def test_the_app_knows_exactly_the_registered_metrics() -> None:
    assert set(d.METRICS) == set(registry.load()) and len(d.METRICS) >= 37
    assert set(d.CKA_METRICS) == {"cka_prev_snapshot", "cka_final", "cka_prev_layer"}
    for fam, pointer in d.FAMILY_POINTERS.items():
        assert importlib.import_module(pointer).__doc__, fam


def test_describe_unknown_metric_and_helpers() -> None:
    new = d.describe("brand_new_metric", "geometry")
    assert new.label == "brand new metric" and new.pointer == "dynamics.metrics.geometry"
    assert d.describe("anisotropy").pointer == "dynamics.metrics.geometry.anisotropy"
    assert d.describe("norm_g").pointer == "dynamics.metrics.geometry.norm_g"
    assert d.family_of("tc_loss") == "context" and d.family_of("anchor_drift") == "drift"
    assert d.family_of("nope") is None
    assert d.distance("d012") == 12 and d.distance("all") is None
    assert d.is_bin("rare") and d.is_bin("bin3") and not d.is_bin("d001") and not d.is_bin("all")
    assert sorted(["zzz", "anisotropy", "anchor_sim_word"], key=d.order_key) == [
        "anchor_sim_word", "anisotropy", "zzz"]
    assert {p.key for p in d.PAGES.values()} == {"anchors", "context", "geometry"}
