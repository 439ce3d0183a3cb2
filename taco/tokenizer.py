"""A BERT-style uncased WordPiece tokenizer trained on the training split, saved in Hugging Face format.

The vocabulary is learnt here rather than by `tokenizers.trainers.WordPieceTrainer`: that trainer numbers the
`##` continuation characters in hash-map order and breaks equal pair counts by those ids, so two processes
given the same text learn different vocabularies (different merges at ties, and at the vocabulary-size
boundary). `learn_vocab` follows the same recipe (BPE merges over word counts, `##` continuations, stop at
`vocab_size` or when the best pair is rarer than `min_frequency`) with every choice made by a total order on
strings, so the same text and size give the same file in any process, thread count or machine.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerFast

from common.files import building_dir, install_dir
from taco.cache import cache_root
from taco.errors import TacoError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PREFIX = "##"
# Part of the cache key: bump it whenever `train_wordpiece` can produce a different vocabulary for the same input.
TRAINER_VERSION = "deterministic-bpe-1"


def _normalizer() -> normalizers.Normalizer:
    return normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)


def word_counts(texts: Iterable[str]) -> Counter[str]:
    """How often each word occurs, a word being what BERT's normaliser and pre-tokeniser make of the text.

    The text is first cut at ASCII spaces and each distinct piece is normalised and pre-tokenised once, its
    words weighted by its count: the pre-tokeniser splits at every space anyway and the normaliser maps a
    space to itself without touching its neighbours, so this counts the same words as running both over whole
    documents, several times faster (most pieces repeat).
    """
    pieces: Counter[str] = Counter()
    for text in texts:
        pieces.update(text.split(" "))
    norm, pre = _normalizer(), pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for piece, n in pieces.items():
        if piece:
            for word, _ in pre.pre_tokenize_str(norm.normalize_str(piece)):
                words[word] += n
    return words


def _pair_starts(seq: list[int], a: int, b: int) -> list[int]:
    """Where the pair (a, b) begins in `seq`, left to right without overlaps, as BPE merges."""
    n = len(seq)
    starts: list[int] = []
    j = 0
    while j < n - 1:
        try:
            k = seq.index(a, j, n - 1)
        except ValueError:
            break
        if seq[k + 1] == b:
            starts.append(k)
            j = k + 2
        else:
            j = k + 1
    return starts


def _merged(seq: list[int], starts: list[int], new: int) -> tuple[list[int], list[int]]:
    """`seq` with the pair beginning at each of `starts` replaced by the token `new`, and the new token's
    positions in the result."""
    out: list[int] = []
    placed: list[int] = []
    j = 0
    for k in starts:
        out += seq[j:k]
        placed.append(len(out))
        out.append(new)
        j = k + 2
    out += seq[j:]
    return out, placed


def learn_vocab(words: dict[str, int], vocab_size: int, min_frequency: int = 2,
                special_tokens: list[str] = SPECIAL_TOKENS) -> list[str]:
    """The WordPiece vocabulary in id order: `special_tokens`, every character (sorted by code point), every
    character seen inside a word as `##c` (sorted), then BPE merges until `vocab_size` tokens or until the most
    frequent adjacent pair occurs fewer than `min_frequency` times.

    The pair merged is the most frequent one; among equally frequent pairs, the smallest (left, right) in code
    point order. Merging `x` with `##y` gives `xy`, `##x` with `##y` gives `##xy`. Word order, dict order and
    hash seeds never enter a choice.
    """
    tokens: list[str] = list(special_tokens)
    chars = sorted({c for w in words for c in w})
    inner = sorted({c for w in words for c in w[1:]})
    tokens += [c for c in chars if c not in tokens] + [PREFIX + c for c in inner if PREFIX + c not in tokens]
    ids = {t: i for i, t in enumerate(tokens)}

    # Each distinct word as a list of token ids, with its count; words of one character never change.
    seqs: list[list[int]] = []
    freqs: list[int] = []
    for w in sorted(words):
        if len(w) > 1:
            seqs.append([ids[w[0]], *(ids[PREFIX + c] for c in w[1:])])
            freqs.append(words[w])
    counts: defaultdict[tuple[int, int], int] = defaultdict(int)
    where: defaultdict[tuple[int, int], set[int]] = defaultdict(set)  # words that contain (or did) the pair
    for i, (seq, f) in enumerate(zip(seqs, freqs, strict=True)):
        for pair in pairwise(seq):
            counts[pair] += f
            where[pair].add(i)
    # A lazy max-heap: every pair's current count has an entry; entries whose count is stale are skipped.
    heap = [(-c, tokens[a], tokens[b], a, b) for (a, b), c in counts.items()]
    heapq.heapify(heap)
    while len(ids) < vocab_size and heap:
        neg, _, _, a, b = heapq.heappop(heap)
        count = counts.get((a, b), 0)
        if count != -neg:
            continue
        if count < min_frequency:
            break
        right = tokens[b]
        merged = tokens[a] + (right[len(PREFIX):] if right.startswith(PREFIX) else right)
        new = ids.get(merged)  # another pair spelling the same string: never seen, but keep tokens unique
        if new is None:
            new = ids[merged] = len(tokens)
            tokens.append(merged)
        delta: defaultdict[tuple[int, int], int] = defaultdict(int)
        for i in where.pop((a, b)):
            seq = seqs[i]
            n = len(seq)
            starts = _pair_starts(seq, a, b)
            if not starts:  # a stale entry of `where`
                continue
            # Only the pairs that overlap a merge change: the ones that touched it go, the ones touching the
            # new token come.
            f = freqs[i]
            for p in {p for k in starts for p in (k - 1, k, k + 1) if 0 <= p < n - 1}:
                delta[seq[p], seq[p + 1]] -= f
            out, placed = _merged(seq, starts, new)
            for p in {p for q in placed for p in (q - 1, q) if 0 <= p < len(out) - 1}:
                pair = (out[p], out[p + 1])
                delta[pair] += f
                where[pair].add(i)
            seqs[i] = out
        for pair, d in delta.items():
            if d:
                c = counts[pair] + d
                if c > 0:
                    counts[pair] = c
                    heapq.heappush(heap, (-c, tokens[pair[0]], tokens[pair[1]], *pair))
                else:
                    del counts[pair]
    return tokens


def train_wordpiece(texts: Iterable[str], vocab_size: int = 8192) -> BertTokenizerFast:
    """Train an uncased WordPiece tokenizer (BERT's normaliser, pre-tokeniser and `##` continuations).

    Deterministic: see `learn_vocab`. Built with `tokenizer_object=`: constructing
    `BertTokenizerFast(vocab_file=...)` under transformers 5.x silently maps every word to [UNK].
    """
    vocab = learn_vocab(word_counts(texts), vocab_size)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]",
                                     continuing_subword_prefix=PREFIX))
    tok.normalizer = _normalizer()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix=PREFIX)
    tok.add_special_tokens(SPECIAL_TOKENS)
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
    key = hashlib.sha256(f"wordpiece-uncased|{TRAINER_VERSION}|{corpus_fingerprint}|{vocab_size}".encode()).hexdigest()[:16]
    target = Path(cache_dir if cache_dir is not None else cache_root()) / "tokenizers" / key
    if (target / "tokenizer.json").is_file():
        return target
    with building_dir(target) as tmp:
        train_wordpiece(texts, vocab_size).save_pretrained(str(tmp))
    install_dir(tmp, target)  # another process that got there first keeps its copy
    return target
