"""Pythia end to end: `python -m dynamics.probe EleutherAI/pythia-tiny --revisions all --probe-text FILE` on a Hub
cache written by the test. A tiny random GPTNeoXForCausalLM (Pythia's architecture, with a GPT-NeoX byte-level BPE
tokenizer) is trained a few next-token steps between snapshots (`tests.causal_fixture`) and each snapshot is stored
as the revision `stepN` of `EleutherAI/pythia-tiny` (`tests.hub_fixture`), with log-spaced steps as Pythia's.

The store must say tokens seen = step × 2,097,152 (Pythia's tokens per step), its masked_* rows must be the
next-token head's (the anchors note says so, and they equal those of the same checkpoints probed as a Trainer
output folder, whose next-token values `test_probe_causal` checks against a float64 brute force), and the cache must
be left byte for byte as it was."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dynamics import probe
from dynamics.results import store
from tests.causal_fixture import build_causal_series
from tests.hub_fixture import add_revision, repo_folder
from tests.integration.conftest import english_docs, one_thread_env, one_torch_thread

REPO = Path(__file__).resolve().parents[2]
REPO_ID = "EleutherAI/pythia-tiny"
STEPS = (1, 2, 4, 8)
TOKENS_PER_STEP = 2_097_152
SETTINGS = dict(probe_blocks=8, block_size=32, seed=0)
KEY = ["step", "layer", "metric", "variant"]
MASKED = ("masked_anchor_sim", "masked_hidden_anchor_sim", "masked_accuracy", "masked_mrr", "masked_median_rank")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@pytest.fixture(scope="module")
def pythia_cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"trainer": the Trainer output (`checkpoint-N/`, tokenizer beside them), "cache": a Hub cache holding each
    checkpoint's weights and config plus the tokenizer as revision `stepN` (as Pythia's branches do), "text"}."""
    root = tmp_path_factory.mktemp("pythia-hub")
    with one_torch_thread():
        trainer = build_causal_series(root / "trainer", "neox", english_docs(), steps=STEPS)
    cache = root / "hf-cache"
    for step in STEPS:
        staged = root / "staged" / f"step{step}"
        shutil.copytree(trainer / f"checkpoint-{step}", staged, ignore=shutil.ignore_patterns("trainer_state.json"))
        for name in TOKENIZER_FILES:
            if (trainer / name).is_file():
                shutil.copy2(trainer / name, staged / name)
        add_revision(cache, REPO_ID, f"step{step}", staged)
    text = root / "probe.txt"
    text.write_text("\n\n".join(english_docs(30_000)), encoding="utf-8")
    return {"trainer": trainer, "cache": cache, "text": text}


def _digest(root: Path) -> dict[str, str]:
    """Every path under `root` → the sha256 of its bytes, or where a symlink points, or "dir"."""
    def one(p: Path) -> str:
        if p.is_symlink():
            return "-> " + os.readlink(p)
        return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return {str(p.relative_to(root)): one(p) for p in sorted(root.rglob("*"))}


FAMILIES = ["anchors", "context", "geometry", "attention", "copying"]


def test_pythia_series_from_the_hub_cache(pythia_cache: dict[str, Path], tmp_path: Path) -> None:
    cache = pythia_cache["cache"]
    before = _digest(cache)
    env = {**one_thread_env(), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, "-m", "dynamics.probe", REPO_ID, "--revisions", "all", "--probe-text",
         str(pythia_cache["text"]), "--probe-blocks", str(SETTINGS["probe_blocks"]), "--block-size",
         str(SETTINGS["block_size"]), "--metrics", ",".join(FAMILIES), "--no-figures", "--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert _digest(cache) == before, "the probe changed the Hub cache"

    with store.open(tmp_path / "dynamics-results", readonly=True) as s:
        rows = s.metrics().sort_values(KEY).reset_index(drop=True)
        snaps = s.snapshots()
        notes = s.notes()
        runs = s.runs()
    assert set(rows["run"]) == {REPO_ID}
    assert [json.loads(m)["architecture_kind"] for m in runs["meta"]] == ["causal"]
    assert dict(zip(snaps["step"], snaps["tokens_seen"], strict=True)) == {s: s * TOKENS_PER_STEP for s in STEPS}
    assert sorted(set(rows["step"])) == list(STEPS)
    assert all(Path(p).parent == repo_folder(cache, REPO_ID) / "snapshots" for p in snaps["path"])

    # the masked_* rows: one per snapshot at the last layer, from the next-token head, as the anchors note says
    for metric in MASKED:
        at = rows[rows["metric"] == metric]
        assert set(at["step"]) == set(STEPS) and set(at["layer"]) == {2}, metric
    head = notes[notes["note"].str.contains("next-token head: at each")]
    assert set(head["family"]) == {"anchors"} and set(head["step"]) == set(STEPS)
    assert head["note"].str.contains("architecture: causal").all()

    # attention and copying read from a NeoX model in the Hub cache: every layer at every step, no next-token score
    for metric in ("attn_entropy", "attn_prev_token_max", "induction_max", "dup_token_max"):
        at = rows[rows["metric"] == metric]
        assert set(at["step"]) == set(STEPS) and set(at["layer"]) == {1, 2} and at["value"].notna().all(), metric
    assert not (rows["metric"] == "attn_next_token_max").any()

    # the same checkpoints as a Trainer output folder give the same values (tokens seen aside)
    with one_torch_thread():
        probe.run(pythia_cache["trainer"], out=tmp_path / "trainer", probe_text=pythia_cache["text"],
                  progress=False, figures=False, metrics=FAMILIES, **SETTINGS)
    with store.open(tmp_path / "trainer", readonly=True) as s:
        ref = s.metrics().sort_values(KEY).reset_index(drop=True)
    assert len(rows) == len(ref) > 100
    pd.testing.assert_frame_equal(rows[[*KEY, "value"]], ref[[*KEY, "value"]], check_exact=False,
                                  rtol=1e-6, atol=1e-9)
