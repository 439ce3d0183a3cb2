"""Causal LMs' stored values against the independent float64 references (`formulas.REFERENCES`).

Three probed series — tiny GPT-2, GPT-NeoX and Llama-style models trained a few steps (`tests.causal_fixture`,
Trainer `checkpoint-N/` layout, `--probe-text`). The masked variant of a causal LM is its next-token head, so
the references' masked-pass inputs come from the float64 model itself, not from the probe: at each target — a
masked position i of the probe set that is not a block's first token — the head input is the model's last hidden
state at i − 1 (`last_hidden_state`, which the model's `lm_head` reads), layer L is `hidden_states[-1]` there,
and the decoder is the output embedding (no bias); `formulas` then scores x_i by T · Wᵀ, which is checked here
to be `model(input_ids).logits` at i − 1. Every other metric is referenced on the probe's own activations, as
in `conftest.probe_case`. Word types follow the word-start marker rule ('Ġ', '▁'), written out here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from tests.causal_fixture import ARCHS, build_causal_series
from tests.integration.conftest import english_docs, one_torch_thread, probe_text_file  # noqa: F401 - fixture
from tests.reference import formulas as F
from tests.reference.conftest import BIN_NAMES, QUIET, Rows, checkpoint_norm_weights, read_stored
from tests.reference.test_reference import mismatches

STEPS = (0, 2, 6)
SETTINGS: dict[str, Any] = dict(block_size=32, probe_blocks=12, cka_tokens=150, neighbour_tokens=200, seed=1)


@dataclass
class CausalCase:
    arch: str
    stored: dict[str, Rows]
    series: list[F.SnapshotInputs]
    max_logit_error: float  # |T · Wᵀ − model(input_ids).logits| at the targets, float64


def marker_word_types(ids: np.ndarray, content: np.ndarray, vocab: list[str], special: set[int],
                      min_count: int = F.WORD_MIN_COUNT) -> np.ndarray:
    """Per content token: its id if it is an eligible whole-word occurrence under the word-start marker rule, else
    −1. A token starts a word when its string starts with 'Ġ' (byte-level BPE) or '▁' (SentencePiece), or it opens
    its block or follows a special token; a whole word starts one and is followed by a word start, a special
    token or the block's end."""
    marker = "\u0120" if sum(t.startswith("\u0120") for t in vocab) > sum(t.startswith("\u2581") for t in vocab) \
        else "\u2581"
    whole_at: list[tuple[int, bool]] = []
    counts: dict[int, int] = {}
    for b in range(ids.shape[0]):
        for i in range(ids.shape[1]):
            if not content[b, i]:
                continue
            t = int(ids[b, i])
            starts = vocab[t].startswith(marker) or i == 0 or int(ids[b, i - 1]) in special
            ends = i + 1 == ids.shape[1] or int(ids[b, i + 1]) in special or vocab[int(ids[b, i + 1])].startswith(marker)
            whole_at.append((t, starts and ends))
            if starts and ends:
                counts[t] = counts.get(t, 0) + 1
    return np.array([t if whole and counts[t] >= min_count else -1 for t, whole in whole_at], dtype=np.int64)


def next_token_inputs(checkpoint: Path, ids: np.ndarray, targets: list[tuple[int, int]]) -> tuple[F.MaskedInputs, float]:
    """The float64 model's next-token head at `targets` (block, i): head input and layer L at i − 1, the output
    embedding as decoder; and the largest difference of T · Wᵀ from the model's own logits there."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float64).eval()
    weight = model.get_output_embeddings().weight.detach().numpy()
    transform, hidden, logits = [], [], []
    with torch.inference_mode():
        for b in sorted({b for b, _ in targets}):
            x = torch.from_numpy(ids[b : b + 1].astype(np.int64))
            out = model(input_ids=x, output_hidden_states=True)
            base = model.base_model(input_ids=x, use_cache=False)
            for bb, i in targets:
                if bb == b:
                    transform.append(base.last_hidden_state[0, i - 1].numpy())
                    hidden.append(out.hidden_states[-1][0, i - 1].numpy())
                    logits.append(out.logits[0, i - 1].numpy())
    t = np.array(transform)
    error = float(np.abs(t @ weight.T - np.array(logits)).max())
    return F.MaskedInputs(transform=t, hidden=np.array(hidden), decoder_weight=weight,
                          decoder_bias=np.zeros(weight.shape[0])), error


def probe_causal(arch: str, root: Path, text: Path) -> CausalCase:
    from transformers import AutoTokenizer

    from dynamics import probe
    from dynamics.config import ProbeConfig
    from dynamics.find import inputs
    from dynamics.find.series import discover
    from dynamics.find.tokens import load_tokenizer
    from dynamics.measure import extract

    with one_torch_thread():
        run_dir = build_causal_series(root / arch, arch, english_docs(), steps=STEPS, seed=2)
        summary = probe.run(run_dir, out=root / f"out-{arch}", probe_text=text, **QUIET, **SETTINGS)
        _, stored = read_stored(summary.store_path, summary.probe_hash)
        cfg = ProbeConfig(probe_text=str(text), **QUIET, **SETTINGS).validate()
        info = discover(run_dir)
        probe_set = inputs.build_probe(info, load_tokenizer(info.tokenizer_path), cfg)
        assert probe_set.hash == summary.probe_hash, "the rebuilt probe set is not the one the store used"
        tok = AutoTokenizer.from_pretrained(str(run_dir))
        vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
        special = np.array(sorted(set(tok.all_special_ids)), dtype=np.int64)
        content, seq_ids, positions, tokens = F.content_layout(probe_set.ids, special)
        counts = np.bincount(tokens, minlength=len(vocab))  # a Trainer output has no training counts
        counts[special] = 0
        # the targets: masked positions with a token before them in the block, row-major
        targets = [(int(b), int(i)) for b, i in zip(*np.nonzero(probe_set.masked), strict=True) if i > 0]
        content_index = np.cumsum(content.ravel()).reshape(content.shape) - 1
        derived = F.ProbeInputs(
            seq_ids=seq_ids, positions=positions, tokens=tokens,
            word_type=marker_word_types(probe_set.ids, content, vocab, set(special.tolist())),
            freq_bin=F.frequency_bins(counts, len(BIN_NAMES))[tokens], bin_names=BIN_NAMES,
            cka_index=np.asarray(probe_set.cka_index, dtype=np.int64),
            neighbour_index=F.neighbour_subsample(tokens.size, cfg.neighbour_tokens, cfg.seed),
            masked_index=np.array([content_index[b, i] for b, i in targets], dtype=np.int64), special_ids=special,
            window=cfg.window, max_distance=cfg.max_distance, tc_negatives=cfg.tc_negatives,
            tc_temperature=cfg.tc_temperature, seed=cfg.seed)
        series, errors = [], []
        final = None
        for step in sorted(STEPS, reverse=True):
            path = run_dir / f"checkpoint-{step}"
            acts = extract.extract_snapshot(path, probe_set, batch_size=cfg.batch_size)
            final = acts.emb_matrix if final is None else final
            masked, error = next_token_inputs(path, probe_set.ids, targets)
            errors.append(error)
            series.append(F.SnapshotInputs(step=step, hidden=acts.hidden.astype(np.float64), emb_matrix=acts.emb_matrix,
                                           final_emb_matrix=final, masked=masked, probe=derived,
                                           norm_weights=checkpoint_norm_weights(path)))
    series.sort(key=lambda s: s.step)
    return CausalCase(arch, stored, series, max(errors))


@pytest.fixture(scope="module", params=ARCHS)
def causal_case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                probe_text_file: Path) -> CausalCase:  # noqa: F811
    return probe_causal(request.param, tmp_path_factory.mktemp(f"reference-{request.param}"), probe_text_file)


def test_causal_stored_values_match_reference(causal_case: CausalCase) -> None:
    """Every stored metric of the series (the masked variant as the next-token head included) has its reference,
    every reference row is stored, and the values agree within the suite's tolerances."""
    case = causal_case
    assert case.max_logit_error < 1e-9, "the references' next-token logits are not the model's own"
    assert {"masked_anchor_sim", "masked_accuracy", "masked_mrr", "masked_median_rank"} <= set(case.stored)
    missing = set(case.stored) - set(F.REFERENCES)
    assert not missing, f"{case.arch}: stored metrics without a reference: {sorted(missing)}"
    problems: list[str] = []
    with threadpool_limits(limits=1):
        for metric in sorted(case.stored):
            reference = F.reference_rows(metric, case.series)
            problems += [f"{metric} {p}" for p in mismatches(metric, case.stored[metric], reference).values()]
            unstored = set(reference) - set(case.stored[metric])
            problems += [f"{metric} {key}: reference value not stored" for key in sorted(unstored)]
    assert not problems, f"{case.arch}: {len(problems)} rows disagree:\n" + "\n".join(problems[:12])
