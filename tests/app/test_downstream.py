"""The Downstream page and its pieces: scores written by `experiments.results.store_result` (the evaluation's own
code path) into a synthetic store are read back, summarised, charted and shown; a store without them gets the
commands that produce them."""

from __future__ import annotations

import importlib
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app import charts
from app import definitions as d
from app.data import downstream, stamps, store_tables
from tests.app.helpers import assert_clean, texts
from tests.app.helpers import charts as drawn
from tests.app.synthetic import SEEDS, TOKENS_PER_STEP, downstream_value, write_downstream, write_store

STEPS = [0, 1, 2, 4, 8, 16]
RUNS = ["mlm-syn", "taco-syn"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic store (2 runs, 6 snapshots) with downstream rows: linear probe at layers 1 and 2 at every
    snapshot, fine-tuning (3 seeds) at the last two; tasks SST-2, MRPC, Rotten Tomatoes. Read-only."""
    root = tmp_path_factory.mktemp("app-downstream")
    db = write_store(root, steps=STEPS, n_metrics=8, projection_tokens=0)
    write_downstream(db, linear_layers=(1, 2))
    return root


@pytest.fixture(scope="module")
def db(root: Path) -> str:
    return str(root / "dynamics" / "results.sqlite")


@pytest.fixture(scope="module")
def rows(db: str) -> pd.DataFrame:
    return downstream.downstream_rows(db, stamps.stamp(db))


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


def _ft_score(run_index: int, step: int, task: str, names: tuple[str, ...]) -> float:
    """The fine-tuning score (mean over seeds of the mean over the task's metrics) as `downstream_value` makes it."""
    return _mean([_mean([downstream_value(run_index, step, task, n, seed=k) for n in names]) for k in SEEDS])


# -------------------------------------------------------------------------------------------------------- data

def test_rows_are_the_stored_downstream_rows_split(rows: pd.DataFrame) -> None:
    assert list(rows.columns) == downstream.DOWNSTREAM_COLUMNS
    assert set(rows["run"]) == set(RUNS) and set(rows["mode"]) == {"linear", "finetune"}
    assert set(rows["task"]) == {"sst2", "mrpc", "rotten_tomatoes", "glue"}
    assert set(rows[rows["task"] == "mrpc"]["name"]) == {"accuracy", "f1", "score"}
    assert set(rows[rows["task"] == "glue"]["name"]) == {"average"}
    linear, ft = rows[rows["mode"] == "linear"], rows[rows["mode"] == "finetune"]
    assert set(linear["layer"]) == {1, 2} and set(linear["stat"]) == {"mean"} and sorted(linear["step"].unique()) == STEPS
    assert set(ft["layer"]) == {-1} and set(ft["stat"]) == {"mean", "std", "seed1", "seed2", "seed3"}
    assert sorted(ft["step"].unique()) == [8, 16]
    one = rows.query("run == 'taco-syn' and step == 16 and mode == 'finetune' and task == 'mrpc' and name == 'f1' "
                     "and stat == 'seed3'")
    assert one["value"].tolist() == pytest.approx([downstream_value(1, 16, "mrpc", "f1", seed=3)])
    assert one["tokens_seen"].tolist() == [16 * TOKENS_PER_STEP]
    lin = rows.query("run == 'mlm-syn' and step == 4 and mode == 'linear' and layer == 1 and task == 'sst2' "
                     "and name == 'accuracy'")
    assert lin["value"].tolist() == pytest.approx([downstream_value(0, 4, "sst2", "accuracy", layer=1)])


def test_rows_ignore_the_probe_and_the_probe_ignores_them(db: str, rows: pd.DataFrame) -> None:
    catalog = store_tables.metric_catalog(db, stamps.stamp(db))
    assert "downstream" not in set(catalog["family"]) and not any("/" in m for m in catalog["metric"])
    assert not set(rows["name"]) & set(catalog["metric"])  # no probe metric read as a downstream one


def test_no_rows_in_a_store_without_downstream_scores(synthetic_root: Path) -> None:
    db = str(synthetic_root / "dynamics" / "results.sqlite")
    empty = downstream.downstream_rows(db, stamps.stamp(db))
    assert empty.empty and list(empty.columns) == downstream.DOWNSTREAM_COLUMNS
    assert downstream.downstream_series(empty, "linear", "sst2", "score", 2).empty
    assert downstream.score_table(downstream.downstream_final(empty, "linear", 2)).columns.tolist() == ["run", "step"]


def test_rows_of_an_older_store_without_the_family_column(db: str, rows: pd.DataFrame, tmp_path: Path) -> None:
    old = tmp_path / "results.sqlite"
    shutil.copy(db, old)
    with sqlite3.connect(old) as conn:
        conn.executescript("UPDATE meta SET value = '1' WHERE key = 'schema_version'; DROP TABLE definitions; "
                           "DROP INDEX metrics_by_family; ALTER TABLE metrics DROP COLUMN family;")
    again = downstream.downstream_rows(str(old), stamps.stamp(old))
    pd.testing.assert_frame_equal(again, rows)


def test_rows_follow_the_store_when_the_evaluation_writes(tmp_path: Path) -> None:
    db = write_store(tmp_path, steps=[0, 4], n_metrics=3, projection_tokens=0)
    assert downstream.downstream_rows(str(db), stamps.stamp(db)).empty
    write_downstream(db, finetune_steps=lambda run, steps: [])
    got = downstream.downstream_rows(str(db), stamps.stamp(db))
    assert set(got["mode"]) == {"linear"} and sorted(got["step"].unique()) == [0, 4]


def test_series_is_the_mean_with_the_seeds_spread(rows: pd.DataFrame) -> None:
    ft = downstream.downstream_series(rows, "finetune", "mrpc", "score", -1)
    assert list(ft.columns) == ["run", "step", "tokens_seen", "value", "std", "low", "high", "seeds"]
    assert ft[["run", "step"]].values.tolist() == [["mlm-syn", 8], ["mlm-syn", 16], ["taco-syn", 8], ["taco-syn", 16]]
    expect = [_ft_score(r, s, "mrpc", ("accuracy", "f1")) for r in (0, 1) for s in (8, 16)]
    assert ft["value"].tolist() == pytest.approx(expect)
    assert ft["std"].tolist() == pytest.approx([0.5] * 4) and (ft["seeds"] == 3).all()
    assert (ft["low"] == ft["value"] - ft["std"]).all() and (ft["high"] == ft["value"] + ft["std"]).all()
    assert ft["tokens_seen"].tolist() == [s * TOKENS_PER_STEP for s in (8, 16, 8, 16)]
    lin = downstream.downstream_series(rows, "linear", "sst2", "accuracy", 2)
    assert len(lin) == 2 * len(STEPS) and lin["std"].isna().all() and lin["low"].isna().all()
    assert (lin["seeds"] == 0).all()
    assert lin[lin["run"] == "taco-syn"]["value"].tolist() == pytest.approx(
        [downstream_value(1, s, "sst2", "accuracy", layer=2) for s in STEPS])
    assert downstream.downstream_series(rows, "linear", "sst2", "accuracy", 1)["value"].tolist() != lin["value"].tolist()


def test_final_scores_and_their_table(rows: pd.DataFrame) -> None:
    final = downstream.downstream_final(rows, "finetune", -1)
    assert set(final["step"]) == {16} and (final["std"] == 0.5).all()
    assert final[final["run"] == "mlm-syn"]["task"].tolist() == ["sst2", "mrpc", "rotten_tomatoes", "glue"]
    sst2 = _ft_score(0, 16, "sst2", ("accuracy",))
    mrpc = _ft_score(0, 16, "mrpc", ("accuracy", "f1"))
    got = final.set_index(["run", "task"])
    assert got.loc[("mlm-syn", "sst2"), "value"] == pytest.approx(sst2)
    assert got.loc[("mlm-syn", "glue"), "value"] == pytest.approx((sst2 + mrpc) / 2)  # the average covers GLUE tasks
    table = downstream.score_table(final)
    assert table.columns.tolist() == ["run", "step", "SST-2", "MRPC", "Rotten Tomatoes", "GLUE average"]
    assert table["run"].tolist() == RUNS and table["step"].tolist() == [16, 16]
    assert table.loc[0, "SST-2"] == f"{sst2:.1f} ± 0.5" and table.loc[0, "MRPC"] == f"{mrpc:.1f} ± 0.5"
    linear = downstream.score_table(downstream.downstream_final(rows, "linear", 1))
    assert linear.loc[1, "SST-2"] == f"{downstream_value(1, 16, 'sst2', 'accuracy', layer=1):.1f}"  # no std


def test_table_of_runs_evaluated_at_different_steps_and_tasks() -> None:
    final = pd.DataFrame({"run": ["a", "a", "b"], "step": [8, 8, 4], "task": ["sst2", "glue", "cola"],
                          "value": [81.25, 70.0, float("nan")], "std": [0.5, float("nan"), float("nan")]})
    table = downstream.score_table(final, digits=2)
    assert table.columns.tolist() == ["run", "step", "CoLA", "SST-2", "GLUE average"]
    cells = [[None if pd.isna(v) else v for v in row] for row in table.values.tolist()]
    assert cells == [["a", 8, None, "81.25 ± 0.50", "70.00"], ["b", 4, None, None, None]]


# ------------------------------------------------------------------------------------------------------ chart

def _layers(spec: dict) -> list[dict]:
    return spec["layer"]


@pytest.mark.parametrize(("x", "log_x"), [("step", True), ("tokens_seen", False)])
def test_score_lines_encode_runs_and_the_spread(rows: pd.DataFrame, x: str, log_x: bool) -> None:
    df = downstream.downstream_series(rows, "finetune", "sst2", "score", -1)
    spec = charts.score_lines(df, x=x, log_x=log_x, title="SST-2", y_title="Score (%)").to_dict()
    assert spec["title"] == "SST-2"
    line, band, bars, points = _layers(spec)
    assert line["mark"]["type"] == "line" and band["mark"]["type"] == "area" and bars["mark"]["type"] == "rule"
    for layer in (line, band, bars, points):
        enc = layer["encoding"]
        assert enc["x"]["field"] == x and enc["color"]["field"] == "run"
        assert enc["color"]["scale"]["domain"] == RUNS
        assert (enc["x"]["scale"].get("type") == "symlog") == log_x
    assert line["encoding"]["y"]["field"] == "value" and line["encoding"]["y"]["title"] == "Score (%)"
    for layer in (band, bars):
        assert layer["encoding"]["y"]["field"] == "low" and layer["encoding"]["y2"]["field"] == "high"
        assert layer["transform"] == [{"filter": "isValid(datum.low) && isValid(datum.high)"}]
    tips = [t["field"] for t in points["encoding"]["tooltip"]]
    assert tips == ["run", "step", "tokens_seen", "std", "seeds", "value"]


def test_score_lines_without_a_spread(rows: pd.DataFrame) -> None:
    df = downstream.downstream_series(rows, "linear", "glue", "average", 2)
    spec = charts.score_lines(df).to_dict()
    values = next(iter(spec["datasets"].values()))
    assert len(values) == 2 * len(STEPS) and all(v["low"] is None for v in values)


# ------------------------------------------------------------------------------------------------ definitions

def test_definitions_of_downstream_metrics_and_tasks() -> None:
    from experiments import results, scoring
    from experiments.tasks import GLUE_AVERAGE_TASKS, TASKS

    assert downstream.DOWNSTREAM == results.FAMILY == results.PROBE_HASH
    for name, m in d.DOWNSTREAM_METRICS.items():
        module, _, attr = m.pointer.rpartition(".")
        try:
            target = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            target = importlib.import_module(m.pointer)
        assert (target.__doc__ or "").strip() and m.definition.endswith(".") and m.label, name
    assert set(scoring._METRICS) | {"score", "average"} == set(d.DOWNSTREAM_METRICS)
    assert set(TASKS) | {"glue"} == set(d.DOWNSTREAM_TASKS)
    assert sorted(["glue", "zzz", "rte", "rotten_tomatoes", "cola"], key=d.task_order) == [
        "cola", "rte", "rotten_tomatoes", "zzz", "glue"]
    assert [t for t in sorted(GLUE_AVERAGE_TASKS, key=d.task_order)] == list(GLUE_AVERAGE_TASKS)
    assert d.task_label("stsb") == "STS-B" and d.task_label("new_task") == "new_task"
    assert d.describe_downstream("auc").label == "auc" and d.describe_downstream("mcc").pointer.endswith("matthews")


# ------------------------------------------------------------------------------------------------------- page

def _table(at: object) -> pd.DataFrame:
    return at.dataframe[0].value  # type: ignore[attr-defined]


def test_page_shows_scores_runs_overlaid_and_the_final_table(make_app, root: Path) -> None:
    at = make_app(root, page="downstream")
    assert_clean(at)
    assert at.title[0].value == "Downstream"
    (title, df, spec), = drawn(at)
    assert title == "SST-2: Score (linear probe, layer 2)"  # linear first, tasks in GLUE's order, the last layer
    assert set(df["run"]) == set(RUNS) and sorted(df["step"].unique()) == STEPS
    assert df[df["run"] == "mlm-syn"].sort_values("step")["value"].tolist() == pytest.approx(
        [downstream_value(0, s, "sst2", "accuracy", layer=2) for s in STEPS])
    text = texts(at)
    assert "Defined in `experiments.scoring.score`" in text and "Final scores" in text
    assert "linear probe, layer 2" in text
    table = _table(at)
    assert table.columns.tolist() == ["run", "step", "SST-2", "MRPC", "Rotten Tomatoes", "GLUE average"]
    assert table["SST-2"].tolist() == [f"{downstream_value(r, 16, 'sst2', 'accuracy', layer=2):.1f}" for r in (0, 1)]
    # the GLUE average covers 2 of 5 tasks: a note per run and (mode, layer)
    assert [e.label for e in at.expander] == ["Notes from the evaluation (6)"]
    assert "covers sst2,mrpc only" in "\n".join(str(m.value) for m in at.expander[0].markdown)
    assert [b.proto.label for b in at.get("download_button")].count("CSV") == 2


def test_page_selectors(make_app, root: Path) -> None:
    at = make_app(root, page="downstream")
    assert at.radio(key="downstream:mode").options == ["Linear probe", "Fine-tuning"]
    assert at.selectbox(key="downstream:task").options == ["SST-2", "MRPC", "Rotten Tomatoes", "GLUE average"]
    at.select_slider(key="downstream:layer").set_value(1).run()
    assert drawn(at)[0][0] == "SST-2: Score (linear probe, layer 1)"
    assert _table(at)["SST-2"].tolist()[0] == f"{downstream_value(0, 16, 'sst2', 'accuracy', layer=1):.1f}"

    at.radio(key="downstream:mode").set_value("finetune").run()
    assert_clean(at)
    title, df, _ = drawn(at)[0]
    assert title == "SST-2: Score (fine-tuning)" and sorted(df["step"].unique()) == [8, 16]
    assert df["std"].tolist() == pytest.approx([0.5] * 4) and (df["seeds"] == 3).all()
    assert "± one sample standard deviation" in texts(at)
    assert _table(at)["SST-2"].tolist()[1] == f"{_ft_score(1, 16, 'sst2', ('accuracy',)):.1f} ± 0.5"
    assert not at.get("select_slider")  # fine-tuning has no layer

    at.selectbox(key="downstream:task").set_value("mrpc").run()
    assert at.selectbox(key="downstream:metric").options == ["Score", "Accuracy", "F1"]
    at.selectbox(key="downstream:metric").set_value("f1").run()
    title, df, _ = drawn(at)[0]
    assert title == "MRPC: F1 (fine-tuning)" and "`experiments.scoring.f1_positive`" in texts(at)
    assert df[df["run"] == "taco-syn"]["value"].tolist() == pytest.approx(
        [_mean([downstream_value(1, s, "mrpc", "f1", seed=k) for k in SEEDS]) for s in (8, 16)])

    at.selectbox(key="downstream:task").set_value("glue").run()
    assert_clean(at)
    assert at.selectbox(key="downstream:metric").value == "average"  # MRPC's F1 is gone; back to the default
    assert drawn(at)[0][0] == "GLUE average (fine-tuning)"

    at.multiselect(key="downstream:runs").set_value(["taco-syn"]).run()
    assert set(drawn(at)[0][1]["run"]) == {"taco-syn"} and _table(at)["run"].tolist() == ["taco-syn"]
    at.multiselect(key="downstream:runs").set_value([]).run()
    assert "Pick at least one run." in texts(at) and not drawn(at)


def test_page_x_axis_follows_the_sidebar(make_app, root: Path) -> None:
    at = make_app(root, page="downstream")
    at.sidebar.radio(key="ctx:x").set_value("tokens_seen")
    at.sidebar.toggle(key="ctx:log_x").set_value(False).run()
    x = drawn(at)[0][2]["layer"][0]["encoding"]["x"]
    assert x["field"] == "tokens_seen" and "type" not in x["scale"]


def test_page_empty_state_names_the_commands(make_app, synthetic_root: Path) -> None:
    at = make_app(synthetic_root, page="downstream")
    assert_clean(at)
    text = texts(at)
    assert "No downstream scores in this store: run `python -m experiments.evaluate RUN --mode linear …`" in text
    assert "--mode linear --tasks rotten_tomatoes --out" in text and "--mode finetune --glue-dir GLUE_DIR" in text
    assert "mlm-syn" in text and "taco-syn" in text  # the store's run directories
    assert not drawn(at) and not at.dataframe
