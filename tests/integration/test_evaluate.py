"""Downstream evaluation end to end on a tiny snapshot series (2 layers, hidden 64) and a few hundred examples
of SST-2 (classification) and STS-B (regression) in GLUE's layout, written by the tests (`tests/glue_fixture.py`):
scores in range, deterministic for a seed, stored in the results store; bad input exits 2 with one line and leaves
stored results untouched."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dynamics.results.store as dstore
from experiments.encoding import load_tokenizer
from experiments.evaluate import EvalConfig, evaluate_snapshot, main
from experiments.results import FAMILY, PROBE_HASH
from experiments.tasks import load_task
from tests.glue_fixture import write_glue
from tests.integration.conftest import one_thread_env, one_torch_thread

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--max-train-examples", "200", "--max-eval-examples", "100", "--max-length", "64", "--no-progress"]
FAST_FT = ["--epochs", "1", "--batch-size", "16", "--warmup-steps", "2", "--lr", "1e-3"]


@pytest.fixture(autouse=True)
def _single_thread() -> object:
    with one_torch_thread():  # shared 2-core machines; also keeps the numbers comparable between runs
        yield


def _rows(out: Path) -> list[tuple]:
    with dstore.open(out, readonly=True) as s:
        df = s.metrics(family=FAMILY, probe_hash=PROBE_HASH)
    return sorted(df[["run", "step", "layer", "metric", "variant", "value"]].itertuples(index=False, name=None))


def test_scores_in_range_and_deterministic(tiny_run: Path, glue_fixture_dir: Path) -> None:
    data = {t: (load_task(t, "train", glue_dir=glue_fixture_dir).subsample(200),
                load_task(t, "dev", glue_dir=glue_fixture_dir).subsample(100)) for t in ("sst2", "stsb")}
    tok = load_tokenizer(tiny_run / "tokenizer")
    snap = tiny_run / "snapshots" / "step-0000004"
    results = {}
    for mode in ("finetune", "linear"):
        cfg = EvalConfig(mode=mode, tasks=["sst2", "stsb"], seeds=[3], max_length=64, epochs=1, batch_size=16,
                         warmup_steps=2, lr=1e-3, progress=False).validate()
        first = evaluate_snapshot(snap, tok, data, cfg)
        second = evaluate_snapshot(snap, tok, data, cfg)
        assert first == second  # same numbers, bit for bit
        results[mode] = first
        layer, runs = first["sst2"]
        assert layer == (-1 if mode == "finetune" else 2)
        (sst2,) = runs.values()
        assert 0 <= sst2["accuracy"] <= 100 and sst2["score"] == sst2["accuracy"]
        (stsb,) = first["stsb"][1].values()
        assert all(-100 <= stsb[k] <= 100 for k in ("pearson", "spearman"))
        assert stsb["score"] == pytest.approx((stsb["pearson"] + stsb["spearman"]) / 2)
    other_seed = EvalConfig(mode="finetune", tasks=["stsb"], seeds=[4], max_length=64, epochs=1, batch_size=16,
                            warmup_steps=2, lr=1e-3, progress=False).validate()
    seed4 = evaluate_snapshot(snap, tok, {"stsb": data["stsb"]}, other_seed)["stsb"][1]["seed4"]
    assert seed4["pearson"] != results["finetune"]["stsb"][1]["seed3"]["pearson"]  # head init, order, dropout


def test_cli_stores_rows_merges_and_skips(tiny_run: Path, glue_fixture_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "store"
    base = ["--glue-dir", str(glue_fixture_dir), "--out", str(out), *SMALL]
    assert main([str(tiny_run), "--mode", "linear", "--tasks", "sst2,stsb", "--steps", "2,4", *base]) == 0
    rows = _rows(out)
    assert {(r[1], r[3], r[4]) for r in rows} >= {(s, m, "linear/mean") for s in (2, 4)
                                                  for m in ("sst2/accuracy", "stsb/pearson", "stsb/spearman",
                                                            "glue/average")}
    assert {r[2] for r in rows} == {2}  # the last of two layers
    glue = {r[1]: r[5] for r in rows if r[3] == "glue/average"}
    score = {(r[1], r[3]): r[5] for r in rows}
    assert glue[4] == pytest.approx((score[(4, "sst2/score")] + score[(4, "stsb/score")]) / 2)
    assert (out / "downstream.csv").is_file() and (out / "downstream.json").is_file()

    # a single snapshot dir of the run, fine-tuned with two seeds: added beside the linear rows
    snap = tiny_run / "snapshots" / "step-0000004"
    assert main([str(snap), "--mode", "finetune", "--tasks", "sst2", "--seeds", "1,2", *FAST_FT, *base]) == 0
    rows = _rows(out)
    ft = {r[4]: r[5] for r in rows if r[1] == 4 and r[3] == "sst2/accuracy" and r[4].startswith("finetune/")}
    assert set(ft) == {"finetune/seed1", "finetune/seed2", "finetune/mean", "finetune/std"}
    assert ft["finetune/mean"] == pytest.approx((ft["finetune/seed1"] + ft["finetune/seed2"]) / 2)
    assert ft["finetune/std"] == pytest.approx(abs(ft["finetune/seed1"] - ft["finetune/seed2"]) / np.sqrt(2))
    assert all(r[2] == -1 for r in rows if r[4].startswith("finetune/"))
    assert {(r[1], r[3]) for r in rows if r[4] == "linear/mean"} >= {(2, "sst2/score"), (4, "stsb/score")}
    assert {r[0] for r in rows} == {tiny_run.name}
    with dstore.open(out, readonly=True) as s:
        assert any("covers sst2 only" in n for n in s.notes(PROBE_HASH)["note"])
        assert set(s.snapshots(tiny_run.name)["step"]) == {0, 1, 2, 4}
        assert s.runs()["kind"].tolist() == ["run"]  # evaluating one snapshot dir keeps the run's row

    before = _rows(out)
    config = tmp_path / "eval.yaml"  # the same settings from a file (a flag overrides the file's mode)
    config.write_text("mode: finetune\ntasks: [sst2, stsb]\nsteps: '2,4'\nmax-train-examples: 200\n")
    assert main([str(tiny_run), "--config", str(config), "--mode", "linear", "--glue-dir", str(glue_fixture_dir),
                 "--out", str(out), "--max-eval-examples", "100", "--max-length", "64", "--no-progress"]) == 0
    assert _rows(out) == before  # everything already stored: skipped, nothing rewritten
    assert "0 unit(s) computed, 4 already stored" in capsys.readouterr().out


def _db_state(out: Path) -> tuple[bytes, ...]:
    con = sqlite3.connect(out / "results.sqlite")
    try:
        return tuple(con.execute("SELECT * FROM metrics ORDER BY metric, variant, step").fetchall()) + tuple(
            con.execute("SELECT * FROM completed").fetchall())
    finally:
        con.close()


def test_bad_input_exits_2_and_keeps_results(tiny_run: Path, glue_fixture_dir: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "store"
    base = ["--glue-dir", str(glue_fixture_dir), "--out", str(out), "--mode", "linear", "--tasks", "sst2", *SMALL]
    assert main([str(tiny_run), "--steps", "4", *base]) == 0
    stored = _db_state(out)
    capsys.readouterr()

    broken = write_glue(tmp_path / "glue", ["sst2"])
    (broken / "SST-2" / "dev.tsv").write_text("sentence\tlabel\ngood film\t1\nbad film\n", encoding="utf-8")
    empty = tmp_path / "empty-model"
    empty.mkdir()
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_run / "tokenizer", no_weights)
    shutil.copy(tiny_run / "snapshots" / "step-0000004" / "config.json", no_weights / "config.json")
    cases = [
        ([str(tiny_run), *base, "--tasks", "sst2,qqp"], "--tasks qqp: unknown task"),
        ([str(tiny_run), *base, "--tasks", "cola", "--glue-dir", str(broken)], f"{broken / 'CoLA'}: missing task"),
        ([str(tiny_run), *base, "--glue-dir", str(broken)], f"{broken / 'SST-2' / 'dev.tsv'}:3: 1 fields, expected 2"),
        ([str(empty), *base], f"{empty}: no snapshots found"),
        ([str(no_weights), *base], f"{no_weights}: no model weights"),
        ([str(tiny_run), "--out", str(out), "--tasks", "stsb", *SMALL], "--glue-dir is required"),
        ([str(tiny_run), *base, "--steps", "3"], "no snapshot at step 3 (available: 0,1,2,4)"),
        ([str(tiny_run), *base, "--max-length", "128"], "exceeds the model's 64 positions"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, expected
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
        assert _db_state(out) == stored

    proc = subprocess.run([sys.executable, "-m", "experiments.evaluate", str(empty), "--tasks", "sst2"],
                          capture_output=True, text=True, cwd=REPO, env=one_thread_env(), timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {empty}: no snapshots found")


def test_an_older_store_is_upgraded_and_a_newer_one_refused(tiny_run: Path, glue_fixture_dir: Path,
                                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The evaluation opens its store through `dynamics.results.store`: a store of schema 1 is migrated (its rows kept, its
    units still counted as stored); one of a newer schema is refused before any work, with one line, untouched."""
    out = tmp_path / "store"
    base = ["--glue-dir", str(glue_fixture_dir), "--mode", "linear", "--tasks", "sst2", "--steps", "4", *SMALL]
    assert main([str(tiny_run), "--out", str(out), *base]) == 0
    stored = _db_state(out)
    old, newer = tmp_path / "old", tmp_path / "newer"
    for copy, script in ((old, "UPDATE meta SET value = '1' WHERE key = 'schema_version'; DROP TABLE definitions;"),
                         (newer, "UPDATE meta SET value = '99' WHERE key = 'schema_version';")):
        shutil.copytree(out, copy)
        with sqlite3.connect(copy / "results.sqlite") as con:
            con.executescript("PRAGMA wal_checkpoint(TRUNCATE);" + script)
        con.close()
    capsys.readouterr()
    assert main([str(tiny_run), "--out", str(old), *base]) == 0
    assert "0 unit(s) computed, 1 already stored" in capsys.readouterr().out and _db_state(old) == stored
    with dstore.open(old, readonly=True) as s:
        assert s.schema_version() == dstore.SCHEMA_VERSION and s.upgraded()["from"] == 1
    before = (newer / "results.sqlite").read_bytes()
    assert main([str(tiny_run), "--out", str(newer), *base]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "newer taco-dynamics (store schema 99" in err
    assert (newer / "results.sqlite").read_bytes() == before


def test_epoch_batches_and_schedule() -> None:
    import torch

    from experiments.finetune import epoch_batches, lr_factor

    lengths = np.random.default_rng(0).integers(3, 100, size=1000)
    grouped = epoch_batches(lengths, 32, torch.Generator().manual_seed(1), True)
    plain = epoch_batches(lengths, 32, torch.Generator().manual_seed(1), False)
    for batches in (grouped, plain):
        assert len(batches) == 32 and sorted(np.concatenate(batches).tolist()) == list(range(1000))
    padded = [sum(int(lengths[b].max()) * len(b) for b in bs) for bs in (grouped, plain)]
    assert padded[0] < 0.7 * padded[1]
    again = epoch_batches(lengths, 32, torch.Generator().manual_seed(1), True)
    assert all(np.array_equal(a, b) for a, b in zip(grouped, again, strict=True))
    assert [lr_factor(s, 4, 10) for s in (0, 3, 4, 9, 10)] == [0.25, 1.0, 1.0, pytest.approx(1 / 6), 0.0]
