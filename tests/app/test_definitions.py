"""The app's metric definitions come from the store it shows (the registry's, written by
`dynamics.results.store.Store.write_definitions`), so every pointer names the function that computed the stored value and
the app imports no metric module; a metric without a stored definition is labelled by its name on its family's
page; the variant helpers read the probe's names."""

from __future__ import annotations

import importlib
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app import definitions as d
from app.data import stamps, store_tables
from dynamics.metrics import registry

REPO = Path(__file__).resolve().parents[2]


def _resolve(pointer: str) -> object:
    module, _, name = pointer.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.fixture(scope="module")
def db(synthetic_root: Path) -> str:
    return str(synthetic_root / "dynamics" / "results.sqlite")


@pytest.fixture(scope="module")
def defs(db: str) -> d.Definitions:
    return store_tables.definitions(db, stamps.stamp(db))


def test_the_store_describes_exactly_the_registered_metrics(defs: d.Definitions) -> None:
    reg = registry.load()
    assert list(defs) == list(reg) and len(defs) >= 37  # in registry order
    for name, m in defs.items():
        fn = reg[name].fn
        assert _resolve(m.pointer) is fn  # the function the probe calls for this name, not a look-alike
        assert (fn.__doc__ or "").strip() and m.label == reg[name].label and m.definition == reg[name].definition
        assert m.definition.endswith(".") and "\n" not in m.definition and m.label and m.unit == reg[name].unit
        assert (m.family, m.scope) == (reg[name].family, reg[name].scope)
        assert m.page in {*d.PAGES, "cka", "acquisition", "seeds"}


def test_pages_and_order_come_from_the_store(db: str, defs: d.Definitions) -> None:
    cat = store_tables.metric_catalog(db, stamps.stamp(db))
    pages = dict(zip(cat["metric"], cat["page"], strict=False))
    assert pages["anisotropy"] == "geometry" and pages["anchor_drift"] == "anchors" and pages["tc_loss"] == "context"
    assert defs["cka_final"].page == "cka" and defs["aoa_median"].page == "acquisition"
    assert sorted(["zzz", "anisotropy", "anchor_sim_word"], key=lambda m: d.order_key(m, defs)) == [
        "anchor_sim_word", "anisotropy", "zzz"]
    assert d.describe("anisotropy", "geometry", defs).pointer == "dynamics.metrics.geometry.anisotropy"
    assert d.page_of("anisotropy", "geometry", {"anisotropy": d.MetricDef("anisotropy", "A", "a.", "p", page="cka")})\
        == "cka"  # a stored page wins over the family's


def test_a_metric_without_a_stored_definition_is_labelled_by_its_name(db: str, tmp_path: Path) -> None:
    """A store without definitions (written before they were stored): each metric keeps its family's page, its name
    as the label and its family's module as the pointer."""
    root = tmp_path / "nodefs"
    shutil.copytree(Path(db).parent, root)
    with sqlite3.connect(root / "results.sqlite") as conn:
        conn.executescript("PRAGMA wal_checkpoint(TRUNCATE); DELETE FROM definitions;")
    old = str(root / "results.sqlite")
    assert store_tables.definitions(old, stamps.stamp(old)) == {}
    cat = store_tables.metric_catalog(old, stamps.stamp(old))
    assert dict(zip(cat["metric"], cat["page"], strict=False))["anisotropy"] == "geometry"
    new = d.describe("brand_new_metric", "geometry", {})
    assert new.label == "brand new metric" and new.pointer == "dynamics.metrics.geometry" and new.page == "geometry"
    assert d.describe("norm_g").label == "norm g"


def test_variant_helpers() -> None:
    assert d.distance("d012") == 12 and d.distance("all") is None
    assert d.is_bin("rare") and d.is_bin("bin3") and not d.is_bin("d001") and not d.is_bin("all")
    assert {p.key for p in d.PAGES.values()} == {"anchors", "context", "geometry", "attention"}
    for fam, pointer in d.FAMILY_POINTERS.items():
        assert importlib.import_module(pointer).__doc__, fam


# Every module of the app that labels or places a metric curve.
LABELLING = ("app.definitions", "app.metric_page", "app.ui", "app.charts", "app.data.store_tables",
             "app.data.store_arrays", "app.data.downstream", "app.data.seed_groups", "app.data.runs_table")


def test_the_app_labels_curves_without_importing_a_metric_module() -> None:
    code = ("import sys, importlib\n"
            f"for name in {LABELLING!r}: importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m == 'dynamics.metrics' or m.startswith('dynamics.metrics.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
