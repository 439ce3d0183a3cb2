"""Tokenised task examples and padded batches, shared by fine-tuning and the linear probe.

Texts are encoded once per (tokenizer, task, split) as `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`, truncated to
`max_length` tokens (longest side first for pairs). Batches are padded to their longest member only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dynamics.measure.extract import quiet_transformers
from experiments.errors import EvalError
from experiments.tasks import TaskData


@dataclass
class Encoded:
    """Token ids, segment ids and special-token marks of every example (variable length), plus labels."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray]
    special: list[np.ndarray]  # 1 where the tokenizer added [CLS]/[SEP], 0 on content tokens
    labels: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, Any]:
        """Tensors for the examples at `indices`: input_ids, token_type_ids, attention_mask, content_mask
        (attention mask without the added special tokens) and labels (int64, or float32 for regression)."""
        import torch

        idx = [int(i) for i in indices]
        width = max(len(self.input_ids[i]) for i in idx)
        ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
        types = np.zeros((len(idx), width), dtype=np.int64)
        attn = np.zeros((len(idx), width), dtype=np.int64)
        content = np.zeros((len(idx), width), dtype=bool)
        for row, i in enumerate(idx):
            n = len(self.input_ids[i])
            ids[row, :n] = self.input_ids[i]
            types[row, :n] = self.token_type_ids[i]
            attn[row, :n] = 1
            content[row, :n] = self.special[i] == 0
        return {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
                "attention_mask": torch.from_numpy(attn), "content_mask": torch.from_numpy(content),
                "labels": torch.from_numpy(self.labels[idx])}


def load_tokenizer(path: str | Path) -> Any:
    """A fast Hugging Face tokenizer from a saved folder (never the hub)."""
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise EvalError(f"{path}: cannot load the tokenizer ({str(exc).splitlines()[0][:120]}); save it next to "
                        "the model with save_pretrained()") from None


def encode(tokenizer: Any, data: TaskData, max_length: int) -> Encoded:
    """Tokenise a task split (pairs as two segments), truncated to `max_length` tokens."""
    out = tokenizer(data.text_a, data.text_b, truncation=True, max_length=max_length, return_token_type_ids=True,
                    return_special_tokens_mask=True, return_attention_mask=False)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    as_arrays = [np.asarray(x, dtype=np.int64) for x in out["input_ids"]]
    types = [np.asarray(x, dtype=np.int64) for x in out["token_type_ids"]]
    special = [np.asarray(x, dtype=np.int8) for x in out["special_tokens_mask"]]
    return Encoded(as_arrays, types, special, data.labels, int(pad))


def length_sorted_batches(enc: Encoded, batch_size: int) -> list[np.ndarray]:
    """Index batches of similar length (for inference: less padding); every example exactly once."""
    order = np.argsort(-enc.lengths(), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


