"""Tiny causal language models for the probe's tests: GPT-2, GPT-NeoX (Pythia's architecture) and Llama-style
configurations with real tokenizers trained here on English text, saved as a Hugging Face Trainer output
(`DIR/checkpoint-N/`, the layout `dynamics.find.series` recognises) with a few next-token optimiser steps between
checkpoints, so the snapshots differ and the later ones predict better.

Tokenizers, as each family ships them: GPT-2 byte-level BPE (`<|endoftext|>` is BOS, EOS and UNK, nothing added
around a text), GPT-NeoX byte-level BPE (`<|endoftext|>` plus `<|padding|>`), Llama-style SentencePiece BPE
(`▁` word-start marker, `<s>` put in front of every text, `</s>` as EOS). None has a [CLS],
[SEP] or [MASK] token.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ARCHS = ("gpt2", "neox", "llama")
HIDDEN, LAYERS, HEADS = 32, 2, 2


def train_tokenizer(arch: str, docs: Sequence[str], out: Path, vocab_size: int = 400) -> Path:
    """Train the family's tokenizer (module docstring) on `docs` and save it with `save_pretrained` at `out`."""
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if arch in ("gpt2", "neox"):
        special = ["<|endoftext|>"] + (["<|padding|>"] if arch == "neox" else [])
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(docs, trainer=trainer)
        cls = tf.GPT2TokenizerFast if arch == "gpt2" else tf.GPTNeoXTokenizerFast
        extra = {"pad_token": "<|padding|>"} if arch == "neox" else {}
        fast = cls(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                   unk_token="<|endoftext|>", **extra)
    elif arch == "llama":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                      show_progress=False)
        tok.train_from_iterator(docs, trainer=trainer)
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", bos)])
        fast = tf.LlamaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    else:
        raise ValueError(arch)
    fast.save_pretrained(str(out))
    return out


def tiny_causal(arch: str, vocab: int, *, bos: int | None = None, eos: int | None = None, max_pos: int = 64) -> Any:
    """A tiny random causal LM (2 layers, hidden 32) of the family `arch`: GPT2LMHeadModel (tied head),
    GPTNeoXForCausalLM (untied `embed_out`, rotary, parallel residual) or LlamaForCausalLM (RMSNorm, grouped-query
    attention, untied head)."""
    import transformers as tf

    ids = dict(bos_token_id=bos, eos_token_id=eos)
    if arch == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=vocab, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                                                n_positions=max_pos, **ids))
    if arch == "neox":
        return tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                                      num_attention_heads=HEADS, intermediate_size=2 * HIDDEN,
                                                      max_position_embeddings=max_pos, **ids))
    if arch == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                                  num_attention_heads=HEADS, num_key_value_heads=1,
                                                  intermediate_size=2 * HIDDEN, max_position_embeddings=max_pos,
                                                  **ids))
    raise ValueError(arch)


def build_causal_series(path: Path, arch: str, docs: Sequence[str], *, steps: Sequence[int] = (0, 3, 8),
                        block: int = 32, batch: int = 8, seed: int = 0, lr: float = 1e-2) -> Path:
    """A Trainer-style output at `path`: the tokenizer in `path`, `checkpoint-N/` for each of `steps` (weights,
    `config.json`, `trainer_state.json` with `global_step` and `num_input_tokens_seen`), AdamW on the next-token
    loss over EOS-separated packed `docs` between checkpoints. Returns `path`."""
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path.mkdir(parents=True, exist_ok=True)
    train_tokenizer(arch, docs, path)
    tok = AutoTokenizer.from_pretrained(str(path))
    stream: list[int] = []
    for ids in tok(list(docs), add_special_tokens=False)["input_ids"]:
        stream += ids + [tok.eos_token_id]
    n = len(stream) // block
    blocks = torch.tensor(np.asarray(stream[: n * block]).reshape(n, block), dtype=torch.long)
    torch.manual_seed(seed)
    model = tiny_causal(arch, len(tok), bos=tok.bos_token_id, eos=tok.eos_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    for target in sorted(steps):
        model.train()
        while step < target:
            x = blocks[torch.randint(0, n, (batch,), generator=gen)]
            loss = model(input_ids=x, labels=x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        model.eval()
        ckpt = path / f"checkpoint-{target}"
        model.save_pretrained(str(ckpt))
        (ckpt / "trainer_state.json").write_text(json.dumps(
            {"global_step": target, "num_input_tokens_seen": target * batch * block, "epoch": 0.0}))
    return path
