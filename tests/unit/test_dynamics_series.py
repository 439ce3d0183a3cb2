"""Finding snapshot series (our runs, Trainer outputs, model folders), selection, and file checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dynamics.errors import ProbeError
from dynamics.find.inputs import discover_all
from dynamics.find.series import (
    check_safetensors,
    discover,
    missing_step_error,
    select,
    weight_files,
)


def _model_dir(path: Path, extra: dict | None = None, **files: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 10, **(extra or {})}))
    for name, data in files.items():
        (path / f"{name}.json").write_text(json.dumps(data))
    return path


def _tokenizer(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n")
    return path


def test_our_run_sorted_with_steps_and_tokens(tmp_path: Path) -> None:
    run = tmp_path / "mlm"
    _tokenizer(run / "tokenizer")
    (run / "run.json").parent.mkdir(exist_ok=True)
    (run / "run.json").write_text(json.dumps({"objective": "mlm", "validation_blocks_path": "data/v.npy"}))
    for step in (100, 0, 20):
        _model_dir(run / "snapshots" / f"step-{step:07d}", snapshot={"step": step, "tokens_seen": step * 64})
    _model_dir(run / "snapshots" / ".tmp-step-0000300")  # an unfinished write is not a snapshot
    s = discover(run)
    assert s.kind == "run" and s.name == "mlm"
    assert s.steps == [0, 20, 100]
    assert [x.tokens_seen for x in s.snapshots] == [0, 1280, 6400]
    assert s.tokenizer_path == run / "tokenizer"
    assert s.data_path("validation_blocks_path") == run.resolve() / "data" / "v.npy"
    assert s.final.step == 100


def test_step_from_folder_name_without_snapshot_json(tmp_path: Path) -> None:
    run = tmp_path / "r"
    _tokenizer(run / "tokenizer")
    _model_dir(run / "snapshots" / "step-0000042")
    s = discover(run)
    assert s.steps == [42] and s.snapshots[0].tokens_seen is None


def test_run_files_read_through_run_dir(tmp_path: Path) -> None:
    """run.json's tokenizer path is used; non-finite numbers in snapshot.json read as unknown; an unreadable
    run.json or snapshot.json is a ProbeError naming the file."""
    run = tmp_path / "r"
    _tokenizer(run / "tok")
    (run / "run.json").write_text(json.dumps({"tokenizer": {"path": "tok"}}))
    snap = _model_dir(run / "snapshots" / "step-0000005")
    (snap / "snapshot.json").write_text('{"step": 5, "tokens_seen": Infinity}')
    s = discover(run)
    assert s.tokenizer_path == run / "tok" and s.steps == [5] and s.snapshots[0].tokens_seen is None
    (snap / "snapshot.json").write_text("{cut")
    with pytest.raises(ProbeError, match="snapshot.json"):
        discover(run)
    (run / "run.json").write_bytes(b"\xff")
    with pytest.raises(ProbeError, match="run.json"):
        discover(run)


def test_trainer_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "trainer-out"
    _tokenizer(out)
    _model_dir(out / "checkpoint-500", trainer_state={"global_step": 500, "num_input_tokens_seen": 1000})
    _model_dir(out / "checkpoint-1000")  # no trainer_state.json: step from the name
    s = discover(out)
    assert s.kind == "trainer"
    assert s.steps == [500, 1000]
    assert s.snapshots[0].tokens_seen == 1000 and s.snapshots[1].tokens_seen is None


def test_single_model_dir(tmp_path: Path) -> None:
    m = _model_dir(tmp_path / "model", extra={"step": 7})
    _tokenizer(m)
    s = discover(m)
    assert s.kind == "model" and s.steps == [7]
    m2 = _model_dir(tmp_path / "plain")
    _tokenizer(m2)
    assert discover(m2).steps == [0]


def test_step_folder_of_our_run_uses_the_run_tokenizer(tmp_path: Path) -> None:
    run = tmp_path / "mlm"
    _tokenizer(run / "tokenizer")
    (run / "run.json").write_text("{}")
    snap = _model_dir(run / "snapshots" / "step-0000008", snapshot={"step": 8})
    s = discover(snap)
    assert s.name == "mlm" and s.steps == [8] and s.tokenizer_path == run / "tokenizer"
    assert s.run_dir == run.resolve()


def test_selection_by_steps_and_every(tmp_path: Path) -> None:
    run = tmp_path / "r"
    _tokenizer(run / "tokenizer")
    for step in (0, 1, 2, 4, 100, 200, 250):
        _model_dir(run / "snapshots" / f"step-{step:07d}")
    s = discover(run)
    assert [x.step for x in select(s, steps=[0, 100])] == [0, 100]
    assert [x.step for x in select(s, every=100)] == [0, 100, 200, 250]  # the final one is always kept
    with pytest.raises(ProbeError):
        select(s, every=0)


@pytest.mark.parametrize("layout", ["missing", "file", "empty", "empty-snapshots", "no-tokenizer"])
def test_bad_layouts_name_the_path(tmp_path: Path, layout: str) -> None:
    target = tmp_path / "x"
    if layout == "file":
        target.write_text("")
    elif layout == "empty":
        target.mkdir()
    elif layout == "empty-snapshots":
        (target / "snapshots").mkdir(parents=True)
        _tokenizer(target / "tokenizer")
    elif layout == "no-tokenizer":
        _model_dir(target / "snapshots" / "step-0000000")
    with pytest.raises(ProbeError) as err:
        discover(target)
    assert str(target) in str(err.value) and "\n" not in str(err.value)


def test_duplicate_names_get_the_parent_prefix(tmp_path: Path) -> None:
    paths = []
    for parent in ("a", "b"):
        m = _model_dir(tmp_path / parent / "model")
        _tokenizer(m)
        paths.append(m)
    names = [s.name for s in discover_all(paths)]
    assert names == ["a/model", "b/model"]
    with pytest.raises(ProbeError):
        discover_all([paths[0], paths[0]])


def test_safetensors_check(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    good = tmp_path / "model.safetensors"
    save_file({"w": np.arange(100, dtype=np.float32).reshape(10, 10)}, str(good))
    check_safetensors(good)
    assert weight_files(tmp_path) == [good]
    data = good.read_bytes()
    for name, payload in (("short", data[:-7]), ("tiny", data[:5]), ("garbage", b"\x10" * 64), ("longer", data + b"x")):
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(payload)
        with pytest.raises(ProbeError, match=str(bad).replace(".", r"\.")):
            check_safetensors(bad)
    with pytest.raises(ProbeError, match="no model weights"):
        weight_files(tmp_path / "nothing")


def test_a_step_whose_folder_records_another_is_named_as_such(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _tokenizer(run / "tokenizer")
    (run / "run.json").write_text(json.dumps({"objective": "mlm"}))
    for step, recorded in ((0, 0), (2, 5), (4, 4)):
        _model_dir(run / "snapshots" / f"step-{step:07d}", snapshot={"step": recorded})
    trainer = tmp_path / "trainer"
    _model_dir(trainer / "checkpoint-10", trainer_state={"global_step": 12})
    _tokenizer(trainer)
    series = discover_all([run, trainer])
    message = str(missing_step_error(series, 2))
    assert message.startswith(f"{run.resolve()}/snapshots/step-0000002: named for step 2 but its snapshot.json "
                              "records step 5") and "pass --steps 5" in message
    assert "its trainer_state.json records step 12" in str(missing_step_error(series, 10))
    assert "no snapshot at step 3 (available: 0,4,5,12); fix --steps" in str(missing_step_error(series, 3))
