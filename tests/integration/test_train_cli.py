"""End-to-end runs of `python -m taco.train` with a tiny model on real English text."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer

from taco.train import main

TINY = ["--preset", "tiny", "--model-overrides", '{"hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128}',
        "--vocab-size", "2000", "--block-size", "32", "--batch-size", "8", "--eval-blocks", "16",
        "--no-progress", "--tc-negatives", "10"]


def _args(corpus, out, cache, *extra):
    return [*TINY, "--corpus", str(corpus), "--output-dir", str(out), "--data-cache", str(cache), *extra]


def _log(run: Path, split=None):
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("split") == split]


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(path)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def mlm_run(small_english_corpus, cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mlm"
    assert main(_args(small_english_corpus, out, cache, "--max-steps", "6", "--snapshot-every", "4",
                      "--log-every", "2")) == 0
    return out


def test_run_directory_follows_the_design(mlm_run):
    run = json.loads((mlm_run / "run.json").read_text())
    assert run["objective"] == "mlm" and run["config"]["block_size"] == 32
    assert run["device"] == "cpu"  # the resolved device (the flag said auto)
    assert len(run["corpus"]["fingerprint"]) == 64 and run["tokenizer"]["hash"]
    steps = sorted(int(p.name.split("-")[1]) for p in (mlm_run / "snapshots").iterdir())
    assert steps == [0, 1, 2, 4, 6]
    assert not list((mlm_run / "snapshots").glob(".*")), "temporary snapshot directories left behind"
    train_rows = _log(mlm_run)
    assert [r["step"] for r in train_rows] == [1, 2, 4, 6]
    for key in ("tokens_seen", "lr", "loss", "mlm_loss", "mlm_accuracy", "grad_norm", "tokens_per_s", "elapsed_s"):
        assert key in train_rows[-1]
    assert train_rows[-1]["tokens_seen"] == 6 * 8 * 32
    val_rows = _log(mlm_run, "validation")
    assert [r["step"] for r in val_rows] == steps
    info = json.loads((mlm_run / "snapshots" / "step-0000006" / "snapshot.json").read_text())
    assert info["step"] == 6 and info["val_loss"] > 0 and info["tokens_seen"] == 6 * 256


def test_snapshots_load_with_hugging_face_auto_classes(mlm_run):
    tok = AutoTokenizer.from_pretrained(str(mlm_run / "tokenizer"))
    ids = tok("The government of the people shall make laws.")["input_ids"]
    assert tok.unk_token_id not in ids, tok.convert_ids_to_tokens(ids)
    first = AutoModelForMaskedLM.from_pretrained(str(mlm_run / "snapshots" / "step-0000000"))
    last = AutoModelForMaskedLM.from_pretrained(str(mlm_run / "snapshots" / "step-0000006"))
    assert (mlm_run / "snapshots" / "step-0000006" / "model.safetensors").is_file()
    with torch.no_grad():
        logits = last(input_ids=torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tok))
    w0 = first.bert.embeddings.word_embeddings.weight
    w1 = last.bert.embeddings.word_embeddings.weight
    assert not torch.equal(w0, w1)


def test_mlm_loss_decreases_over_training(small_english_corpus, cache, tmp_path):
    out = tmp_path / "longer"
    assert main(_args(small_english_corpus, out, cache, "--max-steps", "40", "--snapshot-every", "40",
                      "--log-every", "5", "--lr", "1e-3")) == 0
    val = _log(out, "validation")
    assert val[-1]["mlm_loss"] < val[0]["mlm_loss"] - 0.4


def test_taco_run_logs_tc_loss(small_english_corpus, cache, tmp_path):
    out = tmp_path / "taco"
    assert main(_args(small_english_corpus, out, cache, "--objective", "taco", "--max-steps", "3",
                      "--log-every", "1", "--tc-anchors", "masked")) == 0
    rows = _log(out)
    assert all(r["tc_loss"] > 0 for r in rows)
    assert all(abs(r["loss"] - r["mlm_loss"] - r["tc_loss"]) < 1e-4 for r in rows)


def test_resume_after_kill_reproduces_the_uninterrupted_trajectory(small_english_corpus, cache, tmp_path):
    extra = ("--objective", "taco", "--max-steps", "30", "--snapshot-every", "8", "--log-every", "1")
    ref = tmp_path / "ref"
    assert main(_args(small_english_corpus, ref, cache, *extra)) == 0

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "taco.train", *_args(small_english_corpus, killed, cache, *extra)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        log = killed / "log.jsonl"
        if log.exists() and any(json.loads(x).get("step", 0) >= 11 for x in log.read_text().splitlines() if x.endswith("}")):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((killed / "state" / "state.json").read_text())
    assert 8 <= state["step"] < 30, "the kill should land mid-run, after the step-8 state"

    assert main(_args(small_english_corpus, killed, cache, *extra, "--resume")) == 0
    a, b = _log(ref), _log(killed)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 31))
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "mlm_loss", "tc_loss", "lr", "grad_norm"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), (ra["step"], key)
    wa = AutoModelForMaskedLM.from_pretrained(str(ref / "snapshots" / "step-0000030")).state_dict()
    wb = AutoModelForMaskedLM.from_pretrained(str(killed / "snapshots" / "step-0000030")).state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "taco.train", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=600)


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--tc-window", "4"], "--tc-window"),
        (["--tc-negatives", "0"], "--tc-negatives"),
        (["--block-size", "600"], "position limit"),
        (["--preset", "enormous"], "invalid choice"),
        (["--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_bad_flags_exit_2_with_one_line(small_english_corpus, cache, tmp_path, extra, fragment):
    res = _cli(*_args(small_english_corpus, tmp_path / "r", cache), *extra)
    assert res.returncode == 2
    assert fragment in res.stderr
    assert not (tmp_path / "r").exists()


def test_bad_corpus_paths_exit_2(cache, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for corpus in (tmp_path / "missing.txt", empty, tmp_path):
        res = _cli(*_args(corpus, tmp_path / "r", cache))
        assert res.returncode == 2, res.stderr
        lines = [x for x in res.stderr.strip().splitlines() if x.startswith("error:")]
        assert len(lines) == 1 and str(corpus.name) in lines[0]


def test_existing_run_is_never_damaged(mlm_run, small_english_corpus, cache):
    before = _tree_digest(mlm_run)
    # Same directory, different objective, no --resume/--overwrite.
    res = _cli(*_args(small_english_corpus, mlm_run, cache, "--objective", "taco"))
    assert res.returncode == 2 and "--resume" in res.stderr
    # --resume with a different configuration.
    res = _cli(*_args(small_english_corpus, mlm_run, cache, "--resume", "--tc-window", "7", "--max-steps", "6"))
    assert res.returncode == 2 and "tc_window" in res.stderr
    # --resume with a tokenizer that does not match the run's.
    other = mlm_run.parent / "other-tok"
    from taco.tokenizer import train_wordpiece

    train_wordpiece(["a completely different tiny corpus of words"] * 20, 60).save_pretrained(str(other))
    # (the run's own options otherwise: a tokenizer is checked by its hash, not by how its path is spelled)
    res = _cli(*_args(small_english_corpus, mlm_run, cache, "--resume", "--max-steps", "6", "--snapshot-every", "4",
                      "--log-every", "2", "--tokenizer", str(other)))
    assert res.returncode == 2 and "the tokenizer differs from the one" in res.stderr, res.stderr
    assert _tree_digest(mlm_run) == before


@pytest.mark.slow
def test_two_process_gloo_training_with_global_negatives(small_english_corpus, cache, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "taco.train", *_args(small_english_corpus, out, cache, "--objective", "taco", "--max-steps", "3",
                                      "--log-every", "1", "--device", "cpu")]
    # A hang (e.g. at process-group teardown) must fail this test, not eat the CI budget: kill the whole group.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        _, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"2-process training did not finish in 600 s; stderr tail:\n{stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2
    rows = _log(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[-1]["tokens_seen"] == 3 * 2 * 8 * 32
    assert all(r["tc_loss"] > 0 for r in rows)
    assert (out / "snapshots" / "step-0000003" / "model.safetensors").is_file()
