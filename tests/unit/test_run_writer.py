"""`common.run_dir.RunWriter`: what the trainer writes is what `RunDir` reads, byte for byte as the format has always
been spelled (run.json indented by 2 in its key order, one compact JSON line per log row, snapshot.json with the
step first), and nothing is seen half-written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.run_dir import (
    TOKEN_COUNTS,
    VALIDATION_BLOCKS,
    RunDir,
    RunWriter,
    run_record,
    snapshot_record,
    train_row,
    validation_row,
)


class Model:
    """Stands in for a Hugging Face model: `save_pretrained` writes one weights file (or fails when told to)."""

    def __init__(self, weights: bytes, fail: bool = False) -> None:
        self.weights, self.fail = weights, fail

    def save_pretrained(self, save_directory: str, **kwargs: Any) -> None:
        assert kwargs == {"safe_serialization": True}
        (Path(save_directory) / "model.safetensors").write_bytes(self.weights)
        if self.fail:
            raise OSError("disk full")


RECORD = dict(config={"seed": 3, "lr": 0.001}, objective="taco", preset="tiny", seed=3, block_size=32,
              model_config={"hidden_size": 8}, corpus_source="docs.jsonl", corpus_fingerprint="f" * 8,
              corpus_description="3 documents", train_blocks=np.int64(40), validation_blocks=np.int64(4),
              tokenizer_hash="t" * 8, vocab_size=120, world_size=1, global_batch_tokens=128,
              versions={"python": "3.12"}, started="2026-12-07T04:00:00+0000", device="cpu")


def test_run_json_keeps_its_field_order_and_layout(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path / "run")
    writer.path.mkdir()
    writer.write_run_json({**run_record(**RECORD), "extra": Path("x")})  # not JSON: written as its str
    text = writer.run_json.read_text()
    data = json.loads(text)
    assert list(data) == ["config", "objective", "preset", "seed", "block_size", "model_config", "corpus", "tokenizer",
                          "validation_blocks_path", "token_counts_path", "world_size", "global_batch_tokens",
                          "versions", "started", "device", "extra"]
    assert text == json.dumps(data, indent=2) and not text.endswith("\n")
    assert data["corpus"] == {"source": "docs.jsonl", "fingerprint": "ffffffff", "description": "3 documents",
                              "train_blocks": 40, "validation_blocks": 4}
    assert data["tokenizer"] == {"path": "tokenizer", "hash": "tttttttt", "vocab_size": 120}
    assert (data["validation_blocks_path"], data["token_counts_path"]) == (VALIDATION_BLOCKS, TOKEN_COUNTS)
    assert data["extra"] == "x"
    assert RunDir(writer.path).config == data and RunDir(writer.path).is_run()


def test_inputs_go_where_run_json_says(tmp_path: Path) -> None:
    class Tokenizer:
        def save_pretrained(self, save_directory: str, **kwargs: Any) -> None:
            Path(save_directory).mkdir()
            (Path(save_directory) / "tokenizer.json").write_text("{}")

    writer = RunWriter(tmp_path / "new" / "run")
    writer.write_inputs(Tokenizer(), np.arange(6, dtype=np.int32).reshape(2, 3), np.array([5, 0, 2]))
    writer.write_run_json(run_record(**RECORD))
    run = RunDir(writer.path)
    assert (run.tokenizer_dir / "tokenizer.json").is_file()
    assert np.load(run.path / run.config["validation_blocks_path"]).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert np.load(run.path / run.config["token_counts_path"]).tolist() == [5, 0, 2]


def test_log_rows_are_compact_lines_the_reader_reads_back(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path)
    writer.start_log()
    assert writer.log_path.read_bytes() == b""
    mlm = train_row(step=1, tokens_seen=64, lr=1e-4, loss=2.5, mlm_loss=2.5, tc_loss=None, mlm_accuracy=0.1,
                    grad_norm=1.25, tokens_per_s=1234.5678, elapsed_s=0.123456)
    taco = train_row(step=2, tokens_seen=128, lr=2e-4, loss=3.0, mlm_loss=2.0, tc_loss=1.0, mlm_accuracy=0.2,
                     grad_norm=0.5, tokens_per_s=10.0, elapsed_s=1.0)
    val = validation_row(step=2, tokens_seen=128, loss=3.5, mlm_loss=2.5, tc_loss=1.0, mlm_accuracy=0.3,
                         elapsed_s=2.00049)
    for row in (mlm, taco, val):
        writer.append_log(row)
    assert writer.log_path.read_text().splitlines() == [
        '{"step": 1, "tokens_seen": 64, "lr": 0.0001, "loss": 2.5, "mlm_loss": 2.5, "mlm_accuracy": 0.1, '
        '"grad_norm": 1.25, "tokens_per_s": 1234.6, "elapsed_s": 0.123}',
        '{"step": 2, "tokens_seen": 128, "lr": 0.0002, "loss": 3.0, "mlm_loss": 2.0, "tc_loss": 1.0, '
        '"mlm_accuracy": 0.2, "grad_norm": 0.5, "tokens_per_s": 10.0, "elapsed_s": 1.0}',
        '{"step": 2, "tokens_seen": 128, "split": "validation", "loss": 3.5, "mlm_loss": 2.5, "tc_loss": 1.0, '
        '"mlm_accuracy": 0.3, "elapsed_s": 2.0}',
    ]
    log = RunDir(tmp_path).log()
    assert log.rows == [mlm, taco, val] and log.notes == [] and log.complete
    writer.start_log()  # an existing log is kept
    assert len(writer.log_path.read_text().splitlines()) == 3


def test_truncating_the_log_keeps_the_rows_up_to_the_step_and_drops_a_cut_line(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path)
    lines = ['{"step": 1, "elapsed_s": 1.0}', '{"step": 2, "split": "validation", "elapsed_s": 2.5}',
             '{"step": 3, "elapsed_s": 3.0}', '{"step": 4, "elapsed_s": 4.0}']
    writer.log_path.write_text("\n".join(lines) + "\n" + '{"step": 5, "elap')  # killed while writing step 5
    assert writer.elapsed_at(2) == 2.5
    writer.truncate_log(2)
    assert writer.log_path.read_text() == lines[0] + "\n" + lines[1] + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]  # no temporary left
    assert writer.elapsed_at(10) == 2.5
    RunWriter(tmp_path / "none").truncate_log(3)  # no log: nothing to do
    assert not (tmp_path / "none").exists() and RunWriter(tmp_path / "none").elapsed_at(3) == 0.0


def test_a_snapshot_is_listed_only_when_complete(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path)
    record = snapshot_record(tokens_seen=128, train_loss=None, val_mlm_loss=2.5, val_tc_loss=1.0,
                             val_mlm_accuracy=0.25, wall_time=3.14159, objective="mlm")
    folder = writer.write_snapshot(20, Model(b"old"), record)
    assert folder == tmp_path / "snapshots" / "step-0000020"
    text = (folder / "snapshot.json").read_text()
    assert text == json.dumps({"step": 20, "tokens_seen": 128, "train_loss": None, "val_loss": 2.5,
                               "val_mlm_loss": 2.5, "val_tc_loss": 1.0, "val_mlm_accuracy": 0.25,
                               "wall_time": 3.142, "objective": "mlm"}, indent=2)
    with pytest.raises(OSError, match="disk full"):
        writer.write_snapshot(20, Model(b"new", fail=True), record)
    with pytest.raises(OSError, match="disk full"):
        writer.write_snapshot(30, Model(b"new", fail=True), record)
    run = RunDir(tmp_path)
    assert [s.step for s in run.snapshots()] == [20]
    assert (run.snapshot_path(20) / "model.safetensors").read_bytes() == b"old"
    assert run.snapshots()[0].info()["val_mlm_accuracy"] == 0.25
    assert sorted(p.name for p in run.snapshots_dir.iterdir()) == ["step-0000020"]  # no temporary folder left

    writer.write_snapshot(20, Model(b"new"), record)  # a rewritten snapshot replaces the old one whole
    assert (run.snapshot_path(20) / "model.safetensors").read_bytes() == b"new"
    assert sorted(p.name for p in run.snapshots_dir.iterdir()) == ["step-0000020"]
