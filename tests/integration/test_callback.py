"""`dynamics.callback.SnapshotCallback` with the real `transformers.Trainer` (a tiny BERT and a tiny GPT-2 on
English text the tests write), and `common.snapshot_writer.SnapshotWriter` driven by a hand-written loop: the
series they write is probed, every snapshot has rows, tokens seen increase, and a Trainer killed after a checkpoint
and resumed from it continues its series without duplicate snapshots or log rows."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    BertTokenizerFast,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from common.run_dir import RunDir
from common.snapshot_writer import SnapshotWriter
from dynamics import probe
from dynamics.callback import COUNTED_TOKENS, TRAINER_TOKENS, SnapshotCallback
from experiments.causal_lm import Blocks
from tests.causal_fixture import tiny_causal
from tests.causal_fixture import train_tokenizer as train_causal_tokenizer
from tests.integration.conftest import english_docs, one_torch_thread, pack, train_tokenizer

BLOCK, BATCH = 32, 4
PROBE = dict(probe_blocks=8, progress=False, figures=False, metrics=["geometry"])




class Kill(Exception):
    """Stands for the process being killed at a step."""


class KillAt(TrainerCallback):
    """Raises `Kill` at the end of `step`, after the Trainer's checkpoint at an earlier step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - the TrainerCallback signature
        if state.global_step == self.step:
            raise Kill


@pytest.fixture(scope="module")
def bert_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, np.ndarray]:
    docs = english_docs(60_000)
    tok = BertTokenizerFast.from_pretrained(str(train_tokenizer(docs, 400, tmp_path_factory.mktemp("tok"))))
    ids = [tok(d, add_special_tokens=False)["input_ids"] for d in docs]
    return tok, pack(ids, BLOCK, tok.cls_token_id, tok.sep_token_id)


@pytest.fixture(scope="module")
def gpt2_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, np.ndarray]:
    docs = english_docs(60_000)
    tok = AutoTokenizer.from_pretrained(str(train_causal_tokenizer("gpt2", docs, tmp_path_factory.mktemp("gtok"))))
    tok.pad_token = tok.eos_token
    stream = [t for d in docs for t in tok(d)["input_ids"] + [tok.eos_token_id]]
    n = len(stream) // BLOCK
    return tok, np.asarray(stream[: n * BLOCK], dtype=np.int32).reshape(n, BLOCK)


def _trainer(kind: str, setup: tuple[Any, np.ndarray], out: Path, callbacks: list, *, max_steps: int = 8,
             **args: Any) -> Any:
    tok, blocks = setup
    torch.manual_seed(0)
    if kind == "bert":
        model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                           num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    else:
        model = tiny_causal("gpt2", len(tok), bos=tok.bos_token_id, eos=tok.eos_token_id)
    targs = TrainingArguments(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=BATCH,
                              learning_rate=1e-3, logging_steps=1, save_steps=4, report_to=[], use_cpu=True, seed=0,
                              disable_tqdm=True, dataloader_num_workers=0, **args)
    collator = DataCollatorForLanguageModeling(tok, mlm=kind == "bert", seed=0)
    return Trainer(model=model, args=targs, train_dataset=Blocks(blocks[:64]), data_collator=collator,
                   processing_class=tok, callbacks=callbacks)


def _stored_steps(out: Path) -> dict[int, int]:
    with sqlite3.connect(out / "results.sqlite") as conn:
        return dict(conn.execute("SELECT step, COUNT(*) FROM metrics WHERE value IS NOT NULL GROUP BY step"))


def _check_series(run: Path, expected_steps: list[int]) -> list[dict[str, Any]]:
    """The folder holds exactly the expected snapshots, tokens seen increase with the step, and log.jsonl's
    training rows have one row per step, in order. Returns the training rows."""
    rd = RunDir(run)
    snaps = rd.snapshots()
    assert [s.step for s in snaps] == expected_steps
    tokens = [s.info()["tokens_seen"] for s in snaps]
    assert tokens[0] == 0 and all(b > a for a, b in zip(tokens, tokens[1:], strict=False)), tokens
    rows = [r for r in rd.log().rows if "loss" in r and r.get("split") != "validation"]
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), f"duplicate or unordered log rows: {steps}"
    return rows


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_trainer_run_writes_a_series_the_probe_reads(kind: str, bert_setup, gpt2_setup, tmp_path: Path) -> None:
    """BERT: probed afterwards. GPT-2: probed while it trains, by the follower the callback starts (follow=True),
    which must end by itself after the final snapshot."""
    run, out, follow = tmp_path / "run", tmp_path / "out", kind == "gpt2"
    callback = SnapshotCallback(every=4, follow=follow, follow_out=out, follow_args=[
        "--probe-blocks", "8", "--metrics", "geometry", "--no-figures", "--follow-timeout", "300"],
        config={"data": "english_docs", "block": BLOCK})
    with one_torch_thread():
        _trainer(kind, bert_setup if kind == "bert" else gpt2_setup, run, [callback]).train()
    rows = _check_series(run, [0, 1, 2, 4, 8])
    assert [r["step"] for r in rows] == list(range(1, 9))  # the Trainer's logged losses, one per step
    assert all(np.isfinite(r["loss"]) and r["lr"] >= 0 for r in rows)
    meta = json.loads((run / "run.json").read_text())
    assert meta["config"]["max_steps"] == 8 and meta["snapshot_steps"] == [0, 1, 2, 4, 8]
    assert meta["config"]["data"] == "english_docs" and meta["config"]["block"] == BLOCK  # the recipe's own settings
    assert meta["config"]["learning_rate"] == 1e-3  # beside the Trainer's arguments
    assert meta["objective"] == ("mlm" if kind == "bert" else "causal_lm")
    assert meta["tokens_seen"] == {"source": COUNTED_TOKENS, "tokens_per_step": BATCH * BLOCK, "seq_len": BLOCK,
                                   "global_batch": BATCH}
    assert RunDir(run).snapshots()[-1].info()["tokens_seen"] == 8 * BATCH * BLOCK
    if follow:  # train end waited for the follower
        assert callback.follower is not None and callback.follower.returncode == 0, (out / "follow.log").read_text()
        assert "followed:" in (out / "follow.log").read_text()  # --follow ran, and ended after the final step
    else:
        assert callback.follower is None
        with one_torch_thread():
            probe.run(run, out=out, **PROBE)
    stored = _stored_steps(out)
    assert sorted(stored) == [0, 1, 2, 4, 8] and min(stored.values()) > 0


def test_killed_trainer_resumed_from_a_checkpoint_continues_its_series(bert_setup, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with one_torch_thread():
        with pytest.raises(Kill):  # killed at step 7: checkpoint-4 saved, snapshots and log rows to 6
            _trainer("bert", bert_setup, run, [SnapshotCallback(every=3), KillAt(7)],
                     include_num_input_tokens_seen=True).train()
        assert [s.step for s in RunDir(run).snapshots()] == [0, 1, 2, 3, 6]
        assert max(r["step"] for r in RunDir(run).log().rows) == 6  # rows 5 and 6 are past checkpoint-4
        _trainer("bert", bert_setup, run, [SnapshotCallback(every=3)],
                 include_num_input_tokens_seen=True).train(resume_from_checkpoint=str(run / "checkpoint-4"))
    rows = _check_series(run, [0, 1, 2, 3, 6, 8])
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert [r["tokens_seen"] for r in rows] == [s * BATCH * BLOCK for s in range(1, 9)]  # the Trainer's count
    assert json.loads((run / "run.json").read_text())["tokens_seen"]["source"] == TRAINER_TOKENS


def test_a_hand_written_loop_writes_a_series_through_the_writer(bert_setup, tmp_path: Path) -> None:
    tok, blocks = bert_setup
    run, steps = tmp_path / "loop", 6
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    collator = DataCollatorForLanguageModeling(tok, seed=0)
    writer = SnapshotWriter(run, max_steps=steps, steps=[3])
    writer.begin(tokenizer=tok, validation_blocks=blocks[-16:], run_info={"objective": "mlm"})
    with one_torch_thread():
        writer(model, 0, 0)
        for step in range(1, steps + 1):
            batch = collator([{"input_ids": b} for b in blocks[(step - 1) * BATCH: step * BATCH].tolist()])
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            writer(model, step, step * BATCH * BLOCK, {"loss": loss.detach()})
        probe.run(run, out=tmp_path / "out", **PROBE)
    rows = _check_series(run, [0, 3, 6])
    assert [r["step"] for r in rows] == list(range(1, steps + 1)) and all(np.isfinite(r["loss"]) for r in rows)
    assert sorted(_stored_steps(tmp_path / "out")) == [0, 3, 6]


def test_recipe_settings_may_not_shadow_the_trainers_arguments() -> None:
    with pytest.raises(ValueError, match="learning_rate"):
        SnapshotCallback(config={"learning_rate": 0.1})


def test_causal_figure_of_a_trainer_series(gpt2_setup, tmp_path: Path) -> None:
    """experiments.figures_causal on a GPT-2 Trainer series probed with the copying and attention families: the
    figure is written (its folder made), also while log.jsonl ends in a line still being written; bad input is one
    error line, exit 2, and writes nothing."""
    from experiments import figures_causal

    run, out = tmp_path / "run", tmp_path / "run" / "dynamics"
    with one_torch_thread():
        _trainer("gpt2", gpt2_setup, run, [SnapshotCallback(every=4)]).train()
        probe.run(run, out=out, **{**PROBE, "metrics": ["attention", "copying"]})
    with (run / "log.jsonl").open("a") as log:
        log.write('{"step": 9, "lo')  # the trainer is writing its next row
    png = tmp_path / "figs" / "causal.png"
    args = ["--run", str(run), "--out", str(png), "--heldout-blocks", "4", "--mark-onset", "induction_max"]
    with one_torch_thread():
        assert figures_causal.main(args) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = tmp_path / "figs" / "bad.png"
    assert figures_causal.main(["--run", str(run), "--out", str(bad), "--mark-onset", "loss"]) == 2
    assert figures_causal.main(["--run", str(tmp_path / "nowhere"), "--out", str(bad)]) == 2
    assert not bad.exists() and sorted(p.name for p in png.parent.iterdir()) == ["causal.png"]
