"""The probe on causal LMs: tiny GPT-2, GPT-NeoX (Pythia's architecture) and Llama-style series trained a few
steps and saved as Trainer `checkpoint-N/` folders with their own tokenizers (`tests.causal_fixture`), probed end
to end from `--probe-text`. Every family is stored; the masked variant is the next-token head, and its ranks and
surprisals are those of a brute-force float64 pass of the model over each block."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dynamics import probe
from dynamics.measure import extract
from dynamics.measure.probe_set import ProbeSet
from dynamics.results import store
from tests.causal_fixture import ARCHS, build_causal_series
from tests.integration.conftest import english_docs, one_torch_thread, probe_text_file  # noqa: F401 - fixture

FAST = dict(progress=False, figures=False)
STEPS = (0, 3, 8)
SETTINGS = dict(block_size=32, probe_blocks=12)


@pytest.fixture(scope="module")
def causal_series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("causal-series")
    docs = english_docs()
    with one_torch_thread():
        return {arch: build_causal_series(root / arch, arch, docs, steps=STEPS) for arch in ARCHS}


def next_token_brute_force(checkpoint: Path, ids: np.ndarray, masked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ranks, surprisals) at every masked position i > 0 of every block (row-major) from `model(input_ids).logits`
    of the float64 model at i − 1: rank = 1 + #{v : z_v > z_true}, surprisal = logsumexp(z) − z_true (nats)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float64).eval()
    ranks, surprisals = [], []
    with torch.inference_mode():
        for b in range(ids.shape[0]):
            logits = model(input_ids=torch.from_numpy(ids[b : b + 1].astype(np.int64))).logits[0]
            for i in np.flatnonzero(masked[b]):
                if i == 0:
                    continue  # no context before a block's first token
                z = logits[i - 1]
                true = int(ids[b, i])
                ranks.append(1 + int((z > z[true]).sum()))
                surprisals.append(float(torch.logsumexp(z, 0) - z[true]))
    return np.array(ranks), np.array(surprisals)


@pytest.mark.parametrize("arch", ARCHS)
def test_probe_measures_a_causal_series(arch: str, causal_series: dict[str, Path], probe_text_file: Path,  # noqa: F811
                                        tmp_path: Path) -> None:
    series = causal_series[arch]
    summary = probe.run(series, out=tmp_path / "out", probe_text=probe_text_file, **SETTINGS, **FAST)
    with store.open(summary.out, readonly=True) as s:
        df = s.metrics()
        notes = s.notes()
        saved = s.probe_sets()
    with np.load(summary.out / saved["file"].iloc[0]) as data:
        ids, masked, content = data["ids"], data["masked"], data["content"]

    def layers(metric: str) -> set[int]:
        return set(df[df["metric"] == metric]["layer"])

    assert set(df["step"]) == set(STEPS)
    for metric in ("anchor_sim_word", "anchor_sim_emb", "anisotropy", "rankme", "norm_h"):
        assert layers(metric) == {0, 1, 2}, metric
    for metric in ("ctx_same_window", "ctx_gap_window"):
        assert layers(metric) == {1, 2}, metric
    for metric in ("tc_loss", "masked_anchor_sim", "masked_hidden_anchor_sim", "masked_accuracy", "masked_mrr",
                   "masked_median_rank"):
        assert layers(metric) == {2}, metric
        assert set(df[df["metric"] == metric]["step"]) == set(STEPS), metric
    assert set(df[df["metric"] == "cka_prev_snapshot"]["step"]) == {3, 8}
    drift = df[(df["metric"] == "anchor_drift") & (df["step"] == STEPS[-1])]["value"]
    assert drift.tolist() == pytest.approx([1.0])
    head_notes = notes[notes["note"].str.contains("next-token head: at each")]
    assert set(head_notes["family"]) == {"anchors"} and set(head_notes["step"]) == set(STEPS)
    assert head_notes["note"].str.contains("architecture: causal").all()

    # framing: no CLS/SEP; Llama-style blocks open with <s>, byte-level BPE blocks with text
    tok_config = json.loads((series / "tokenizer_config.json").read_text())
    vocab = json.loads((series / "tokenizer.json").read_text())["model"]["vocab"]
    if arch == "llama":
        assert (ids[:, 0] == vocab[tok_config["bos_token"]]).all() and not content[:, 0].any()
    else:
        assert content[:, 0].all()
    assert not content[ids == vocab[tok_config["eos_token"]]].any()

    value = df[df["variant"] == "all"].set_index(["metric", "step"])["value"]
    for step in STEPS:
        ranks, surprisals = next_token_brute_force(series / f"checkpoint-{step}", ids, masked)
        assert value["masked_accuracy", step] == pytest.approx(float(np.mean(ranks == 1)), abs=1e-12)
        assert value["masked_mrr", step] == pytest.approx(float(np.mean(1.0 / ranks)), abs=1e-6)
        assert value["masked_median_rank", step] == float(np.median(ranks))
        if step == STEPS[-1]:  # the extraction's own per-target values, on the probe set the store used
            probe_set = _stored_probe(ids, masked, content)
            acts = extract.extract_snapshot(series / f"checkpoint-{step}", probe_set)
            assert acts.masked is not None
            np.testing.assert_array_equal(acts.masked.rank, ranks)
            np.testing.assert_allclose(acts.masked.surprisal, surprisals, rtol=0, atol=1e-6)
    # a few steps of next-token training: the head ranks the true next token higher than at initialisation
    assert value["masked_mrr", STEPS[-1]] > value["masked_mrr", STEPS[0]]


def _stored_probe(ids: np.ndarray, masked: np.ndarray, content: np.ndarray) -> ProbeSet:
    n = int(content.sum())
    return ProbeSet(ids, content, masked, np.zeros(n, np.int8), np.full(n, -1, np.int32), np.zeros(0, np.int32),
                    np.arange(0), np.arange(0), ("frequent", "medium", "rare"), "", None, "stored", "probe set")


def test_gpt2_position_limit_sets_the_default_block_size(causal_series: dict[str, Path], probe_text_file: Path,  # noqa: F811
                                                         tmp_path: Path) -> None:
    """GPT-2's config names its position limit `n_positions` (64 here): without --block-size the probe blocks fit
    it instead of the default 128, which its position embedding could not take."""
    summary = probe.run(causal_series["gpt2"], out=tmp_path / "out", probe_text=probe_text_file, steps=[8],
                        metrics=["anchors"], probe_blocks=2, **FAST)
    with store.open(summary.out, readonly=True) as s:
        assert s.probe_sets()["block_size"].tolist() == [64]
