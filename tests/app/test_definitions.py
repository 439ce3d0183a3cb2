"""Every metric the app names points at a real docstring, and the variant helpers read the probe's names."""

from __future__ import annotations

import importlib

import pytest

from app import definitions as d


def _resolve(pointer: str) -> object:
    module, _, name = pointer.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("metric", sorted(d.METRICS))
def test_pointer_names_a_documented_function(metric: str) -> None:
    m = d.METRICS[metric]
    target = _resolve(m.pointer)
    assert callable(target) and (target.__doc__ or "").strip(), m.pointer
    assert m.definition.endswith(".") and "\n" not in m.definition and m.label


def test_every_metric_of_the_probe_is_known() -> None:
    """The families' module docstring lists the stored metric names; each has a definition here."""
    import re

    doc = importlib.import_module("dynamics.families").__doc__ or ""
    not_metrics = {"_adj", "anchors", "cka_layers", "cka_sample", "cka_steps", "context", "drift", "geometry",
                   "metrics", "projection", "variant",
                   # keys inside the projection arrays, not metric rows
                   "xy", "xy_e", "xy_g", "explained", "explained_e", "explained_g"}
    named = set(re.findall(r"`([a-z_]+)`", doc)) - not_metrics
    assert len(named) > 30 and not sorted(named - set(d.METRICS))
    for fam, pointer in d.FAMILY_POINTERS.items():
        assert _resolve(pointer).__doc__, fam


def test_describe_unknown_metric_and_helpers() -> None:
    new = d.describe("brand_new_metric", "geometry")
    assert new.label == "brand new metric" and new.pointer == "dynamics.families.geometry"
    assert d.describe("anisotropy").pointer == "dynamics.metrics.geometry.anisotropy"
    assert d.family_of("tc_loss") == "context" and d.family_of("anchor_drift") == "drift"
    assert d.family_of("nope") is None
    assert d.distance("d012") == 12 and d.distance("all") is None
    assert d.is_bin("rare") and d.is_bin("bin3") and not d.is_bin("d001") and not d.is_bin("all")
    assert sorted(["zzz", "anisotropy", "anchor_sim_word"], key=d.order_key) == [
        "anchor_sim_word", "anisotropy", "zzz"]
    assert {p.key for p in d.PAGES.values()} == {"anchors", "context", "geometry"}
