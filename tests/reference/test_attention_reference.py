"""The attention and copying families against float64 references that compute the attention themselves from the
checkpoints' query and key projections (`attention_formulas`): a tiny GPT-2 (Trainer layout, causal), here; the
tiny BERT run through the suite's generic comparison (`test_reference`, its case measures both families). Besides:
the per-head arrays equal the references' per-head values, and measuring the two families leaves every other
stored row exactly as it is without them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.causal_fixture import build_causal_series
from tests.integration.conftest import english_docs, one_torch_thread, probe_text_file  # noqa: F401 - fixture
from tests.reference import attention_formulas as A
from tests.reference.conftest import QUIET, TINY_SETTINGS, Case, read_stored
from tests.reference.test_reference import mismatches

FAMILIES = ("attention", "copying")
GPT2_SETTINGS: dict[str, Any] = dict(block_size=32, probe_blocks=6, seed=1, copy_blocks=4,
                                     metrics=["attention", "copying"])


def _heads(db: Path, kind: str) -> dict[int, dict[str, np.ndarray]]:
    """step → the stored per-head arrays of `kind` (read straight from the store's database and npz files)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT step, file FROM arrays WHERE kind=?", (kind,)).fetchall()
    finally:
        con.close()
    out = {}
    for step, file in rows:
        with np.load(db.parent / file) as z:
            out[int(step)] = {k: z[k] for k in z.files}
    return out


@pytest.fixture(scope="module")
def gpt2_case(tmp_path_factory: pytest.TempPathFactory, probe_text_file: Path) -> tuple[Any, dict, dict]:  # noqa: F811
    from dynamics import probe
    from dynamics.config import ProbeConfig
    from dynamics.find import inputs
    from dynamics.find.series import discover
    from dynamics.find.tokens import load_tokenizer

    root = tmp_path_factory.mktemp("reference-attention-gpt2")
    with one_torch_thread():
        run_dir = build_causal_series(root / "gpt2", "gpt2", english_docs(60_000), steps=(0, 4), seed=2)
        summary = probe.run(run_dir, out=root / "out", probe_text=probe_text_file, **QUIET, **GPT2_SETTINGS)
        _, stored = read_stored(summary.store_path, summary.probe_hash)
        info = discover(run_dir)
        tok = load_tokenizer(info.tokenizer_path)
        cfg = ProbeConfig(probe_text=str(probe_text_file), **QUIET, **GPT2_SETTINGS).validate()
        probe_set = inputs.build_probe(info, tok, cfg)
        assert probe_set.hash == summary.probe_hash
        refs = {step: A.attention_inputs(run_dir / f"checkpoint-{step}", probe_set, tok.special_ids)
                for step in (0, 4)}
    return summary, stored, refs


def test_gpt2_attention_and_copying_match_the_reference(gpt2_case) -> None:
    summary, stored, refs = gpt2_case
    assert set(stored) == {"attn_entropy", "attn_sink_share", "attn_prev_token_max", "attn_distance", "dup_token_max",
                           "induction_max", "repeat_copy_accuracy"}, "causal: no next-token score"
    problems = []
    for metric, rows in stored.items():
        reference = {(step, layer, variant): v for step, a in refs.items()
                     for (layer, variant), v in A.REFERENCES[metric](type("S", (), {"attention": a})()).items()}
        assert set(reference) == set(rows), metric
        problems += [f"{metric} {p}" for p in mismatches(metric, rows, reference).values()]
    assert not problems, "\n".join(problems[:12])


def _check_heads(db: Path, refs: dict[int, Any]) -> None:
    attention, copying = _heads(db, "attention_heads"), _heads(db, "copying_heads")
    assert set(attention) == set(copying) == set(refs)
    for step, a in refs.items():
        for layer in range(1, len(a.probs) + 1):
            for key, values in A.head_values(a, layer).items():
                np.testing.assert_allclose(attention[step][key][layer - 1], values, rtol=1e-6, atol=1e-7)
            for key, values in A.copy_head_values(a, layer).items():
                np.testing.assert_allclose(copying[step][key][layer - 1], values, rtol=1e-6, atol=1e-7)


def test_gpt2_per_head_arrays_match_the_reference(gpt2_case) -> None:
    summary, _, refs = gpt2_case
    _check_heads(summary.store_path, refs)
    assert "attn_next_token" not in _heads(summary.store_path, "attention_heads")[0]


def test_bert_per_head_arrays_match_the_reference(tiny_case: Case) -> None:
    _check_heads(tiny_case.store_path, {s.step: s.attention for s in tiny_case.series})


def test_other_families_are_unchanged_by_measuring_attention(tiny_case: Case, tmp_path: Path) -> None:
    """The tiny run probed again without the two families: every other stored row is the same value."""
    from dynamics import probe

    con = sqlite3.connect(f"file:{tiny_case.store_path}?mode=ro", uri=True)
    try:
        run_dir = Path(con.execute("SELECT path FROM snapshots LIMIT 1").fetchone()[0]).parents[1]
    finally:
        con.close()
    settings = {k: v for k, v in TINY_SETTINGS.items() if k != "metrics"}
    with one_torch_thread():
        summary = probe.run(run_dir, out=tmp_path / "out", **QUIET, **settings)
    assert summary.probe_hash == tiny_case.probe_hash
    _, without = read_stored(summary.store_path, summary.probe_hash)
    with_them = {m: rows for m, rows in tiny_case.stored.items() if not m.startswith(("attn_", "dup_", "induction",
                                                                                      "repeat_copy"))}
    assert set(with_them) == set(without) and with_them == without
