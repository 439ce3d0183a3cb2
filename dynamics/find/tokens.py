"""A light read-only view of a saved Hugging Face tokenizer: vocabulary, special tokens, encoding.

Built on the `tokenizers` library straight from `tokenizer.json` (importing `transformers` costs seconds, which
matters for a CLI whose bad-input errors should be instant); folders with only `vocab.txt` (older BERT
checkpoints, GPT-2's `vocab.json` + `merges.txt`) fall back to `transformers.AutoTokenizer`.

Two tokenizer styles frame probe blocks differently (`Framing`): encoder tokenizers (they name a `[CLS]`, a
`[SEP]` or a `[MASK]` token: BERT WordPiece, RoBERTa/ELECTRA/ALBERT) wrap each block in `[CLS] … [SEP]`; decoder
tokenizers (none of the three: GPT-2 and GPT-NeoX/Pythia byte-level BPE, Llama-style SentencePiece BPE) are not
wrapped, and get only what their model family puts there itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from dynamics.errors import ProbeError

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")
_ROLES = ("cls_token", "sep_token", "pad_token", "mask_token", "unk_token", "bos_token", "eos_token")


def has_tokenizer(path: str | Path) -> bool:
    """Whether the folder holds a saved tokenizer (any of `tokenizer.json`, `vocab.txt`, `vocab.json`)."""
    p = Path(path)
    return p.is_dir() and any((p / name).is_file() for name in TOKENIZER_FILES)


def vocab_hash(vocab: dict[str, int]) -> str:
    """sha256 of the vocabulary as (token, id) pairs sorted by id — the same definition `taco` uses."""
    items = sorted(vocab.items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()


def _token_string(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


@dataclass(frozen=True)
class Framing:
    """How packed text is framed by special tokens (ids): `start` opens every block, `end` closes it, `separator`
    goes between two documents of the stream.

    `style` "encoder": `[CLS]`, `[SEP]`, `[SEP]` (a BOS/EOS stands in for a tokenizer that names no CLS/SEP but
    has a mask token). `style` "decoder": `start` = the special tokens the tokenizer itself puts in front of a text
    (Llama-style `<s>`; nothing for GPT-2 and GPT-NeoX, which add no BOS), `end` = nothing (a block's end is not a
    document's end), `separator` = the end-of-document token EOS where there is one (`<|endoftext|>`, `</s>`), as
    these families are trained on concatenated documents."""

    style: str
    start: tuple[int, ...]
    end: tuple[int, ...]
    separator: tuple[int, ...]


@dataclass
class TokenizerView:
    """What the probe needs from a tokenizer: vocab (token → id), special tokens by role, and batch encoding."""

    path: Path
    vocab: dict[str, int]
    special: dict[str, str]  # role ("cls_token", …) → token string
    _backend: Any = field(default=None, repr=False)
    _hf: Any = field(default=None, repr=False)
    framing: Framing = field(default_factory=lambda: Framing("encoder", (), (), ()))  # set by `load_tokenizer`

    @property
    def hash(self) -> str:
        return vocab_hash(self.vocab)

    def __len__(self) -> int:
        return max(self.vocab.values()) + 1 if self.vocab else 0

    def token_id(self, role: str) -> int | None:
        tok = self.special.get(role)
        return None if tok is None else self.vocab.get(tok)

    @property
    def special_ids(self) -> np.ndarray:
        """Sorted ids of every special token (by role and any added special token), int64."""
        ids = {self.vocab[t] for t in self.special.values() if t in self.vocab}
        return np.array(sorted(ids), dtype=np.int64)

    def id_to_token(self) -> list[str]:
        """Token string of every id `0 … len-1` (empty string for gaps)."""
        out = [""] * len(self)
        for tok, i in self.vocab.items():
            out[i] = tok
        return out

    def continuation_rule(self) -> str:
        """How sub-word continuations are marked: '##' (WordPiece), 'G' (byte-level BPE 'Ġ' marks word starts),
        '_' (SentencePiece '▁' marks word starts) or 'none'."""
        n = len(self.vocab)
        if sum(t.startswith("##") for t in self.vocab) > 0.01 * n:
            return "##"
        if sum(t.startswith("\u0120") for t in self.vocab) > 0.01 * n:
            return "G"
        if sum(t.startswith("\u2581") for t in self.vocab) > 0.01 * n:
            return "_"
        return "none"

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text without special tokens."""
        if self._backend is not None:
            return [e.ids for e in self._backend.encode_batch(texts, add_special_tokens=False)]
        return [self._hf(t, add_special_tokens=False, truncation=False)["input_ids"] for t in texts]

    def leading_special(self) -> tuple[int, ...]:
        """The special token ids the tokenizer itself puts in front of a text (its post-processor: Llama-style
        `<s>`, BERT's `[CLS]`; none for GPT-2)."""
        probe_text = "a"
        if self._backend is not None:
            enc = self._backend.encode(probe_text, add_special_tokens=True)
            ids, mask = enc.ids, enc.special_tokens_mask
        else:
            enc = self._hf(probe_text, add_special_tokens=True, return_special_tokens_mask=True)
            ids, mask = enc["input_ids"], enc["special_tokens_mask"]
        lead: list[int] = []
        for i, m in zip(ids, mask, strict=True):
            if not m:
                break
            lead.append(int(i))
        return tuple(lead)


def load_tokenizer(path: str | Path) -> TokenizerView:
    """Read the tokenizer saved in folder `path`; `ProbeError` naming the folder when it is missing or unreadable."""
    p = Path(path)
    if not has_tokenizer(p):
        raise ProbeError(f"{p}: no saved tokenizer (tokenizer.json or vocab.txt); "
                         "save one there with tokenizer.save_pretrained()")
    special: dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        f = p / name
        if f.is_file():
            try:
                data = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                raise ProbeError(f"{f}: not valid JSON; re-save the tokenizer with save_pretrained()") from None
            for role in _ROLES:
                tok = _token_string(data.get(role))
                if tok is not None:
                    special.setdefault(role, tok)
    if (p / "tokenizer.json").is_file():
        try:
            backend = Tokenizer.from_file(str(p / "tokenizer.json"))
        except Exception:  # noqa: BLE001 - any parse failure is the same user error
            raise ProbeError(f"{p / 'tokenizer.json'}: unreadable tokenizer; re-save it with save_pretrained()") from None
        # A saved tokenizer may carry padding/truncation settings (sentence-embedding models do): encoding
        # documents for packing must do neither.
        backend.no_padding()
        backend.no_truncation()
        vocab = backend.get_vocab(with_added_tokens=True)
        for added in backend.get_added_tokens_decoder().values():
            if added.special:
                special.setdefault(f"added:{added.content}", added.content)
        view = TokenizerView(p, vocab, special, _backend=backend)
    else:
        try:
            hf = AutoTokenizer.from_pretrained(str(p))
        except Exception:  # noqa: BLE001
            raise ProbeError(f"{p}: the tokenizer could not be loaded; re-save it with save_pretrained()") from None
        for role in _ROLES:
            tok = getattr(hf, role, None)
            if isinstance(tok, str):
                special.setdefault(role, tok)
        view = TokenizerView(p, dict(hf.get_vocab()), special, _hf=hf)
    view.framing = _framing(view)
    return view


def _framing(view: TokenizerView) -> Framing:
    """The tokenizer's `Framing` (see there); `ProbeError` for an encoder tokenizer without a CLS or SEP."""
    if all(view.token_id(role) is None for role in ("cls_token", "sep_token", "mask_token")):
        start = view.leading_special()
        for i in start:  # framing tokens are never content, whether or not the tokenizer names their role
            tok = next((t for t, j in view.vocab.items() if j == i), None)
            if tok is not None and tok not in view.special.values():
                view.special[f"start:{tok}"] = tok
        eos = view.token_id("eos_token")
        return Framing("decoder", start, (), () if eos is None else (eos,))
    for role in ("cls_token", "sep_token"):
        if view.token_id(role) is None:
            if role == "cls_token" and view.token_id("bos_token") is not None:
                view.special["cls_token"] = view.special["bos_token"]
            elif role == "sep_token" and view.token_id("eos_token") is not None:
                view.special["sep_token"] = view.special["eos_token"]
            else:
                raise ProbeError(f"{view.path}: the tokenizer has a [MASK] or [CLS]/[SEP] token but no {role}; "
                                 "save it with both cls_token and sep_token set")
    cls_id, sep_id = view.token_id("cls_token"), view.token_id("sep_token")
    assert cls_id is not None and sep_id is not None
    return Framing("encoder", (cls_id,), (sep_id,), (sep_id,))
