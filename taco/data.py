"""Packed token blocks: tokenise documents with `datasets.map`, pack into `[CLS] … [SEP]` blocks, cache on disk.

Blocks are full (no padding) because TACO's sampler draws positives and negatives from full sequences.
The cache key is (corpus fingerprint, tokenizer hash, block length), so changing the block length rebuilds
and nothing else does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerFast

from common.files import building_dir, install_dir
from taco.cache import cache_root
from taco.errors import TacoError


def pack_blocks(docs_ids: Sequence[Sequence[int]], block_size: int, cls_id: int, sep_id: int) -> np.ndarray:
    """Concatenate documents (a [SEP] between consecutive ones) and cut into `[CLS] c_1 … c_{B-2} [SEP]`.

    Returns int32 `(n_blocks, block_size)`; the tail that does not fill a block is dropped.
    """
    width = block_size - 2
    pieces = []
    for ids in docs_ids:
        if len(ids):
            pieces.append(np.asarray(ids, dtype=np.int32))
            pieces.append(np.asarray([sep_id], dtype=np.int32))
    if not pieces:
        return np.zeros((0, block_size), dtype=np.int32)
    stream = np.concatenate(pieces[:-1])
    n = len(stream) // width
    body = stream[: n * width].reshape(n, width)
    out = np.empty((n, block_size), dtype=np.int32)
    out[:, 0], out[:, -1], out[:, 1:-1] = cls_id, sep_id, body
    return out


def tokenize_documents(docs: Sequence[str], tokenizer: PreTrainedTokenizerFast, progress: bool = True) -> list[list[int]]:
    """Token ids of each document, without special tokens, through `datasets.map` (batched, fast tokenizer)."""
    import datasets
    from tokenizers import Tokenizer

    # A copy without the padding/truncation a saved tokenizer may carry (pretrained ones often pad to 128 and
    # truncate): packing needs every document's full, unpadded token stream.
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()

    def encode(batch: dict[str, list[str]]) -> dict[str, list[list[int]]]:
        return {"input_ids": [e.ids for e in backend.encode_batch(batch["text"], add_special_tokens=False)]}

    if not progress:
        datasets.disable_progress_bars()
    try:
        ds = datasets.Dataset.from_dict({"text": list(docs)})
        ds = ds.map(encode, batched=True, batch_size=256, remove_columns=["text"], desc="tokenising")
    finally:
        datasets.enable_progress_bars()
    return ds["input_ids"]


@dataclass(frozen=True)
class PackedData:
    train: np.ndarray  # (n_train_blocks, block_size) int32, memory-mapped
    validation: np.ndarray  # (n_val_blocks, block_size) int32
    token_counts: np.ndarray  # (vocab_size,) int64 counts over the training blocks' content tokens
    directory: Path

    @property
    def train_path(self) -> Path:
        return self.directory / "train.npy"

    @property
    def validation_path(self) -> Path:
        return self.directory / "validation.npy"

    @property
    def token_counts_path(self) -> Path:
        return self.directory / "token_counts.npy"


def blocks_key(corpus_fingerprint: str, tok_hash: str, block_size: int) -> str:
    return hashlib.sha256(f"{corpus_fingerprint}|{tok_hash}|{block_size}".encode()).hexdigest()[:16]


def packed_data(
    train_docs: Sequence[str],
    validation_docs: Sequence[str],
    tokenizer: PreTrainedTokenizerFast,
    *,
    corpus_fingerprint: str,
    tok_hash: str,
    block_size: int,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> PackedData:
    """Packed train/validation blocks, built once per key and memory-mapped afterwards, in `blocks/KEY` below
    `cache_dir` (default: the cache root, `taco.cache.cache_root()`)."""
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    directory = root / "blocks" / blocks_key(corpus_fingerprint, tok_hash, block_size)
    if not (directory / "meta.json").is_file():
        with building_dir(directory) as tmp:
            cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
            splits = {}
            for name, docs in (("train", train_docs), ("validation", validation_docs)):
                splits[name] = pack_blocks(tokenize_documents(docs, tokenizer, progress), block_size, cls_id, sep_id)
                np.save(tmp / f"{name}.npy", splits[name])
            counts = np.bincount(splits["train"][:, 1:-1].ravel(), minlength=len(tokenizer)).astype(np.int64)
            np.save(tmp / "token_counts.npy", counts)
            meta = {"corpus_fingerprint": corpus_fingerprint, "tokenizer_hash": tok_hash, "block_size": block_size,
                    "train_blocks": len(splits["train"]), "validation_blocks": len(splits["validation"])}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        install_dir(tmp, directory)  # another process that built it first keeps its copy
    train = np.load(directory / "train.npy", mmap_mode="r")
    validation = np.load(directory / "validation.npy", mmap_mode="r")
    if len(train) == 0:
        raise TacoError(f"the corpus gives no full training block of {block_size} tokens; "
                        "use a larger corpus or a smaller --block-size")
    if len(validation) == 0:
        raise TacoError(f"the corpus's validation split gives no full block of {block_size} tokens; "
                        "use a larger corpus or a smaller --block-size")
    return PackedData(train, validation, np.load(directory / "token_counts.npy"), directory)


class BlockSampler:
    """Deterministic data order: epoch e is `permutation(seed, e)` of the blocks; position = global batch index.

    Under `world` processes, global batch k holds blocks `order[k*B*world : (k+1)*B*world]` and rank r takes
    its r-th slice, so the data seen depends only on (seed, step) and resumption needs no iterator state.
    """

    def __init__(self, n_blocks: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        if n_blocks < batch_size * world:
            raise TacoError(f"only {n_blocks} training blocks for a global batch of {batch_size * world}; "
                            "lower --batch-size or use a larger corpus")
        self.n, self.b, self.seed, self.rank, self.world = n_blocks, batch_size, seed, rank, world
        self.per_epoch = n_blocks // (batch_size * world)
        self._epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def indices(self, batch_index: int) -> np.ndarray:
        epoch, k = divmod(batch_index, self.per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        start = (k * self.world + self.rank) * self.b
        return np.sort(self._order[start : start + self.b])
