"""Snapshot integrity end to end: a real tiny run with a copied snapshot (step 2's folder copied to step-0000007/,
its snapshot.json set to step 7) is probed; the store, the probe's stderr and the report name both steps; the hash
is cached in the store; a clean series has no flags; the real weights' hash sees one changed element."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from dynamics import probe
from dynamics.find import integrity
from dynamics.find.series import discover
from dynamics.results import store

SETTINGS = dict(probe_blocks=8, metrics=["geometry"], progress=False, figures=False)
TOKENS_PER_STEP = 8 * 32  # build_tiny_run's batch × block


def _copy_snapshot(run: Path, src: int, dst: int) -> Path:
    target = shutil.copytree(run / "snapshots" / f"step-{src:07d}", run / "snapshots" / f"step-{dst:07d}")
    info = json.loads((target / "snapshot.json").read_text())
    info.update(step=dst, tokens_seen=dst * TOKENS_PER_STEP)
    (target / "snapshot.json").write_text(json.dumps(info))
    return target


@pytest.fixture(scope="module")
def copied(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny run (steps 0, 1, 2, 4) plus step-0000007/, a copy of step 2 that says it is step 7."""
    run = shutil.copytree(tiny_run, tmp_path_factory.mktemp("integrity") / "copied")
    _copy_snapshot(run, 2, 7)
    return run


@pytest.fixture(scope="module")
def probed(copied: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[probe.ProbeSummary, str]:
    """The copied run probed once (every snapshot); the summary and what the probe wrote to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        summary = probe.run(copied, out=tmp_path_factory.mktemp("integrity-out") / "dyn", **SETTINGS)
    return summary, err.getvalue()


def test_the_copied_snapshot_is_flagged_everywhere(probed: tuple[probe.ProbeSummary, str]) -> None:
    summary, stderr = probed
    (flag,) = summary.flags
    assert (flag.run, flag.kind, flag.steps) == ("copied", "duplicate_weights", (2, 7))
    warnings = [line for line in stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: copied: {flag.message}"] and "steps 2 and 7 hold identical weights" in warnings[0]
    with store.open(summary.out, readonly=True) as s:
        notes = s.notes(integrity.PROBE_HASH)
        assert notes[["run", "step", "family"]].values.tolist() == [["copied", 7, "integrity"]]
        assert notes["note"].tolist() == [flag.message]
        assert s.notes()["family"].ne("integrity").all()  # not under the probe set's notes
        info = {int(st): json.loads(i) for st, i in zip(s.snapshots("copied")["step"], s.snapshots("copied")["info"],
                                                        strict=True)}
    hashes = {st: i[integrity.HASH_KEY]["sha256"] for st, i in info.items()}
    assert sorted(hashes) == [0, 1, 2, 4, 7] and hashes[2] == hashes[7] and len(set(hashes.values())) == 4
    assert info[7]["step"] == 7  # the snapshot's own record is kept beside the hash
    report = summary.report.read_text()
    assert "## Snapshot integrity" in report and "1 problem(s) found in 5 snapshot(s)" in report
    assert f"- **copied** (duplicate weights): {flag.message}" in report


def test_rerun_reuses_the_hashes_and_keeps_the_exit_status(probed: tuple[probe.ProbeSummary, str], copied: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    summary, _ = probed

    def no_hashing(path: object) -> None:
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr(integrity, "weights_digests", no_hashing)
    status = probe.main([str(copied), "--out", str(summary.out), "--probe-blocks", "8", "--metrics", "geometry",
                         "--no-progress", "--no-figures"])
    err = capsys.readouterr().err
    assert status == 0 and "0 result(s) computed" in err
    assert [line for line in err.splitlines() if line.startswith("warning:")] == [summary.flags[0].line]
    assert not any(line.startswith("error:") for line in err.splitlines())


def test_a_clean_series_has_no_flags(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = shutil.copytree(tiny_run, tmp_path / "clean")
    summary = probe.run(run, out=tmp_path / "dyn", **SETTINGS)
    assert summary.flags == [] and "warning:" not in capsys.readouterr().err
    with store.open(summary.out, readonly=True) as s:
        assert s.notes(integrity.PROBE_HASH).empty
    assert "No problems found in 4 snapshot(s)" in summary.report.read_text()


def test_flags_are_replaced_when_the_series_is_fixed(probed: tuple[probe.ProbeSummary, str], copied: Path,
                                                     tmp_path: Path) -> None:
    """The copy removed, the same store holds no flag for the run any more (steps already measured are reused)."""
    run = shutil.copytree(copied, tmp_path / "copied")
    shutil.rmtree(run / "snapshots" / "step-0000007")
    out = tmp_path / "dyn"
    shutil.copytree(probed[0].out, out)
    summary = probe.run(run, out=out, steps=[2], **SETTINGS)
    assert summary.flags == []
    with store.open(out, readonly=True) as s:
        assert s.notes(integrity.PROBE_HASH).empty


def test_warm_up_makes_steps_0_and_1_equal_without_a_flag(tiny_run: Path, tmp_path: Path) -> None:
    """taco.train's linear warm-up from 0 makes the update at step 1 a no-op: its log says lr 0 there."""
    run = shutil.copytree(tiny_run, tmp_path / "warm")
    shutil.rmtree(run / "snapshots" / "step-0000001")
    _copy_snapshot(run, 0, 1)
    series = discover(run)
    entries = integrity.hash_snapshots(series.snapshots, {s.path for s in series.snapshots}, {})
    records = integrity.records(series, entries)
    assert [f.steps for f in integrity.check_series(records, integrity.zero_lr_steps(series))] == [(0, 1)]
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    rows = [{**r, "lr": 0.0 if r["step"] == 1 else 1e-3} for r in rows]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    series = discover(run)
    assert integrity.zero_lr_steps(series) == {1}
    assert integrity.check_series(integrity.records(series, entries), integrity.zero_lr_steps(series)) == []


def test_real_weights_hash(tiny_run: Path, tmp_path: Path) -> None:
    """The same snapshot hashed twice, a copy and a re-save of the same tensors hash equal; one changed element
    does not."""
    from safetensors.torch import load_file, save_file

    snap = tiny_run / "snapshots" / "step-0000002"
    h = integrity.weights_hash(snap)
    assert h == integrity.weights_hash(snap) == integrity.weights_hash(shutil.copytree(snap, tmp_path / "copy"))
    tensors = load_file(str(snap / "model.safetensors"))
    resaved = shutil.copytree(snap, tmp_path / "resaved")
    save_file(dict(reversed(list(tensors.items()))), str(resaved / "model.safetensors"), metadata={"x": "y"})
    assert (resaved / "model.safetensors").read_bytes() != (snap / "model.safetensors").read_bytes()
    assert integrity.weights_hash(resaved) == h
    name = sorted(tensors)[len(tensors) // 2]
    tensors[name].view(-1)[0] += 1e-3
    changed = shutil.copytree(snap, tmp_path / "changed")
    save_file(tensors, str(changed / "model.safetensors"), metadata={"format": "pt"})
    assert integrity.weights_hash(changed)[0] != h[0]


@pytest.mark.parametrize("schedule", [False, True], ids=["log-only", "run-json-schedule"])
def test_an_unreadable_log_raises_no_false_alarm(tiny_run: Path, tmp_path: Path, schedule: bool,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Steps 0 and 1 equal by warm-up, and a log.jsonl of bytes that are no text: no flag (nothing read says the
    weights should differ), and the probe names the log — in its notes and in report.md — instead of staying
    silent. With run.json's schedule (as taco.train writes it) the warm-up is known without the log."""
    run = shutil.copytree(tiny_run, tmp_path / "warm")
    shutil.rmtree(run / "snapshots" / "step-0000001")
    _copy_snapshot(run, 0, 1)
    if schedule:
        meta = json.loads((run / "run.json").read_text())
        meta["config"].update(lr=3e-3, max_steps=4, warmup_fraction=0.0, warmup_steps=2)
        (run / "run.json").write_text(json.dumps(meta))
    (run / "log.jsonl").write_bytes(bytes(range(128, 256)) * 8 + b"\n" + bytes(range(200, 256)) + b"\n")
    status = probe.main([str(run), "--out", str(tmp_path / "dyn"), "--probe-blocks", "8", "--metrics", "geometry",
                         "--no-progress", "--no-figures"])
    err = capsys.readouterr().err
    assert status == 0 and "warning:" not in err, err
    notes = [line for line in err.splitlines() if line.startswith("note:") and str(run / "log.jsonl") in line]
    assert len(notes) == 1 and ("not checked" in notes[0]) != schedule, err
    with store.open(tmp_path / "dyn", readonly=True) as s:
        assert s.notes(integrity.PROBE_HASH).empty
    report = (tmp_path / "dyn" / "report.md").read_text()
    assert "No problems found" in report and str(run / "log.jsonl") in report
