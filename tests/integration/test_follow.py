"""`dynamics.probe --follow` against a real `taco.train` process: started before training, through a kill and a
resume, to the final snapshot; and its timeout and input checks."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dynamics import probe
from dynamics.config import ProbeConfig
from dynamics.errors import ProbeError
from dynamics.follow import final_step, follow, refuse_hub_ids

TINY = ["--preset", "tiny", "--model-overrides", '{"hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128}',
        "--vocab-size", "2000", "--block-size", "32", "--batch-size", "8", "--eval-blocks", "16", "--no-progress",
        "--tc-negatives", "10", "--objective", "taco", "--max-steps", "16", "--snapshot-every", "4", "--log-every", "1"]
PROBE = ["--probe-blocks", "16", "--no-progress", "--no-figures", "--follow-timeout", "240"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "OMP_NUM_THREADS": "1"}  # two processes on two cores


def _completed(db: Path) -> set[tuple[str, int, str]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {(r, int(s), f) for r, s, f in conn.execute("SELECT run, step, family FROM completed")}


def test_follow_a_training_run_started_later_killed_and_resumed(small_english_corpus: Path, tmp_path: Path) -> None:
    run, out, cache = tmp_path / "taco-run", tmp_path / "results", tmp_path / "cache"
    train = [sys.executable, "-m", "taco.train", *TINY, "--corpus", str(small_english_corpus), "--output-dir",
             str(run), "--data-cache", str(cache)]
    follower = subprocess.Popen([sys.executable, "-m", "dynamics.probe", str(run), "--out", str(out), "--follow",
                                 *PROBE], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)  # the probe starts first and waits for the run
        trainer = subprocess.Popen(train, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while time.time() < deadline and not (run / "snapshots" / "step-0000008").is_dir():
            time.sleep(0.05)
        trainer.send_signal(signal.SIGKILL)  # killed mid-run: the probe keeps waiting
        trainer.wait()
        assert not (run / "snapshots" / "step-0000016").exists(), "the kill should land before the final step"
        assert follower.poll() is None, "the probe must not stop before the final snapshot"
        resumed = subprocess.run([*train, "--resume"], env=ENV, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        _, err = follower.communicate(timeout=300)
    finally:
        for p in (follower,):
            if p.poll() is None:
                p.kill()
    assert follower.returncode == 0, err[-3000:]
    assert "waiting for" in err
    steps = sorted(int(p.name.split("-")[1]) for p in (run / "snapshots").iterdir() if p.name.startswith("step-"))
    assert steps[-1] == 16
    done = _completed(out / "results.sqlite")
    for step in steps:  # every snapshot measured, drift too (against the final one, once it existed)
        for family in ("anchors", "drift", "context", "geometry"):
            assert ("taco-run", step, family) in done, (step, family)
    with sqlite3.connect(f"file:{out / 'results.sqlite'}?mode=ro", uri=True) as conn:
        params = {p for (p,) in conn.execute("SELECT params FROM completed WHERE family='drift'")}
    assert len(params) == 1 and "16" in params.pop()  # one final step for every snapshot's drift
    m = re.search(r"followed: (\d+) snapshot\(s\) measured as they arrived: lag .* median ([\d.]+) s, max ([\d.]+) s",
                  err)
    assert m and 2 <= int(m.group(1)) <= len(steps), err[-2000:]  # each snapshot timed once, not again for drift
    assert float(m.group(2)) <= float(m.group(3))


def test_follow_stops_after_a_quiet_spell_and_names_a_missing_run(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    meta = json.loads((run / "run.json").read_text())
    meta["config"]["max_steps"] = 99  # training "stopped" at step 4 of 99
    (run / "run.json").write_text(json.dumps(meta))
    now = [0.0]
    cfg = ProbeConfig(out=str(tmp_path / "out"), probe_blocks=16, progress=False, figures=False, follow=True,
                      follow_timeout=30).validate()
    summary = follow([run], cfg, sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    assert summary.stopped == "timeout" and any("--follow stopped" in n for n in summary.notes)
    done = _completed(tmp_path / "out" / "results.sqlite")
    assert {s for r, s, f in done if f == "geometry"} == {0, 1, 2, 4} and not any(f == "drift" for _, _, f in done)
    assert final_step(run) == 99
    now[0] = 0.0
    with pytest.raises(ProbeError, match="no snapshot appeared"):
        follow([tmp_path / "not-yet"], cfg, sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    assert probe.main([str(run), "--follow", "--steps", "0"]) == 2


def test_a_cached_hub_model_is_refused_and_any_run_yet_to_start_is_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every argument that is not a model in the local Hub cache is a run to wait for, whether its folders exist
    yet or not: `runs/NAME` on a fresh clone (no runs/), a missing nested folder, an absolute path, and an `ORG/NAME`
    that is not cached. A cached model is refused: a published series does not grow."""
    from tests.hub_fixture import add_revision

    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "config.json").write_text("{}")
    add_revision(cache, "tiny-org/tiny-bert", "main", weights)
    waited = ["runs/mlm-mini", "runs/deeper/still/new", "./later/new", tmp_path / "absent" / "new",
              "tiny-org/absent"]
    refuse_hub_ids(waited)
    assert not (tmp_path / "runs").exists(), "checking must not create the run's folders"
    with pytest.raises(ProbeError, match="^tiny-org/tiny-bert: --follow .* is a model in the Hugging Face cache"):
        refuse_hub_ids([*waited, "tiny-org/tiny-bert"])


def test_follow_waits_for_a_run_under_a_runs_folder_that_does_not_exist_yet(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`make demo` on a fresh clone: `dynamics.probe runs/NAME --follow` starts before `runs/` exists, waits, and
    (here, with no training to come) stops at its timeout with the error that names the path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    now = [0.0]
    cfg = ProbeConfig(out=str(tmp_path / "out"), probe_blocks=16, progress=False, figures=False, follow=True,
                      follow_timeout=5).validate()
    for run in ("runs/mlm-mini", "runs/a/b/mlm-mini"):
        with pytest.raises(ProbeError, match=f"no snapshot appeared in {run} within 5 s"):
            follow([run], cfg, sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
        now[0] = 0.0
    assert not (tmp_path / "runs").exists()
