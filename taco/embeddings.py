"""Word-embedding set-ups for the embedding-sensitivity experiment: initialise from another run, or freeze.

BERT ties the MLM output layer to the word-embedding matrix, so freezing the embeddings freezes that projection
too (its bias still trains); initialising copies the matrix, so the tie carries the copy to the output layer.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from common.run_dir import RunDir, RunDirError, recorded
from taco.errors import TacoError

WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"


def resolve_snapshot(path: str | Path) -> Path:
    """A snapshot folder: `path` itself when it holds `model.safetensors`, else the last `snapshots/step-*` of a run."""
    p = Path(path).expanduser()
    if (p / "model.safetensors").is_file():
        return p
    steps = [s.path for s in RunDir(p).snapshots() if (s.path / "model.safetensors").is_file()]
    if not steps:
        raise TacoError(f"--init-embeddings {p}: no model.safetensors there nor under snapshots/step-*; "
                        "pass a snapshot folder or a run directory written by taco.train")
    return steps[-1]


def snapshot_tokenizer_hash(snapshot: Path) -> str | None:
    """The tokenizer hash recorded in the run.json of the run holding `snapshot` (None when there is none, or
    when that run.json cannot be read)."""
    try:
        return recorded(RunDir(snapshot.parent.parent).config, "tokenizer", "hash")
    except RunDirError:
        return None


def load_word_embeddings(path: str | Path, tok_hash: str, vocab_size: int, hidden_size: int) -> torch.Tensor:
    """The word-embedding matrix of the snapshot at `path`, checked against this run's tokenizer and shape."""
    snapshot = resolve_snapshot(path)
    theirs = snapshot_tokenizer_hash(snapshot)
    if theirs is not None and theirs != tok_hash:
        raise TacoError(f"--init-embeddings {snapshot}: that run used a different tokenizer; pass "
                        f"--tokenizer {snapshot.parent.parent / 'tokenizer'} so the rows mean the same tokens")
    try:
        weights = load_file(str(snapshot / "model.safetensors"))
    except (SafetensorError, OSError) as exc:
        raise TacoError(f"--init-embeddings {snapshot}/model.safetensors is unreadable ({exc}); "
                        "pick another snapshot") from None
    if WORD_EMBEDDINGS not in weights:
        raise TacoError(f"--init-embeddings {snapshot}/model.safetensors has no {WORD_EMBEDDINGS}; "
                        "pass a snapshot of a BERT masked-LM run")
    matrix = weights[WORD_EMBEDDINGS]
    if tuple(matrix.shape) != (vocab_size, hidden_size):
        raise TacoError(f"--init-embeddings {snapshot}: embeddings are {tuple(matrix.shape)}, this model needs "
                        f"({vocab_size}, {hidden_size}); use the same preset and tokenizer")
    return matrix


def set_up_embeddings(model: torch.nn.Module, *, init_from: str, freeze: bool, tok_hash: str) -> None:
    """Copy another run's word embeddings into `model` (a `BertForMaskedLM`) and/or freeze them, in place."""
    embeddings = model.get_input_embeddings()
    if init_from:
        matrix = load_word_embeddings(init_from, tok_hash, embeddings.num_embeddings, embeddings.embedding_dim)
        with torch.no_grad():
            embeddings.weight.copy_(matrix.to(embeddings.weight.dtype))
    if freeze:
        embeddings.weight.requires_grad_(False)
