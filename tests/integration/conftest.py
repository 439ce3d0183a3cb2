"""Tiny snapshot series for the probe's tests (and the app's): real English text, a WordPiece tokenizer
trained on it, a 2-layer BERT with a few optimiser steps between snapshots, in `taco.train`'s run format.

Reuse from other test folders: `from tests.integration.conftest import build_tiny_run, english_docs` (and import
the fixtures `tiny_runs`, `tiny_run`, `probe_text_file` into your conftest to share them).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dynamics.metrics.blas import single_thread

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STDLIB_SOURCES = ("argparse.py", "textwrap.py", "shutil.py", "tempfile.py", "csv.py", "pathlib.py", "inspect.py",
                  "functools.py", "dataclasses.py", "subprocess.py", "tarfile.py", "gzip.py",
                  "logging/__init__.py", "json/__init__.py", "http/client.py", "email/message.py",
                  "unittest/case.py", "collections/__init__.py", "datetime.py", "calendar.py", "difflib.py")
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def english_docs(max_chars: int = 300_000) -> list[str]:
    """Docstrings of standard-library modules (real English prose), one document each, in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    total = 0
    for name in STDLIB_SOURCES:
        path = root / name
        if not path.is_file():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 80:
                    text = " ".join(doc.split())
                    docs.append(text)
                    total += len(text)
                    if total >= max_chars:
                        return docs
    return docs


def train_tokenizer(docs: Sequence[str], vocab_size: int, out: Path) -> Path:
    """An uncased WordPiece tokenizer saved as `BertTokenizerFast`: `taco.tokenizer.train_wordpiece`, the training
    program's own deterministic trainer, so that the test runs built on it are the same in every process."""
    from taco.tokenizer import train_wordpiece

    train_wordpiece(docs, vocab_size).save_pretrained(str(out))
    return out


def pack(docs_ids: Sequence[Sequence[int]], block: int, cls_id: int, sep_id: int) -> np.ndarray:
    """`[CLS] … [SEP]` blocks of a concatenated stream ([SEP] between documents), int32 (n, block)."""
    stream: list[int] = []
    for ids in docs_ids:
        if ids:
            if stream:
                stream.append(sep_id)
            stream.extend(ids)
    width = block - 2
    n = len(stream) // width
    out = np.empty((n, block), dtype=np.int32)
    out[:, 0], out[:, -1] = cls_id, sep_id
    out[:, 1:-1] = np.asarray(stream[: n * width], dtype=np.int32).reshape(n, width)
    return out


def build_tiny_run(
    path: Path,
    *,
    objective: str = "mlm",
    seed: int = 0,
    steps: Sequence[int] = (0, 1, 2, 4),
    block_size: int = 32,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    vocab_size: int = 600,
    tokenizer_dir: Path | None = None,
    batch_size: int = 8,
    lr: float = 3e-3,
) -> Path:
    """Write a run directory in `taco.train`'s format at `path` and return it.

    Snapshots at `steps` (AdamW on random-masked MLM between them, so the weights differ), `run.json` with
    `validation_blocks_path`/`token_counts_path`, `data/`, `tokenizer/`, `log.jsonl`. Pass `tokenizer_dir` to
    reuse another run's tokenizer (runs to be compared on one probe set must share it).
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path.mkdir(parents=True, exist_ok=True)
    docs = english_docs()
    train_docs = [d for i, d in enumerate(docs) if i % 5]
    val_docs = [d for i, d in enumerate(docs) if i % 5 == 0]
    tok_dir = path / "tokenizer"
    if tokenizer_dir is None:
        train_tokenizer(train_docs, vocab_size, tok_dir)
    else:
        shutil.copytree(tokenizer_dir, tok_dir, dirs_exist_ok=True)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    encode = tok.backend_tokenizer.encode_batch
    cls_id, sep_id, mask_id = tok.cls_token_id, tok.sep_token_id, tok.mask_token_id
    train = pack([e.ids for e in encode(train_docs, add_special_tokens=False)], block_size, cls_id, sep_id)
    val = pack([e.ids for e in encode(val_docs, add_special_tokens=False)], block_size, cls_id, sep_id)
    (path / "data").mkdir(exist_ok=True)
    np.save(path / "data" / "validation_blocks.npy", val)
    counts = np.bincount(train[:, 1:-1].ravel(), minlength=len(tok)).astype(np.int64)
    np.save(path / "data" / "token_counts.npy", counts)

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=2 * hidden, max_position_embeddings=max(64, block_size),
                        pad_token_id=tok.pad_token_id)
    model = BertForMaskedLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    special = torch.tensor(sorted(set(tok.all_special_ids)))
    tokens_per_step = batch_size * block_size
    log = []
    step = 0
    for target in sorted(steps):
        model.train()
        while step < target:
            idx = torch.randint(0, len(train), (batch_size,), generator=gen)
            ids = torch.from_numpy(train[idx.numpy()]).long()
            pick = (torch.rand(ids.shape, generator=gen) < 0.15) & ~torch.isin(ids, special)
            labels = torch.where(pick, ids, torch.full_like(ids, -100))
            inputs = torch.where(pick, torch.full_like(ids, mask_id), ids)
            loss = model(input_ids=inputs, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            log.append({"step": step, "tokens_seen": step * tokens_per_step, "loss": float(loss.detach())})
        model.eval()
        snap = path / "snapshots" / f"step-{target:07d}"
        tmp = snap.with_name(f".tmp-{snap.name}")
        model.save_pretrained(str(tmp))
        (tmp / "snapshot.json").write_text(json.dumps({
            "step": target, "tokens_seen": target * tokens_per_step, "train_loss": log[-1]["loss"] if log else None,
            "val_loss": None, "wall_time": 0.0}))
        os.replace(tmp, snap)
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    run = {
        "config": {"objective": objective, "preset": "tiny", "seed": seed, "block_size": block_size},
        "objective": objective, "preset": "tiny", "seed": seed, "block_size": block_size,
        "model_config": config.to_dict(),
        "corpus": {"source": "stdlib-docstrings", "fingerprint": hashlib.sha256("\n".join(docs).encode()).hexdigest()},
        "tokenizer": {"path": "tokenizer", "hash": hashlib.sha256(json.dumps(vocab).encode()).hexdigest(),
                      "vocab_size": len(tok)},
        "validation_blocks_path": "data/validation_blocks.npy", "token_counts_path": "data/token_counts.npy",
    }
    (path / "run.json").write_text(json.dumps(run, indent=2))
    (path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return path


def tiny_mlm(arch: str, vocab: int = 50, hidden: int = 32, layers: int = 2, max_pos: int = 64,
             embedding_size: int | None = None) -> Any:
    """A tiny random masked-LM of the given architecture (pad id 0, like our tokenizers)."""
    import transformers as tf

    common = dict(vocab_size=vocab, pad_token_id=0)
    if arch == "bert":
        return tf.BertForMaskedLM(tf.BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                                                intermediate_size=2 * hidden, max_position_embeddings=max_pos, **common))
    if arch == "roberta":
        return tf.RobertaForMaskedLM(tf.RobertaConfig(hidden_size=hidden, num_hidden_layers=layers,
                                                      num_attention_heads=2, intermediate_size=2 * hidden,
                                                      max_position_embeddings=max_pos + 2, **common))
    if arch == "electra":
        return tf.ElectraForMaskedLM(tf.ElectraConfig(hidden_size=hidden, embedding_size=embedding_size or hidden,
                                                      num_hidden_layers=layers, num_attention_heads=2,
                                                      intermediate_size=2 * hidden, max_position_embeddings=max_pos,
                                                      **common))
    if arch == "distilbert":
        return tf.DistilBertForMaskedLM(tf.DistilBertConfig(dim=hidden, n_layers=layers, n_heads=2, hidden_dim=2 * hidden,
                                                            max_position_embeddings=max_pos, **common))
    raise ValueError(arch)


# Run torch single-threaded for the duration: on a shared 2-core machine, torch's spinning worker threads make
# tiny ops tens of times slower under contention.
one_torch_thread = single_thread


@pytest.fixture(autouse=True)
def _probe_tests_single_threaded(request: pytest.FixtureRequest) -> Iterator[None]:
    """The probe's tests (test_probe*.py) run with one torch thread; other tests are left alone."""
    if request.module.__name__.split(".")[-1].startswith("test_probe"):
        with one_torch_thread():
            yield
    else:
        yield


def one_thread_env() -> dict[str, str]:
    """Environment for subprocesses of the probe's tests: offline, single-threaded BLAS/OpenMP."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny runs sharing one tokenizer: {"mlm": …, "taco": …} (treat as read-only; copy before mutating)."""
    root = tmp_path_factory.mktemp("tiny-runs")
    with one_torch_thread():
        mlm = build_tiny_run(root / "mlm", objective="mlm", seed=0)
        taco = build_tiny_run(root / "taco", objective="taco", seed=1, steps=(0, 2, 3), tokenizer_dir=mlm / "tokenizer")
    return {"mlm": mlm, "taco": taco}


@pytest.fixture(scope="session")
def tiny_run(tiny_runs: dict[str, Path]) -> Path:
    """The tiny MLM run (4 snapshots: steps 0, 1, 2, 4). Read-only: pass out= to the probe or copy it."""
    return tiny_runs["mlm"]


@pytest.fixture(scope="session")
def probe_text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A UTF-8 English text file (stdlib docstrings, blank-line separated) for --probe-text."""
    path = tmp_path_factory.mktemp("probe-text") / "probe.txt"
    path.write_text("\n\n".join(english_docs(40_000)), encoding="utf-8")
    return path
