"""`torchrun --nproc_per_node 2 -m dynamics.probe`: two processes on the CPU (gloo) share a series' snapshots and
leave the store one process leaves; bad input stops both with one line; concurrent writers wait for each other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from common.distributed import Place
from dynamics import pipeline, probe, shards
from dynamics.results import store
from tests.integration.conftest import one_thread_env

REPO = Path(__file__).resolve().parents[2]
FAST = ["--probe-blocks", "8", "--no-figures", "--no-progress"]


def torchrun(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`torchrun --standalone --nproc_per_node 2 -m dynamics.probe ARGS` on two of this machine's cores (so each
    process runs one torch thread, as the single-process reference does); a hang kills the whole group and fails."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dynamics.probe", *map(str, args)]
    cores = sorted(os.sched_getaffinity(0))[:2]
    proc = subprocess.Popen(cmd, cwd=REPO, env=one_thread_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=lambda: os.sched_setaffinity(0, cores))
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"2-process probe did not finish in {timeout:g} s; stderr tail:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def contents(path: Path) -> dict[str, Any]:
    """Everything a store holds that does not depend on when or by whom it was computed (not the finish times,
    seconds or array file names): metric rows by key, array contents by (run, step, kind), completed families
    with their params, notes, onsets."""
    with store.open(path, readonly=True) as s:
        m = s.metrics()
        metrics = {(r, int(st), int(la), me, v, f): val for r, st, la, me, v, f, val in
                   zip(m["run"], m["step"], m["layer"], m["metric"], m["variant"], m["family"], m["value"],
                       strict=True)}
        a = s.arrays()
        arrays = {(r, int(st), k): s.load_array(f) for r, st, k, f in zip(a["run"], a["step"], a["kind"], a["file"],
                                                                         strict=True)}
        c = s.completed()
        completed = set(zip(c["run"], c["step"].astype(int), c["family"], c["params"], strict=True))
        n = s.notes()
        notes = set(zip(n["run"], n["step"].astype(int), n["family"], n["note"], strict=True))
        o = s.onsets()
        onsets = sorted(map(tuple, o.astype(object).where(o.notna(), None).to_numpy().tolist()))
        return {"metrics": metrics, "arrays": arrays, "completed": completed, "notes": notes, "onsets": onsets}


def test_two_processes_store_what_one_process_stores(tiny_run: Path, tmp_path: Path) -> None:
    # The single-process reference: one torch thread (the autouse fixture) and one BLAS thread, as each of the two
    # processes below has (OMP_NUM_THREADS=1, two cores for two processes).
    with threadpool_limits(1):
        ref = probe.run(tiny_run, out=tmp_path / "one", probe_blocks=8, progress=False, figures=False)
        # Step 0 stored beforehand: the two processes must skip it and share the three snapshots left.
        probe.run(tiny_run, out=tmp_path / "two", steps=[0], probe_blocks=8, progress=False, figures=False)
    result = torchrun(tiny_run, "--out", tmp_path / "two", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    # Printed once (rank 0): every unit computed by either process counted once, step 0's four families reused.
    summary = [line for line in lines if line.startswith(f"probe {ref.probe_hash[:12]}: ")]
    n_run_level = sum(1 for _, step, _ in ref.computed if step == -1)
    assert summary == [f"probe {ref.probe_hash[:12]}: {3 * 4 + n_run_level} result(s) computed, 4 already stored; "
                       f"report: {tmp_path / 'two' / 'report.md'}"], result.stderr[-3000:]
    # Round robin over steps 1, 2, 4: rank 0 measures 1 and 4, rank 1 measures 2.
    assert "note: snapshots measured by 2 processes: rank 0 2 on cpu, rank 1 1 on cpu" in lines, result.stderr[-3000:]

    one, two = contents(tmp_path / "one"), contents(tmp_path / "two")
    assert set(two["metrics"]) == set(one["metrics"])
    # Exactly equal, not merely close: each process runs the same float operations on the same inputs with the same
    # thread count (one), the fixed draws come from the seed, not from a generator advanced snapshot by snapshot,
    # and SQLite's REAL and .npz keep float64 bits; so the split cannot change a value.
    differ = {k: (v, two["metrics"][k]) for k, v in one["metrics"].items()
              if not (v == two["metrics"][k] or (v is None and two["metrics"][k] is None)
                      or (np.isnan(v) and np.isnan(two["metrics"][k])))}
    assert not differ, list(differ.items())[:5]
    assert set(two["arrays"]) == set(one["arrays"])
    for key, arrays in one["arrays"].items():
        assert set(two["arrays"][key]) == set(arrays), key
        for name, value in arrays.items():
            np.testing.assert_array_equal(two["arrays"][key][name], value, err_msg=f"{key} {name}")
    assert two["completed"] == one["completed"]
    assert {(r, s, f) for r, s, f, _ in one["completed"]} >= {("mlm", s, f) for s in (0, 1, 2, 4)
                                                               for f in ("anchors", "drift", "context", "geometry")}
    assert two["notes"] == one["notes"]
    assert two["onsets"] == one["onsets"]


def test_bad_input_stops_both_processes_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = torchrun(missing, "--out", tmp_path / "out", *FAST)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and str(missing) in errors[0], result.stderr[-3000:]
    # torchrun names the first process to exit; whichever it is, it exited with the probe's bad-input status.
    assert "exitcode  : 2" in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("rank", [0, 1])
def test_follow_is_refused_under_torchrun(rank: int, tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    # Refused while parsing (before any process group exists), identically on every process; rank 0 says why.
    for name, value in {"WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    assert probe.main([str(tiny_run), "--out", str(tmp_path / "out"), "--follow", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ([f"error: {pipeline.FOLLOW_SHARDED}"] if rank == 0 else []), err
    assert not (tmp_path / "out").exists()


def test_share_is_a_round_robin_that_covers_everything_once() -> None:
    items = list(range(7))
    parts = [shards.share(items, Place(rank=r, world=3)) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert shards.share(items, Place()) == items


def test_a_writer_waits_for_another_writers_transaction(tmp_path: Path) -> None:
    """Two connections (as two probe processes have) on one store: a write while the other holds its transaction
    waits for the commit instead of failing with "database is locked"."""
    first, second = store.open(tmp_path), store.open(tmp_path)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with first._transaction():
            first.conn.execute("INSERT INTO meta VALUES ('holder', 'first')")
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(10)
        threading.Timer(1.0, release.set).start()
        t0 = time.perf_counter()
        second.write_family(run="r", step=0, tokens_seen=0, family="geometry", probe_hash="h", params="p",
                            result=store.FamilyResult(rows=[(0, "anisotropy", "all", 0.5)], arrays={}, notes=[]))
        assert time.perf_counter() - t0 >= 0.9  # it did wait for the other's commit
    finally:
        release.set()
        thread.join()
    assert second.completed_params("h") == {("r", 0, "geometry"): "p"}
    first.close()
    second.close()
