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

`--repeat-share P` (default 0: the packed blocks as they are) is a repetition curriculum: a share P of the training
blocks, chosen once by block index from `--seed` (the same blocks in every epoch), has the second half of its
content replaced by a copy of the first half, so that `[CLS] x_1 … x_n [SEP]` becomes `[CLS] x_1 … x_k x_1 … x_k
[SEP]` with k = n // 2 (an odd n keeps its last content token). Natural text at the scale trained here (a few million
tokens on a CPU) has too few repeated spans within a block for induction heads to be worth learning; blocks whose
second half is predictable only by copying from the first give the model that signal. With P > 0 the training data
are no longer plain natural text (the validation blocks stay untouched).
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
    seed: int = option(0, "seed for the initial weights, the data order and the --repeat-share blocks")
    repeat_share: float = option(0.0, "share of training blocks (0 to 1, chosen by block index from --seed) whose "
                                      "second half of content is a copy of the first half, a repetition curriculum "
                                      "for induction heads (natural text this small has few in-block repeats); 0: "
                                      "the blocks as they are")
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
        if not 0 <= self.repeat_share <= 1:
            raise CausalLMError(f"--repeat-share must be a share between 0 and 1 (got {self.repeat_share})")
        if self.lr <= 0 or self.warmup_steps < 0 or self.weight_decay < 0:
            raise CausalLMError("--lr must be > 0, --warmup-steps and --weight-decay >= 0")
        try:
            self.device = resolve_device(self.device)
        except UsageError as exc:
            raise CausalLMError(str(exc)) from None
        return self


def repeated_blocks(n_blocks: int, share: float, seed: int) -> np.ndarray:
    """Sorted indices of the round(share * n_blocks) blocks that `--repeat-share` repeats, drawn from `seed`."""
    if share <= 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_blocks, size=int(round(share * n_blocks)), replace=False))


class Blocks(torch.utils.data.Dataset):
    """Packed `input_ids` rows (int32, possibly memory-mapped) as a Trainer dataset; with `repeat_share` > 0 the
    rows chosen by `repeated_blocks` have their content's second half replaced by its first half (framing kept)."""

    def __init__(self, blocks: np.ndarray, repeat_share: float = 0.0, seed: int = 0) -> None:
        self.blocks = blocks
        self.repeated = np.zeros(len(blocks), dtype=bool)
        self.repeated[repeated_blocks(len(blocks), repeat_share, seed)] = True

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = np.array(self.blocks[i])
        if self.repeated[i]:
            k = (len(row) - 2) // 2  # content is row[1:-1]; [CLS] at 0 and [SEP] at -1 stay
            row[1 + k:1 + 2 * k] = row[1:1 + k]
        return {"input_ids": torch.tensor(row, dtype=torch.long)}


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
                                token_counts=data.token_counts, follow=cfg.follow,
                                config={"corpus": cfg.corpus, "vocab_size": cfg.vocab_size, "block_size": cfg.block_size,
                                        "layers": cfg.layers, "heads": cfg.heads, "width": cfg.width,
                                        "repeat_share": cfg.repeat_share})
    return Trainer(model=model, args=args, train_dataset=Blocks(data.train, cfg.repeat_share, cfg.seed),
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
