"""Unit tests of the `app.data` modules: finding results, reading stores (current, older, broken, being written)
and run directories (damaged logs too), and the pure transforms the pages use."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.data import errors, frames, run_files, runs_table, sources, stamps, store_arrays, store_tables
from tests.app.synthetic import PROBE_HASH, TOKENS_PER_STEP, specs, value_of, write_store

STEPS = [0, 1, 2, 4, 8, 16]


@pytest.fixture(scope="module")
def db(synthetic_root: Path) -> str:
    return str(synthetic_root / "dynamics" / "results.sqlite")


def _stamp(db: str) -> stamps.Stamp:
    return stamps.stamp(db)


# ---------------------------------------------------------------------------------------------------- finding

def test_discover_finds_runs_and_stores_but_not_inside_snapshots(synthetic_root: Path, tmp_path: Path) -> None:
    src = sources.discover([synthetic_root, tmp_path / "absent"])
    assert [Path(r).name for r in src.runs] == ["mlm-syn", "taco-syn"]
    assert src.stores == (str((synthetic_root / "dynamics" / "results.sqlite").resolve()),)
    assert src.missing == (str(tmp_path / "absent"),) and not src.empty


def test_discover_a_store_alone_brings_its_run_directories(synthetic_root: Path) -> None:
    src = sources.discover([synthetic_root / "dynamics" / "results.sqlite"])
    assert len(src.stores) == 1 and [Path(r).name for r in src.runs] == ["mlm-syn", "taco-syn"]


def test_discover_empty_and_depth(tmp_path: Path) -> None:
    assert sources.discover([tmp_path]).empty
    deep = tmp_path / "a" / "b" / "c" / "d" / "e" / "run"
    deep.mkdir(parents=True)
    (deep / "run.json").write_text("{}")
    assert sources.discover([tmp_path]).empty  # deeper than MAX_DEPTH
    assert sources.discover([tmp_path / "a" / "b"]).runs == (str(deep.resolve()),)


def test_stamp_changes_when_the_probe_writes(tmp_path: Path) -> None:
    db = write_store(tmp_path, steps=[0, 1], n_metrics=3, projection_tokens=0)
    before = stamps.stamp(db)
    assert stamps.stamp(tmp_path / "nothing.sqlite") == (0, 0, 0, 0)
    from dynamics.results import store as dstore

    with dstore.open(db) as s:
        s.write_family(run="mlm-syn", step=2, tokens_seen=2 * TOKENS_PER_STEP, family="geometry",
                       probe_hash=PROBE_HASH, params="x", result=dstore.FamilyResult([(0, "anisotropy", "all", 0.5)],
                                                                                  {}, []))
        assert stamps.stamp(db) != before  # read while the writer is still open (WAL)


# ---------------------------------------------------------------------------------------------- store loaders

def test_metric_rows_hold_the_written_values(db: str) -> None:
    df = store_tables.metric_rows(db, _stamp(db), "anisotropy")
    index = [s.metric for s in specs(40, 3)].index("anisotropy")
    assert list(df.columns) == ["run", "step", "tokens_seen", "layer", "variant", "value"]
    assert len(df) == 2 * len(STEPS) * 3
    row = df[(df["run"] == "taco-syn") & (df["step"] == 8) & (df["layer"] == 2)].iloc[0]
    assert row["value"] == pytest.approx(value_of(1, 8, 2, index))
    assert row["tokens_seen"] == 8 * TOKENS_PER_STEP
    only = store_tables.metric_rows(db, _stamp(db), "anisotropy", ("mlm-syn",))
    assert set(only["run"]) == {"mlm-syn"}
    assert store_tables.metric_rows(db, _stamp(db), "no_such_metric").empty


def test_metric_catalog_lists_families_metrics_and_variants(db: str) -> None:
    cat = store_tables.metric_catalog(db, _stamp(db))
    expected = {(s.family, s.metric, v) for s in specs(40, 3) for v in s.variants}
    assert set(map(tuple, cat[["family", "metric", "variant"]].to_numpy())) == expected


def test_store_runs_counts_snapshots_and_results(db: str) -> None:
    runs = store_tables.store_runs(db, _stamp(db))
    assert list(runs["run"]) == ["mlm-syn", "taco-syn"]
    assert list(runs["snapshots"]) == [6, 6] and list(runs["measured"]) == [6, 6]
    assert list(runs["objective"]) == ["mlm", "taco"] and list(runs["preset"]) == ["mini", "mini"]
    assert runs["last_step"].tolist() == [16, 16] and runs["probe_hash"].iloc[0] == PROBE_HASH


def test_probe_sets_notes_and_measured(db: str) -> None:
    assert store_tables.probe_sets(db, _stamp(db))["hash"].tolist() == [PROBE_HASH]
    notes = store_tables.notes(db, _stamp(db))
    assert set(notes["family"]) == {"cka_steps"} and notes["step"].tolist() == [-1, -1]
    done = store_tables.measured(db, _stamp(db))
    assert set(done["family"]) == {"anchors", "drift", "context", "geometry", "cka_steps"}


def test_cka_arrays_as_tidy_frames(db: str) -> None:
    steps = store_arrays.cka_steps(db, _stamp(db), "mlm-syn")
    assert len(steps) == 3 * len(STEPS) ** 2
    cell = steps[(steps["layer"] == 1) & (steps["step_a"] == 0) & (steps["step_b"] == 16)]
    assert cell["value"].iloc[0] == pytest.approx(1 - 0.01 * 5 * 2)
    assert cell["tokens_b"].iloc[0] == 16 * TOKENS_PER_STEP
    assert store_arrays.cka_layers(db, _stamp(db), "mlm-syn", 4, "biased").empty  # the probe stores it debiased only
    layers = store_arrays.cka_layers(db, _stamp(db), "mlm-syn", 4)
    mat = layers.pivot(index="layer_a", columns="layer_b", values="value").to_numpy()
    assert mat.shape == (3, 3) and np.allclose(mat, mat.T) and np.allclose(np.diag(mat), 1)
    assert store_arrays.cka_layers(db, _stamp(db), "mlm-syn", 3).empty  # no snapshot at step 3
    assert store_arrays.array_steps(db, _stamp(db), "cka_layers", "taco-syn") == STEPS


def test_projection_has_h_e_and_g(db: str) -> None:
    p = store_arrays.projection(db, _stamp(db), "taco-syn", 2)
    counts = p.groupby("view")["layer"].agg(lambda s: sorted(set(s))).to_dict()
    assert counts == {"e": [0], "g": [1, 2], "h": [0, 1, 2]}
    assert len(p[(p["view"] == "h") & (p["layer"] == 1)]) == 60
    assert set(p["freq_bin"]) == {"frequent", "medium", "rare"} and p["token"].iloc[0] == "tok0"
    g = p[(p["view"] == "g") & (p["layer"] == 1)]["x"].to_numpy()
    h = p[(p["view"] == "h") & (p["layer"] == 1)]["x"].to_numpy()
    assert np.allclose(g, 0.5 * h, atol=1e-6)
    assert store_arrays.projection(db, _stamp(db), "taco-syn", 5).empty


# -------------------------------------------------------------------------------- older, broken, being written

def _older_copy(db: str, tmp_path: Path) -> str:
    """A copy of the store as an earlier probe of schema version 1 might have left it: no definitions (new in 2),
    no arrays/notes/completed tables, and metric rows without a family column."""
    root = tmp_path / "old"
    shutil.copytree(Path(db).parent, root)
    conn = sqlite3.connect(root / "results.sqlite")
    conn.executescript("""
        PRAGMA wal_checkpoint(TRUNCATE);
        UPDATE meta SET value = '1' WHERE key = 'schema_version'; DROP TABLE definitions;
        DROP TABLE arrays; DROP TABLE notes; DROP TABLE completed;
        DROP INDEX metrics_by_family; ALTER TABLE metrics DROP COLUMN family;""")
    conn.close()
    return str(root / "results.sqlite")


def test_older_store_is_read_with_what_it_has(db: str, tmp_path: Path) -> None:
    old = _older_copy(db, tmp_path)
    before = Path(old).read_bytes()
    st = stamps.stamp(old)
    problems = store_tables.store_problems(old, st)
    assert any("`arrays` table, so no CKA heatmaps" in p for p in problems) and any("`family`" in p for p in problems)
    assert any("no metric definitions" in p for p in problems)
    cat = store_tables.metric_catalog(old, st)
    assert set(cat[cat["metric"] == "anisotropy"]["family"]) == {"unknown"}  # no family, no definition to name one
    assert len(store_tables.metric_rows(old, st, "anisotropy")) == 2 * len(STEPS) * 3
    assert store_arrays.cka_steps(old, st, "mlm-syn").empty and store_arrays.projection(old, st, "mlm-syn", 0).empty
    assert store_tables.notes(old, st).empty and store_tables.measured(old, st).empty
    runs = store_tables.store_runs(old, st)
    assert list(runs["measured"]) == [0, 0] and list(runs["snapshots"]) == [6, 6]
    assert Path(old).read_bytes() == before  # read through the compatibility view: the file is not migrated


def test_an_older_store_upgraded_by_a_writer_keeps_saying_what_it_lacked(db: str, tmp_path: Path) -> None:
    """Opened for writing (as the probe does), the older store is migrated and given the definitions: its rows get
    their families back, and the page still says what the earlier probe had not written."""
    from dynamics.metrics import registry
    from dynamics.results import store as dstore

    old = _older_copy(db, tmp_path)
    with dstore.open(old) as s:
        s.write_definitions(registry.load().values())
    st = stamps.stamp(old)
    cat = store_tables.metric_catalog(old, st)
    assert set(cat[cat["metric"] == "anisotropy"]["family"]) == {"geometry"}
    assert set(cat[cat["metric"] == "anisotropy"]["page"]) == {"geometry"}
    problems = store_tables.store_problems(old, st)
    assert any("`arrays` table" in p for p in problems) and not any("no metric definitions" in p for p in problems)


def test_store_without_the_metric_index_draws_the_same_catalog(db: str, tmp_path: Path) -> None:
    """A store lacking `metrics_by_metric` (the catalogue used to fail with "no such index", so no charts) gives
    the same catalogue and rows, read by `dynamics.results.store` without the index."""
    root = tmp_path / "noindex"
    shutil.copytree(Path(db).parent, root)
    with sqlite3.connect(root / "results.sqlite") as conn:
        conn.executescript("PRAGMA wal_checkpoint(TRUNCATE); DROP INDEX metrics_by_metric;")
    new = str(root / "results.sqlite")
    pd.testing.assert_frame_equal(store_tables.metric_catalog(new, stamps.stamp(new)),
                                  store_tables.metric_catalog(db, stamps.stamp(db)))
    pd.testing.assert_frame_equal(store_tables.metric_rows(new, stamps.stamp(new), "anisotropy"),
                                  store_tables.metric_rows(db, stamps.stamp(db), "anisotropy"))
    assert not store_tables.store_problems(new, stamps.stamp(new))  # an index is not a missing table or column


def test_store_without_probe_sets_reads_every_row(db: str, tmp_path: Path) -> None:
    old = _older_copy(db, tmp_path)
    with sqlite3.connect(old) as conn:
        conn.execute("DROP TABLE probe_sets")
    st = stamps.stamp(old)
    assert len(store_tables.metric_rows(old, st, "anisotropy")) == 2 * len(STEPS) * 3
    assert "anisotropy" in set(store_tables.metric_catalog(old, st)["metric"])
    assert any("no `probe_sets` table" in p for p in store_tables.store_problems(old, st))


def test_a_newer_store_is_named_not_read(db: str, tmp_path: Path) -> None:
    root = tmp_path / "newer"
    shutil.copytree(Path(db).parent, root)
    with sqlite3.connect(root / "results.sqlite") as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    new = str(root / "results.sqlite")
    with pytest.raises(errors.DataError, match="newer taco-dynamics .*store schema 99.*update taco-dynamics"):
        store_tables.metric_catalog(new, stamps.stamp(new))


def test_broken_or_missing_store_raises_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "results.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(errors.DataError, match="results.sqlite"):
        store_tables.metric_rows(str(bad), stamps.stamp(bad), "anisotropy")
    with pytest.raises(errors.DataError, match="no results store"):
        store_tables.probe_sets(str(tmp_path / "gone.sqlite"), (1, 2, 3, 4))


def test_new_rows_appear_while_the_probe_is_writing(tmp_path: Path) -> None:
    from dynamics.results import store as dstore

    db = str(write_store(tmp_path, steps=[0, 1], n_metrics=20, projection_tokens=0))
    first = store_tables.metric_rows(db, stamps.stamp(db), "anisotropy")
    assert sorted(first["step"].unique()) == [0, 1]
    with dstore.open(db) as writer:
        writer.write_family(run="mlm-syn", step=2, tokens_seen=2 * TOKENS_PER_STEP, family="geometry",
                            probe_hash=PROBE_HASH, params="x",
                            result=dstore.FamilyResult([(0, "anisotropy", "all", 0.75)], {}, []))
        again = store_tables.metric_rows(db, stamps.stamp(db), "anisotropy")
    assert sorted(again["step"].unique()) == [0, 1, 2]
    assert again[again["step"] == 2]["value"].tolist() == [0.75]


# ---------------------------------------------------------------------------------------------- run directories

def test_training_log_reads_rows_and_skips_a_partial_line(synthetic_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(synthetic_root / "taco-syn", run)
    with open(run / "log.jsonl", "a") as f:
        f.write('{"step": 99, "loss": 1.')  # the trainer is in the middle of writing this line
    log = run_files.training_log(str(run), stamps.run_stamp(run))
    assert set(log["split"]) == {"train", "validation"} and log["step"].max() == 16
    val = log[log["split"] == "validation"]
    assert sorted(val["step"]) == STEPS and val["lr"].isna().all() and val["tc_loss"].notna().all()
    assert run_files.training_log(str(tmp_path / "nothing"), (0,)).empty
    assert run_files.run_snapshot_steps(str(run), stamps.run_stamp(run)) == STEPS


def test_damaged_log_still_gives_the_runs_table(synthetic_root: Path, tmp_path: Path) -> None:
    """A binary line in log.jsonl (it used to replace the Runs table by a UnicodeDecodeError) and non-finite
    numbers (an OverflowError) are left out, with notes the page shows."""
    run = tmp_path / "run"
    shutil.copytree(synthetic_root / "taco-syn", run)
    clean = run_files.training_log(str(synthetic_root / "taco-syn"), stamps.run_stamp(synthetic_root / "taco-syn"))
    with open(run / "log.jsonl", "ab") as f:
        f.write(b"\x00\xff\xfe garbage \x80\n")
        f.write(b'{"step": 17, "tokens_seen": Infinity, "loss": NaN, "lr": 1e999}\n')
        f.write(b'{"step": Infinity, "loss": 1.0}\n')
    st_ = stamps.run_stamp(run)
    log = run_files.training_log(str(run), st_)
    assert len(log) == len(clean) + 1 and log["step"].max() == 17
    last = log[log["step"] == 17].iloc[0]
    assert pd.isna(last["tokens_seen"]) and pd.isna(last["loss"]) and pd.isna(last["lr"])
    notes = run_files.log_notes(str(run), st_)
    assert len(notes) == 3 and all(str(run / "log.jsonl") in n for n in notes)
    assert any("not UTF-8" in n for n in notes) and any("non-finite" in n for n in notes)
    assert run_files.log_notes(str(synthetic_root / "taco-syn"), stamps.run_stamp(synthetic_root / "taco-syn")) == []
    table = runs_table.runs_table(sources.discover([run]))
    row = table.iloc[0]
    assert row["run"] == "run" and row["steps"] == 17 and row["tokens_seen"] == 16 * TOKENS_PER_STEP
    assert row["train_loss"] == pytest.approx(clean[clean["split"] == "train"]["loss"].iloc[-1])


def test_runs_table_joins_stores_and_run_directories(synthetic_root: Path, tmp_path: Path) -> None:
    orphan = tmp_path / "orphan"
    shutil.copytree(synthetic_root / "mlm-syn", orphan)
    (orphan / "run.json").write_text(json.dumps({"objective": "mlm", "preset": "tiny"}))
    table = runs_table.runs_table(sources.discover([synthetic_root, orphan]))
    assert list(table.columns) == runs_table.RUN_TABLE_COLUMNS
    assert list(table["run"]) == ["mlm-syn", "taco-syn", "orphan"]
    taco = table.iloc[1]
    log = run_files.training_log(str(synthetic_root / "taco-syn"), stamps.run_stamp(synthetic_root / "taco-syn"))
    assert taco["steps"] == 16 and taco["snapshots"] == 6 and taco["tokens_seen"] == 16 * TOKENS_PER_STEP
    assert taco["train_loss"] == pytest.approx(log[log["split"] == "train"]["loss"].iloc[-1])
    assert taco["val_loss"] == pytest.approx(log[log["split"] == "validation"]["loss"].iloc[-1])
    assert taco["tc_loss"] == pytest.approx(log[log["split"] == "validation"]["tc_loss"].iloc[-1])
    assert taco["probe_hash"] == PROBE_HASH[:12] and taco["measured"] == 6
    assert pd.isna(table.iloc[2]["results"]) and table.iloc[2]["preset"] == "tiny"


# ---------------------------------------------------------------------------------------------- transforms

def test_tidy_log_and_thin() -> None:
    log = pd.DataFrame({"step": range(1, 5001), "tokens_seen": range(0, 50000, 10), "split": "train",
                        "loss": np.linspace(9, 3, 5000), "lr": 1e-3, "tc_loss": np.nan})
    long = frames.tidy_log({"a": log}, ["loss", "lr", "tc_loss"], max_points=1000)
    assert set(long["quantity"]) == {"loss", "lr"}  # tc_loss never logged
    per = long.groupby("quantity").size()
    assert (per <= 1001).all() and (per >= 900).all()
    loss = long[long["quantity"] == "loss"]
    assert loss["step"].iloc[0] == 1 and loss["step"].iloc[-1] == 5000
    assert frames.tidy_log({}, ["loss"]).empty


def test_difference_uses_common_steps() -> None:
    df = pd.DataFrame({"run": ["a"] * 3 + ["b"] * 2, "step": [0, 1, 2, 0, 2], "tokens_seen": [0, 1, 2, 0, 2],
                       "layer": 0, "variant": "all", "value": [1.0, 2.0, 4.0, 0.5, 1.0]})
    diff = frames.difference(df, "a", "b")
    assert diff["step"].tolist() == [0, 2] and diff["value"].tolist() == [0.5, 3.0]
    assert frames.difference(df, "b", "a")["value"].tolist() == [-0.5, -3.0]


def test_coverage_names_the_missing_snapshots() -> None:
    df = pd.DataFrame({"run": ["a", "a", "b"], "step": [0, 2, 0], "value": [1.0, np.nan, 1.0]})
    done = pd.DataFrame({"run": ["a"] * 3 + ["b"], "step": [0, 1, 2, 0], "family": "geometry"})
    gaps = frames.coverage(df, done, ["geometry"], ["a", "b", "c"])
    assert gaps == ["a: no value at 2 of 3 measured snapshots (steps 1, 2)", "c: not measured for this metric yet"]


def test_with_distance() -> None:
    df = pd.DataFrame({"variant": ["all", "d001", "d016"], "value": [1.0, 2.0, 3.0]})
    out = frames.with_distance(df)
    assert out["distance"].tolist() == [1, 16] and out["value"].tolist() == [2.0, 3.0]


def test_a_truncated_array_file_is_a_readable_message_not_a_zip_error(probed_root: Path, tmp_path: Path) -> None:
    from dynamics.results import store as dstore

    root = tmp_path / "copy"
    shutil.copytree(probed_root, root)
    db = next(root.rglob("results.sqlite"))
    with dstore.open(db, readonly=True) as s:
        row = s.arrays("projection").iloc[0]
        path = db.parent / row["file"]
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(errors.DataError, match="cannot be read"):
            store_arrays._load(s, "projection", row["run"], int(row["step"]), None)


# ------------------------------------------------------------------------------------------- damaged contents

def test_typed_leaves_out_rows_with_text_where_numbers_belong() -> None:
    df = pd.DataFrame({"run": ["a", "b", "c", "d", "e"], "step": [0, "late", 2.0, 2.5, None],
                       "tokens_seen": [1, "many", None, 3, 4]})
    out = store_tables.typed(df, whole=("step",), numbers=("tokens_seen",))
    assert out["run"].tolist() == ["a", "c", "e"]  # text, and a step of 2.5, left out; a null stays
    assert out["tokens_seen"].iloc[0] == 1.0 and np.isnan(out["tokens_seen"].iloc[1])
    whole = store_tables.typed(df.iloc[[0, 2]], whole=("step",))
    assert whole["step"].dtype == np.int64 and whole["step"].tolist() == [0, 2]
    assert store_tables.typed(pd.DataFrame({"step": [None, None]}), whole=("step",)).shape == (2, 1)  # older store


def test_a_loader_raises_only_data_errors_naming_the_store() -> None:
    @errors.named("table `x`")
    def load(db: str) -> None:
        raise KeyError("steps")

    with pytest.raises(errors.DataError, match=r"^/some/store\.sqlite: table `x` cannot be read \(KeyError: 'steps'\)"):
        load("/some/store.sqlite")


def _damaged_copy(synthetic_root: Path, tmp_path: Path, script: str) -> str:
    shutil.copytree(synthetic_root / "dynamics", tmp_path / "dynamics")
    db = tmp_path / "dynamics" / "results.sqlite"
    with sqlite3.connect(db) as conn:
        conn.executescript(script)
    conn.close()
    return str(db)


def test_text_in_numeric_columns_is_left_out_and_counted(synthetic_root: Path, tmp_path: Path) -> None:
    db = _damaged_copy(synthetic_root, tmp_path, "UPDATE snapshots SET step = 'late' WHERE run = 'mlm-syn' AND "
                       "step = 16; UPDATE completed SET step = 'x' WHERE rowid = 1; UPDATE metrics SET layer = "
                       "'top' WHERE rowid IN (1, 2);")
    stamp = _stamp(db)
    runs = store_tables.store_runs(db, stamp).set_index("run")
    assert runs.loc["mlm-syn", "snapshots"] == len(STEPS) - 1 and runs.loc["taco-syn", "snapshots"] == len(STEPS)
    assert store_tables.measured(db, stamp)["step"].dtype == np.int64
    warnings = store_tables.store_warnings(db, stamp)
    assert "1 row(s) of table `snapshots` hold text where numbers belong (step; left out)" in warnings
    assert "1 row(s) of table `completed` hold text where numbers belong (step; left out)" in warnings
    assert "2 row(s) of table `metrics` hold text where numbers belong (layer; left out)" in warnings


def test_an_array_without_its_keys_is_a_data_error_naming_the_file(synthetic_root: Path, tmp_path: Path) -> None:
    db = _damaged_copy(synthetic_root, tmp_path, "")
    with sqlite3.connect(db) as conn:
        (rel,) = conn.execute("SELECT file FROM arrays WHERE kind = 'cka_steps' AND run = 'mlm-syn'").fetchone()
        (layers,) = conn.execute("SELECT file FROM arrays WHERE kind = 'cka_layers' AND run = 'mlm-syn' "
                                 "AND step = 2").fetchone()
    conn.close()
    path = Path(db).parent / rel
    with np.load(path) as data:
        kept = {k: data[k] for k in data.files if k != "steps"}
    np.savez(path, **kept)
    np.savez(Path(db).parent / layers, debiased=np.zeros(3))
    stamp = _stamp(db)
    with pytest.raises(errors.DataError, match=rf"{rel}: the cka_steps array of mlm-syn lacks steps"):
        store_arrays.cka_steps(db, stamp, "mlm-syn", probe_hash=PROBE_HASH)
    with pytest.raises(errors.DataError, match=rf"{layers}: the cka_layers array of mlm-syn at step 2 is damaged"):
        store_arrays.cka_layers(db, stamp, "mlm-syn", 2, probe_hash=PROBE_HASH)
    assert not store_arrays.cka_steps(db, stamp, "taco-syn", probe_hash=PROBE_HASH).empty  # the other run reads


def test_the_numeric_columns_the_app_parses_are_numeric_columns_of_the_schema() -> None:
    """`store_tables.NUMERIC` names which columns the app reads as numbers; the schema is `dynamics.results.store`'s."""
    from dynamics.results import store as dstore

    for table, cols in store_tables.NUMERIC.items():
        types = {c.name: c.type for c in dstore.SCHEMA[table].columns}
        assert all(types[c] in ("INTEGER", "REAL") for c in cols), table
