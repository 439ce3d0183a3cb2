"""Step-named model folders (MultiBERTs' release: `multiberts-seed_0-step_20k/` …) as one series, and where that
layout sits among the others (our run > Trainer output > step folders > single model folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dynamics.errors import ProbeError
from dynamics.find.series import discover, named_step


def _model(path: Path, tokenizer: bool = False) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 10}))
    if tokenizer:
        (path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n")
    return path


@pytest.mark.parametrize("name, expected", [
    ("multiberts-seed_0-step_20k", ("multiberts-seed_0", 20_000)),
    ("multiberts-seed_4-step_2000k", ("multiberts-seed_4", 2_000_000)),
    ("multiberts-seed_0-step_0k", ("multiberts-seed_0", 0)),
    ("bert-step_2000", ("bert", 2000)),
    ("bert-step-2000", ("bert", 2000)),
    ("tiny_step_1m", ("tiny", 1_000_000)),
    ("Tiny-Step_3K", ("Tiny", 3000)),
    ("step-0000001", None),  # our snapshot folder: not this layout
    ("checkpoint-5", None),
    ("multiberts-seed_0-step_20kb", None),
    ("multiberts-seed_0", None),
])
def test_step_from_a_multiberts_name(name: str, expected: tuple[str, int] | None) -> None:
    assert named_step(Path(name)) == expected


def test_a_folder_of_step_named_models_is_one_series(tmp_path: Path) -> None:
    root = tmp_path / "multiberts-seed_0"
    for name in ("multiberts-seed_0-step_2000k", "multiberts-seed_0-step_0k", "multiberts-seed_0-step_20k"):
        _model(root / name, tokenizer=name.endswith("_0k"))
    (root / "multiberts-seed_0-step_40k").mkdir()  # no config.json: not a model, not a snapshot
    (root / "notes-step_1k.txt").write_text("a file, not a folder")
    s = discover(root)
    assert s.kind == "steps" and s.name == "multiberts-seed_0" and s.run_dir == root.resolve()
    assert s.steps == [0, 20_000, 2_000_000]
    assert [x.path.name for x in s.snapshots] == ["multiberts-seed_0-step_0k", "multiberts-seed_0-step_20k",
                                                  "multiberts-seed_0-step_2000k"]
    assert all(x.tokens_seen is None for x in s.snapshots)
    assert s.tokenizer_path == root.resolve() / "multiberts-seed_0-step_0k"  # the only folder that has one
    _model(root / "multiberts-seed_0-step_2000k", tokenizer=True)
    assert discover(root).tokenizer_path.name == "multiberts-seed_0-step_2000k"  # the latest first


def test_several_series_in_one_folder_or_one_step_twice(tmp_path: Path) -> None:
    mixed = tmp_path / "all-seeds"
    for name in ("multiberts-seed_0-step_20k", "multiberts-seed_1-step_20k"):
        _model(mixed / name, tokenizer=True)
    with pytest.raises(ProbeError, match=r"several series \(multiberts-seed_0, multiberts-seed_1\)"):
        discover(mixed)
    twice = tmp_path / "twice"
    for name in ("bert-step_2k", "bert-step_2000"):
        _model(twice / name, tokenizer=True)
    with pytest.raises(ProbeError, match="two snapshots claim step 2000"):
        discover(twice)


def test_layout_order(tmp_path: Path) -> None:
    """Our run and a Trainer output are recognised before step folders; step folders before a model folder."""
    run = tmp_path / "run"
    _model(run / "snapshots" / "step-0000004")
    _model(run / "tokenizer", tokenizer=True)
    _model(run / "extra-step_1k", tokenizer=True)
    assert discover(run).kind == "run" and discover(run).steps == [4]
    trainer = tmp_path / "trainer"
    _model(trainer / "checkpoint-10", tokenizer=True)
    _model(trainer / "extra-step_1k", tokenizer=True)
    assert discover(trainer).kind == "trainer" and discover(trainer).steps == [10]
    both = _model(tmp_path / "both", tokenizer=True)
    _model(both / "bert-step_3k")
    assert discover(both).kind == "steps" and discover(both).steps == [3000]
    plain = _model(tmp_path / "plain", tokenizer=True)
    (plain / "bert-step_3k").mkdir()  # a step-named folder without a model in it
    assert discover(plain).kind == "model" and discover(plain).steps == [0]
