"""`python -m experiments.causal_lm`: train a small GPT-2-style causal LM on the built-in corpus with the real
Hugging Face `Trainer` and `dynamics.callback.SnapshotCallback`, writing a snapshot series to `--output-dir` that
`dynamics.probe` reads (e.g. to watch induction heads form).

The data are `taco.train`'s: the same corpus (`--corpus`, default the built-in one), the same cached WordPiece
tokenizer and the same packed blocks (`taco.data.packed_data`, `[CLS] … [SEP]` blocks of `--block-size`), read
here as next-token prediction. The model is `GPT2LMHeadModel` from a config (`--layers`, `--heads`, `--width`).
Snapshots: step 0, every power of two below `--snapshot-every`, every `--snapshot-every` steps and the final step
(dense early, where in-context learning appears). Tokens seen are the Trainer's own count. The Trainer's checkpoints
(`checkpoint-N/`, every `--save-every` steps, the last one kept) sit beside the series; `--resume` continues from
the last of them, and the series goes on without duplicates.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.cli import DEVICES, Parser, option, resolve_device
from common.errors import UsageError
from dynamics.callback import SnapshotCallback

PROG = "python -m experiments.causal_lm"


class CausalLMError(UsageError):
    """Bad settings or input for the causal-LM experiment (one line, exit status 2)."""


@dataclass
class CausalLMConfig:
    """Every setting of `python -m experiments.causal_lm`; each field is a `--kebab-case` flag."""

    output_dir: str = option("runs/causal-lm", "run folder: the snapshot series (run.json, log.jsonl, snapshots/) "
                                               "and the Trainer's checkpoint-N/ folders")
    corpus: str = option("builtin", "training text, as for taco.train: 'builtin', a .txt file, a .jsonl file or a "
                                    "folder")
    vocab_size: int = option(8192, "vocabulary size of the WordPiece tokenizer (cached, shared with taco.train)")
    layers: int = option(2, "transformer layers")
    heads: int = option(4, "attention heads per layer")
    width: int = option(128, "hidden size (a multiple of --heads)")
    block_size: int = option(128, "tokens per training sequence (and positions of the model)")
    batch_size: int = option(16, "sequences per optimizer step")
    max_steps: int = option(2000, "optimizer steps")
    lr: float = option(1e-3, "peak learning rate (AdamW, linear warm-up then linear decay)")
    warmup_steps: int = option(100, "warm-up steps")
    weight_decay: float = option(0.01, "AdamW weight decay")
    snapshot_every: int = option(100, "snapshot every N steps, after snapshots at 0, 1, 2, 4, … below N")
    save_every: int = option(500, "Trainer checkpoint every N steps (for --resume; the last one is kept)")
    log_every: int = option(10, "log the Trainer's loss every N steps")
    seed: int = option(0, "seed for the initial weights and the data order")
    device: str = option("cpu", f"where to train: {DEVICES}")
    data_cache: str = option("", "cache root for the corpus, tokenizer and blocks (default: taco.cache's root)")
    resume: bool = option(False, "continue from the last checkpoint-N/ in --output-dir")
    follow: bool = option(False, "measure snapshots as they are written (dynamics.probe --follow, on the CPU)")

    def validate(self) -> CausalLMConfig:
        for name in ("vocab_size", "layers", "heads", "width", "batch_size", "max_steps", "snapshot_every",
                     "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise CausalLMError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        if self.block_size < 3:
            raise CausalLMError(f"--block-size must be >= 3 (got {self.block_size})")
        if self.width % self.heads:
            raise CausalLMError(f"--width {self.width} is not a multiple of --heads {self.heads}; change one")
        if self.lr <= 0 or self.warmup_steps < 0 or self.weight_decay < 0:
            raise CausalLMError("--lr must be > 0, --warmup-steps and --weight-decay >= 0")
        try:
            self.device = resolve_device(self.device)
        except UsageError as exc:
            raise CausalLMError(str(exc)) from None
        return self


class Blocks(torch.utils.data.Dataset):
    """Packed `input_ids` rows (int32, possibly memory-mapped) as a Trainer dataset."""

    def __init__(self, blocks: np.ndarray) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor(np.asarray(self.blocks[i]), dtype=torch.long)}


def inputs(cfg: CausalLMConfig) -> tuple[Any, Any]:
    """(tokenizer, packed data) of `taco.train`'s pipeline for the corpus, vocabulary and block size."""
    from taco.cache import data_cache_dir
    from taco.corpus import builtin_cache_dir, load_corpus
    from taco.data import packed_data
    from taco.tokenizer import cached_tokenizer, load_tokenizer, tokenizer_hash

    cache = data_cache_dir(cfg.data_cache or None)
    corpus = load_corpus(cfg.corpus, cache_dir=builtin_cache_dir(cache))
    tokenizer = load_tokenizer(cached_tokenizer(corpus.train, corpus.fingerprint, cfg.vocab_size, cache))
    data = packed_data(corpus.train, corpus.validation, tokenizer, corpus_fingerprint=corpus.fingerprint,
                       tok_hash=tokenizer_hash(tokenizer), block_size=cfg.block_size, cache_dir=cache, progress=False)
    if len(data.train) < cfg.batch_size:
        raise CausalLMError(f"--corpus {cfg.corpus}: {len(data.train)} blocks of {cfg.block_size} tokens, fewer than "
                            f"one batch ({cfg.batch_size}); lower --batch-size or --block-size")
    return tokenizer, data


def build_trainer(cfg: CausalLMConfig, tokenizer: Any, data: Any) -> Any:
    """The Trainer over a fresh `GPT2LMHeadModel` with the snapshot callback."""
    from transformers import (
        DataCollatorForLanguageModeling,
        GPT2Config,
        GPT2LMHeadModel,
        Trainer,
        TrainingArguments,
    )

    torch.manual_seed(cfg.seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=cfg.block_size, n_embd=cfg.width,
                                       n_layer=cfg.layers, n_head=cfg.heads, bos_token_id=tokenizer.cls_token_id,
                                       eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id))
    args = TrainingArguments(
        output_dir=cfg.output_dir, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.lr, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
        lr_scheduler_type="linear", logging_steps=cfg.log_every, save_steps=cfg.save_every, save_total_limit=1,
        seed=cfg.seed, data_seed=cfg.seed, use_cpu=cfg.device == "cpu", report_to=[], disable_tqdm=True,
        dataloader_num_workers=0, include_num_input_tokens_seen=True)
    callback = SnapshotCallback(every=cfg.snapshot_every, validation_blocks=np.asarray(data.validation[:256]),
                                token_counts=data.token_counts, follow=cfg.follow)
    return Trainer(model=model, args=args, train_dataset=Blocks(data.train),
                   data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False), processing_class=tokenizer,
                   callbacks=[callback])


def run(cfg: CausalLMConfig) -> Path:
    """Train and return the run folder; `CausalLMError` (or `CorpusError`) on bad input, before anything is written."""
    from transformers.utils import logging as hf_logging

    cfg.validate()
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise CausalLMError(f"--output-dir {out} is a file; choose a folder")
    has_checkpoint = out.is_dir() and any(p.name.startswith("checkpoint-") for p in out.iterdir())
    if cfg.resume and not has_checkpoint:
        raise CausalLMError(f"--resume: {out} holds no checkpoint-N/ folder; drop --resume to start a run")
    if not cfg.resume and out.is_dir() and any(out.iterdir()):
        raise CausalLMError(f"--output-dir {out} is not empty; pass --resume to continue it, or another folder")
    tokenizer, data = inputs(cfg)
    hf_logging.disable_progress_bar()  # save_pretrained's per-snapshot bar would fill the log
    build_trainer(cfg, tokenizer, data).train(resume_from_checkpoint=True if cfg.resume else None)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from taco.corpus import CorpusError

    parser = Parser(CausalLMConfig, prog=PROG, description=__doc__.split("\n\n")[0].replace("`", ""))
    (cfg,) = parser.parse(list(argv) if argv is not None else None)
    try:
        out = run(cfg)
    except (UsageError, CorpusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"snapshot series written to {out}; measure it with: python -m dynamics.probe {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
