"""A BERT-style uncased WordPiece tokenizer trained on the training split, saved in Hugging Face format."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerFast

from taco.cache import cache_root
from taco.errors import TacoError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts: Iterable[str], vocab_size: int = 8192) -> BertTokenizerFast:
    """Train an uncased WordPiece tokenizer (BERT's normaliser, pre-tokeniser and `##` continuations).

    Built with `tokenizer_object=`: constructing `BertTokenizerFast(vocab_file=...)` under transformers 5.x
    silently maps every word to [UNK].
    """
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        do_lower_case=True, model_max_length=512,
    )


def tokenizer_hash(tokenizer: PreTrainedTokenizerFast) -> str:
    """sha256 of the vocabulary (token → id), which is what a checkpoint's embedding rows depend on."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a saved fast tokenizer, with a one-line error when `path` does not hold one."""
    p = Path(path)
    if not p.is_dir() or not any(p.glob("tokenizer*.json")):
        raise TacoError(f"tokenizer {path} is not a saved Hugging Face tokenizer directory; "
                        "pass a folder written by save_pretrained, or omit --tokenizer to train one")
    try:
        tok = AutoTokenizer.from_pretrained(str(p))
    except Exception as exc:  # noqa: BLE001 - any load failure is the same user error
        raise TacoError(f"tokenizer {path} could not be loaded ({type(exc).__name__}); re-save it with save_pretrained") from None
    missing = [t for t in ("cls_token", "sep_token", "mask_token", "pad_token") if getattr(tok, t) is None]
    if missing:
        raise TacoError(f"tokenizer {path} lacks {', '.join(missing)}, which MLM needs; use a BERT-style tokenizer")
    return tok


def cached_tokenizer(texts: Iterable[str], corpus_fingerprint: str, vocab_size: int,
                     cache_dir: str | Path | None = None) -> Path:
    """Train (once) and cache a tokenizer keyed by (corpus fingerprint, vocab size); return its directory,
    `tokenizers/KEY` below `cache_dir` (default: the cache root, `taco.cache.cache_root()`)."""
    key = hashlib.sha256(f"wordpiece-uncased|{corpus_fingerprint}|{vocab_size}".encode()).hexdigest()[:16]
    target = Path(cache_dir if cache_dir is not None else cache_root()) / "tokenizers" / key
    if (target / "tokenizer.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    train_wordpiece(texts, vocab_size).save_pretrained(str(tmp))
    try:
        os.replace(tmp, target)
    except OSError:  # another process won the race; keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return target
