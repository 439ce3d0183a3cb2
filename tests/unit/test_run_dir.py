"""Reading a run directory (`common.run_dir`): run.json, snapshots and a log.jsonl with every kind of bad line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from common.run_dir import RunDir, RunDirError, parse_log, snapshot_info


def _run(path: Path, config: dict | None = None, steps: tuple[int, ...] = (0, 1, 4)) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "run.json").write_text(json.dumps(config if config is not None else {"objective": "mlm"}))
    for step in steps:
        snap = path / "snapshots" / f"step-{step:07d}"
        snap.mkdir(parents=True)
        (snap / "snapshot.json").write_text(json.dumps({"step": step, "tokens_seen": step * 8}))
    return path


def _rows(*rows: dict) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


# ------------------------------------------------------------------------------------------ run.json, layout

def test_config_snapshots_and_paths(tmp_path: Path) -> None:
    run = RunDir(_run(tmp_path / "mlm", {"objective": "mlm", "tokenizer": {"path": "tok", "hash": "x"}}))
    assert run.is_run() and run.has_snapshots_dir() and run.name == "mlm"
    assert run.config == {"objective": "mlm", "tokenizer": {"path": "tok", "hash": "x"}}
    assert run.tokenizer_dir == tmp_path / "mlm" / "tok"
    snaps = run.snapshots()
    assert [s.step for s in snaps] == [0, 1, 4]
    assert snaps[2].path == tmp_path / "mlm" / "snapshots" / "step-0000004" == run.snapshot_path(4)
    assert snaps[2].info() == {"step": 4, "tokens_seen": 32}


def test_snapshots_leave_out_temporary_and_stray_entries(tmp_path: Path) -> None:
    run = RunDir(_run(tmp_path / "r", steps=(2, 10)))
    (run.snapshots_dir / ".tmp-step-0000020-abc").mkdir()  # being written by taco.snapshots
    (run.snapshots_dir / "step-0000030").write_text("")  # a file, not a snapshot folder
    (run.snapshots_dir / "step-final").mkdir()
    assert [s.step for s in run.snapshots()] == [2, 10]  # ascending by step, not by name


def test_a_folder_without_run_json(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "nothing")
    assert not run.is_run() and not run.has_snapshots_dir()
    assert run.config == {} and run.snapshots() == [] and run.log().rows == [] and run.log().notes == []
    assert run.tokenizer_dir == tmp_path / "nothing" / "tokenizer"


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\xff"])
def test_unreadable_run_json_raises_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "r"
    path.mkdir()
    (path / "run.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(RunDirError, match="run.json"):
        RunDir(path).config  # noqa: B018 - the property reads the file


def test_snapshot_info_reads_non_finite_numbers_as_none(tmp_path: Path) -> None:
    snap = tmp_path / "step-0000003"
    snap.mkdir()
    assert snapshot_info(snap) == {}
    (snap / "snapshot.json").write_text('{"step": 3, "tokens_seen": Infinity, "val_loss": NaN, "x": [1e999]}')
    assert snapshot_info(snap) == {"step": 3, "tokens_seen": None, "val_loss": None, "x": [None]}


# ---------------------------------------------------------------------------------------------------- the log

def test_clean_log_in_file_order(tmp_path: Path) -> None:
    run = RunDir(_run(tmp_path / "r"))
    rows = [{"step": 1, "loss": 9.0}, {"step": 2, "loss": 8.5}, {"step": 2, "split": "validation", "loss": 8.7}]
    run.log_path.write_bytes(_rows(*rows))
    log = run.log()
    assert log.rows == rows and log.notes == [] and log.complete


def test_truncated_last_line_is_skipped_with_a_note() -> None:
    log = parse_log(_rows({"step": 1}, {"step": 2}) + b'{"step": 3, "loss": 1.', "log.jsonl")
    assert [r["step"] for r in log.rows] == [1, 2]
    assert log.notes == ["log.jsonl: line 3 incomplete (being written?), skipped"]
    assert log.complete  # the line the trainer is writing: nothing was lost


@pytest.mark.parametrize("raw", [
    b"\xff\xfe random bytes \x00\n" + _rows({"step": 1}),  # not text
    _rows({"step": 1}) + b"{broken\n" + _rows({"step": 2}),  # not JSON, not the last line
    _rows({"step": 1}) + b'{"step": 2, "lr": NaN}\n',  # a value lost to a non-finite number
    b'[1]\n{"loss": 2}\n',  # no object, no step
])
def test_a_log_with_lines_lost_is_not_complete(raw: bytes) -> None:
    log = parse_log(raw, "log.jsonl")
    assert not log.complete and log.notes


def test_an_unreadable_log_is_not_complete(tmp_path: Path) -> None:
    run = RunDir(_run(tmp_path / "r"))
    run.log_path.mkdir()  # reading a folder fails: the log cannot be read at all
    log = run.log()
    assert log.rows == [] and not log.complete and str(run.log_path) in log.notes[0]


def test_binary_garbage_lines_are_skipped_with_a_note() -> None:
    raw = _rows({"step": 1}) + b"\x00\xff\xfe\x80garbage\n" + _rows({"step": 2}) + b"\xc3\x28\n" + _rows({"step": 3})
    log = parse_log(raw, "log.jsonl")
    assert [r["step"] for r in log.rows] == [1, 2, 3]
    assert log.notes == ["log.jsonl: 2 lines (2, 4) not UTF-8 text, skipped"]


def test_non_finite_numbers_read_as_none_with_a_note() -> None:
    raw = (b'{"step": 1, "loss": NaN, "grad_norm": Infinity}\n{"step": 2, "loss": 1e999, "lr": -Infinity}\n'
           + _rows({"step": 3, "loss": 2.0}))
    log = parse_log(raw, "log.jsonl")
    assert log.rows == [{"step": 1, "loss": None, "grad_norm": None}, {"step": 2, "loss": None, "lr": None},
                        {"step": 3, "loss": 2.0}]
    assert not any(isinstance(v, float) and not math.isfinite(v) for r in log.rows for v in r.values())
    assert log.notes == ["log.jsonl: 2 lines (1, 2) non-finite numbers read as missing"]


def test_other_bad_lines_each_have_a_note() -> None:
    raw = (b'{"step": 1}\n[1, 2]\n{"loss": 3.0}\n{"step": "two"}\n{"step": Infinity}\n{broken\n'
           + b'{"step": ' + b"9" * 5000 + b"}\n\n   \n" + _rows({"step": 2}))
    log = parse_log(raw, "log.jsonl")
    assert [r["step"] for r in log.rows] == [1, 2]
    assert log.notes == ["log.jsonl: line 2 not a JSON object, skipped",
                         "log.jsonl: 3 lines (3, 4, 5) no numeric step, skipped",
                         "log.jsonl: line 5 non-finite numbers read as missing",
                         "log.jsonl: 2 lines (6, 7) not valid JSON, skipped"]


def test_many_bad_lines_make_one_short_note() -> None:
    log = parse_log(b"\xff\n" * 40 + _rows({"step": 1}), "log.jsonl")
    assert len(log.rows) == 1 and log.notes == ["log.jsonl: 40 lines (1, 2, 3, 4, 5, …) not UTF-8 text, skipped"]


def test_log_names_its_file_in_the_notes(tmp_path: Path) -> None:
    run = RunDir(_run(tmp_path / "r"))
    run.log_path.write_bytes(b"\xff\n")
    assert run.log().notes == [f"{run.log_path}: line 1 not UTF-8 text, skipped"]
