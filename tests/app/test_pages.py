"""Every page through `streamlit.testing.v1.AppTest`: it renders on a real probed store, its selectors change what is
shown, and it says what is wrong (never a traceback) for empty folders, older, broken and half-written stores."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from dynamics.metrics import registry
from tests.app.conftest import PAGES, TITLES
from tests.app.helpers import assert_clean, charts, texts
from tests.app.synthetic import PROBE_HASH, TOKENS_PER_STEP, write_store

EMPTY_COMMANDS = ("python -m taco.train", "python -m dynamics.probe runs/mlm-mini runs/taco-mini --out runs/dynamics",
                  "make demo")


def _downloads(at: object) -> list[str]:
    return [b.proto.label for b in at.get("download_button")]  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------- real probed store

@pytest.mark.parametrize("page", PAGES)
def test_page_renders_on_the_probed_store(make_app, probed_root: Path, page: str) -> None:
    at = make_app(probed_root, page=page)
    assert_clean(at)
    assert at.title[0].value == TITLES[page]
    drawn = charts(at)
    assert drawn, "no chart"
    assert all(not df.empty for _, df, _ in drawn)
    labels = _downloads(at)
    assert labels.count("CSV") >= len(drawn) and ("SVG" in labels or "Vega-Lite" in labels)
    if page != "overview":  # downstream scores are defined by the evaluation's scoring functions
        assert f"Defined in `{'experiments' if page == 'downstream' else 'dynamics'}." in texts(at)


def test_overview_lists_runs_results_and_runs_without_results(make_app, probed_root: Path) -> None:
    at = make_app(probed_root)
    table = at.dataframe[0].value
    assert list(table["run"]) == ["mlm-tiny", "taco-tiny", "orphan-mlm"]
    assert list(table["objective"]) == ["mlm", "taco", "mlm"] and list(table["snapshots"]) == [4, 3, 1]
    assert table["probe hash" if "probe hash" in table else "probe_hash"].notna().tolist() == [True, True, False]
    text = texts(at)
    assert "1 run(s) without results" in text and "orphan-mlm" in text
    assert "Not logged by these runs" in text  # the tiny runs log the loss only
    (title, df, spec), = charts(at)
    assert set(df["run"]) == {"mlm-tiny", "taco-tiny", "orphan-mlm"} and set(df["quantity"]) == {"loss"}
    stores = at.dataframe[1].value
    assert stores["status"].tolist() == ["ok"] and stores["runs"].tolist() == [2]


def test_every_stored_metric_has_a_definition(probed_root: Path) -> None:
    from app.data import stamps, store_tables

    db = str(probed_root / "dynamics" / "results.sqlite")
    stamp = stamps.stamp(db)
    assert set(store_tables.metric_catalog(db, stamp)["metric"]) <= set(store_tables.definitions(db, stamp))


def test_metric_and_layer_selectors_change_the_chart(make_app, probed_root: Path) -> None:
    at = make_app(probed_root, page="geometry")
    title, df, _ = charts(at)[0]
    assert title == "Anisotropy, layer 2" and set(df["layer"]) == {2}
    at.selectbox(key="geometry:metric").set_value("rankme").run()
    assert_clean(at)
    title, ranks, _ = charts(at)[0]
    pointer = registry.get("rankme").pointer  # the registered function, as stored with the definitions
    assert title == "Effective rank (RankMe), layer 2" and f"`{pointer}`" in texts(at)
    assert ranks["value"].min() > 1  # an effective rank, not a cosine
    at.select_slider(key="geometry:layer").set_value(0).run()
    title, df0, _ = charts(at)[0]
    assert title == "Effective rank (RankMe), layer 0" and set(df0["layer"]) == {0}
    assert sorted(df0["value"]) != sorted(ranks["value"])
    grid = charts(at)[1]
    assert grid[0] == "Effective rank (RankMe), every layer" and set(grid[1]["layer"]) == {0, 1, 2}


def test_runs_selector_and_difference_view(make_app, probed_root: Path) -> None:
    at = make_app(probed_root, page="anchors")
    by_title = {t: df for t, df, _ in charts(at)}
    diff = by_title["mlm-tiny − taco-tiny, layer 2"]
    assert sorted(diff["step"].dropna().unique()) == [0, 2]  # the steps both runs measured
    a = diff[diff["step"] == 2]
    assert (a["value"] == a["a"] - a["b"]).all()
    at.selectbox(key="anchors:diff-a").set_value("taco-tiny").run()
    at.selectbox(key="anchors:diff-b").set_value("mlm-tiny").run()
    swapped = {t: df for t, df, _ in charts(at)}["taco-tiny − mlm-tiny, layer 2"]
    assert swapped[swapped["step"] == 2]["value"].tolist() == pytest.approx((-a["value"]).tolist())
    at.multiselect(key="anchors:runs").set_value(["mlm-tiny"]).run()
    assert_clean(at)
    assert {frozenset(df["run"].dropna()) for t, df, _ in charts(at) if "run" in df} == {frozenset({"mlm-tiny"})}
    assert "Select two runs to see their difference." in texts(at)


def test_frequency_bins_and_masked_metric_at_the_last_layer(make_app, probed_root: Path) -> None:
    at = make_app(probed_root, page="anchors")
    bins = {t: df for t, df, _ in charts(at)}["Anchor similarity (word embedding) by frequency bin, layer 2"]
    assert set(bins["variant"]) == {"frequent", "medium", "rare"}
    at.selectbox(key="anchors:metric").set_value("masked_accuracy").run()
    assert_clean(at)
    assert "Stored at layer 2 only." in texts(at) and charts(at)[0][0] == "Masked-token accuracy, layer 2"


def test_sidebar_x_axis_and_scale(make_app, probed_root: Path) -> None:
    at = make_app(probed_root, page="context")
    x = charts(at)[0][2]["layer"][0]["encoding"]["x"]
    assert x["field"] == "step" and x["scale"]["type"] == "symlog"
    at.sidebar.radio(key="ctx:x").set_value("tokens_seen")
    at.sidebar.toggle(key="ctx:log_x").set_value(False).run()
    x = charts(at)[0][2]["layer"][0]["encoding"]["x"]
    assert x["field"] == "tokens_seen" and "type" not in x["scale"]


def test_distance_breakdown(make_app, probed_root: Path) -> None:
    at = make_app(probed_root, page="context")
    at.selectbox(key="context:metric").set_value("ctx_cos_by_distance").run()
    assert_clean(at)
    titles = [t for t, _, _ in charts(at)]
    assert titles[0] == "Context cosine by distance (d001), layer 2"
    curves = {t: df for t, df, _ in charts(at)}["Context cosine by distance, layer 2"]
    assert curves["distance"].min() == 1 and 2 < curves["distance"].max() <= 16  # --max-distance 16
    at.select_slider(key="context:distance-pick").set_value("d004").run()
    assert charts(at)[0][0] == "Context cosine by distance (d004), layer 2"


def test_cka_selectors(make_app, probed_root: Path) -> None:
    at = make_app(probed_root, page="cka")
    titles = [t for t, _, _ in charts(at)]
    assert titles[:2] == ["mlm-tiny: layer 2, step × step (debiased)", "mlm-tiny: step 4, layer × layer (debiased)"]
    steps = charts(at)[0][1]
    assert sorted(steps["step_a"].unique()) == [0, 1, 2, 4]
    at.select_slider(key="cka:step:mlm-tiny").set_value(1).run()
    assert charts(at)[1][0] == "mlm-tiny: step 1, layer × layer (debiased)"
    at.selectbox(key="cka:run").set_value("taco-tiny").run()
    at.radio(key="cka:variant").set_value("biased").run()
    assert_clean(at)
    titles = [t for t, _, _ in charts(at)]
    assert titles[:2] == ["taco-tiny: layer 2, step × step (biased)", "taco-tiny: step 3, layer × layer (debiased)"]
    assert "debiased only" in texts(at)
    at.toggle(key="cka:steps-grid").set_value(True).run()
    assert "taco-tiny: step × step, every layer" in [t for t, _, _ in charts(at)]


def test_token_explorer_selectors(make_app, probed_root: Path) -> None:
    at = make_app(probed_root, page="tokens")
    title, df, spec = charts(at)[0]
    assert title == "mlm-tiny: h at layer 2, step 4" and spec["encoding"]["color"]["field"] == "sequence"
    assert {"token", "sequence", "freq_bin"} <= set(df.columns) and df["token"].str.len().gt(0).all()
    at.radio(key="tokens:colour").set_value("freq_bin")
    at.select_slider(key="tokens:step:mlm-tiny").set_value(0).run()
    title, _, spec = charts(at)[0]
    assert title == "mlm-tiny: h at layer 2, step 0" and spec["encoding"]["color"]["field"] == "freq_bin"
    at.radio(key="tokens:view").set_value("e").run()
    assert charts(at)[0][0] == "mlm-tiny: e at layer 0, step 0"
    at.radio(key="tokens:view").set_value("g").run()  # the probe stores g = h − e for layers 1…L
    assert_clean(at)
    assert charts(at)[0][0] == "mlm-tiny: g at layer 2, step 0"
    at.toggle(key="tokens:grid").set_value(True).run()
    grid = charts(at)[-1][1]
    assert sorted(grid["step"].unique()) == [0, 1, 2, 4]


def test_token_explorer_shows_g_where_stored(make_app, synthetic_root: Path) -> None:
    at = make_app(synthetic_root, page="tokens")
    at.radio(key="tokens:view").set_value("g").run()
    assert_clean(at)
    title, df, _ = charts(at)[0]
    assert title == "mlm-syn: g at layer 2, step 16" and len(df) == 60


# ------------------------------------------------------------------------------------------ what users have

@pytest.mark.parametrize("page", PAGES)
def test_empty_state(make_app, tmp_path: Path, page: str) -> None:
    at = make_app(tmp_path / "nothing-here", page=page)
    assert_clean(at)
    text = texts(at)
    assert "No runs" in text and all(c in text for c in EMPTY_COMMANDS)
    assert not charts(at)


def test_runs_without_any_results(make_app, probed_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "only-run"
    shutil.copytree(probed_root / "orphan-mlm", run)
    at = make_app(tmp_path / "runs")
    assert_clean(at)
    assert list(at.dataframe[0].value["run"]) == ["only-run"] and "without results" in texts(at)
    at.switch_page("views/geometry.py").run()
    assert_clean(at)
    assert "No results stores found" in texts(at) and "only-run" in texts(at)


@pytest.mark.parametrize("page", PAGES)
def test_store_from_an_older_probe(make_app, probed_root: Path, tmp_path: Path, page: str) -> None:
    root = tmp_path / "old"
    shutil.copytree(probed_root / "dynamics", root / "dynamics")
    with sqlite3.connect(root / "dynamics" / "results.sqlite") as conn:
        conn.executescript("UPDATE meta SET value = '1' WHERE key = 'schema_version'; DROP TABLE definitions; "
                           "DROP TABLE arrays; DROP TABLE notes; DROP INDEX metrics_by_family;")
    at = make_app(root, page=page)
    assert_clean(at)
    text = texts(at)
    if page != "overview":
        assert "older probe" in text and "no `arrays` table" in text
    if page in ("anchors", "context", "geometry"):
        assert charts(at)  # metric rows are still there, on their families' pages
        assert "No definition of it is stored" in text  # labelled by their names
    if page in ("cka", "tokens"):
        assert "No step × step CKA" in text or "No projections" in text


@pytest.mark.parametrize("page", PAGES)
def test_broken_store_gives_a_message(make_app, tmp_path: Path, page: str) -> None:
    (tmp_path / "dynamics").mkdir()
    (tmp_path / "dynamics" / "results.sqlite").write_bytes(b"garbage, not SQLite " * 200)
    at = make_app(tmp_path, page=page)
    assert not at.exception
    text = texts(at) + "".join(str(v) for v in at.dataframe[-1].value["status"]) if page == "overview" else texts(at)
    assert "cannot" in text and "results.sqlite" in text


def test_store_being_written(make_app, tmp_path: Path) -> None:
    """A probe mid-way: snapshots known but not all measured, a metric missing at some, then more rows arrive."""
    from dynamics.results import store as dstore

    db = write_store(tmp_path, steps=[0, 1, 2], n_metrics=20, projection_tokens=0,
                     skip=lambda run, step, metric: metric == "anisotropy" and step == 1)
    with dstore.open(db) as s:
        s.upsert_snapshots([("mlm-syn", 4, 4 * TOKENS_PER_STEP, "x", {})])  # discovered, not measured yet
    at = make_app(tmp_path, page="geometry")
    assert_clean(at)
    assert "no value at 1 of 3 measured snapshots (steps 1)" in texts(at)
    assert sorted(charts(at)[0][1].query("run == 'mlm-syn'")["step"]) == [0, 2]
    with dstore.open(db) as writer:  # the probe writes the next snapshot while the app is open
        writer.write_family(run="mlm-syn", step=4, tokens_seen=4 * TOKENS_PER_STEP, family="geometry",
                            probe_hash=PROBE_HASH, params="x",
                            result=dstore.FamilyResult([(layer, "anisotropy", "all", 0.9) for layer in range(3)],
                                                       {}, []))
        at.run()
    assert_clean(at)
    assert sorted(charts(at)[0][1].query("run == 'mlm-syn'")["step"]) == [0, 2, 4]
