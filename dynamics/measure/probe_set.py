"""The frozen probe set: the exact tokens every snapshot of every compared run is measured on.

Built from a run's packed validation blocks (`run.json` → `validation_blocks_path`, int32 `(n, block)` arrays of
`[CLS] … [SEP]` blocks) — `probe_blocks` of them chosen with `seed`, fewer when `max_tokens` caps the size — or
from a text file tokenised and packed the same way (documents separated by blank lines, the incomplete tail
dropped), framed as the tokenizer's style asks (`dynamics.find.tokens.Framing`): encoder tokenizers `[SEP]` between
documents and `[CLS]`/`[SEP]` around each block; decoder tokenizers (GPT-2, GPT-NeoX/Pythia, Llama-style) EOS
between documents, no CLS/SEP, and a BOS opening each block only where the tokenizer itself adds one (`<s>`).

Derived, all seeded and frozen with the ids:
* content tokens (N of them): every position that is not a special token, in row-major (block, position) order;
* masked positions: 15% of the content positions (the masked variant replaces them by the mask token; for a
  causal LM they are the next-token head's targets, `dynamics.measure.extract`);
* word types for Ethayarajh's metrics: whole words that are one wordpiece — the token does not start with
  `##` and the next token does not either (byte-BPE/SentencePiece tokenizers: the word-start marker rules
  instead) — and occur at least `min_word_count` (5) times among the content tokens;
* token-frequency bins (frequent/medium/rare, `dynamics.metrics.anchors.frequency_bins`, by occurrence mass)
  from the training split's token counts when the run has them, else from the probe set itself (noted);
* fixed token samples: ≤ `cka_tokens` for CKA across layers and snapshots, ≤ `projection_tokens` for 2-D
  projections.
* copy blocks (`CopyBlocks`, for the copying family): `copy_blocks` synthetic blocks, the framing around
  r_1…r_T r_1…r_T with r drawn uniformly from the non-special vocabulary (T = `copy_length`, capped so that a copy
  block is no longer than a probe block), and their masked positions. They are a function of the seed, the
  tokenizer and those two settings only, so they are the same for every snapshot and run and are not part of
  the hash (the copying family's stored parameters name the two settings instead).

The hash is sha256 over the ids, the masked positions, the bins, the samples and the tokenizer vocabulary
hash: equal hashes mean equal measurements, so results are stored and compared under it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.files import save_npz
from dynamics.errors import ProbeError
from dynamics.find.tokens import TokenizerView

MASK_FRACTION = 0.15


@dataclass
class ProbeSet:
    """Token ids `(n_blocks, block)` int32 plus the frozen derived arrays described in the module docstring.

    Per-block arrays: `ids`, `content` (bool, not special), `masked` (bool, subset of content).
    Per content token (N = content.sum(), row-major order): `freq_bin` int8 (0 = frequent), `word_type` int32
    (index into `word_types`, −1 = not eligible). `word_types`: (n_types,) token ids. `cka_index`,
    `projection_index`: sorted int64 indices into the content tokens.
    """

    ids: np.ndarray
    content: np.ndarray
    masked: np.ndarray
    freq_bin: np.ndarray
    word_type: np.ndarray
    word_types: np.ndarray
    cka_index: np.ndarray
    projection_index: np.ndarray
    bin_names: tuple[str, ...]
    tokenizer_hash: str
    mask_id: int | None
    source: str
    freq_source: str
    notes: list[str] = field(default_factory=list)
    hash: str = ""
    special_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # the tokenizer's
    copy: CopyBlocks | None = None  # the copying family's synthetic repeated blocks

    # ---- per content token views (N,)
    @property
    def n_tokens(self) -> int:
        return int(self.content.sum())

    @property
    def n_blocks(self) -> int:
        return int(self.ids.shape[0])

    @property
    def block_size(self) -> int:
        return int(self.ids.shape[1])

    @property
    def tokens(self) -> np.ndarray:
        """(N,) int64 token ids of the content tokens."""
        return self.ids[self.content].astype(np.int64)

    @property
    def seq_ids(self) -> np.ndarray:
        """(N,) int64 block index of each content token (a "sequence" is a block)."""
        return np.broadcast_to(np.arange(self.n_blocks)[:, None], self.ids.shape)[self.content].astype(np.int64)

    @property
    def positions(self) -> np.ndarray:
        """(N,) int64 position of each content token in its block (special tokens leave gaps)."""
        return np.broadcast_to(np.arange(self.block_size)[None, :], self.ids.shape)[self.content].astype(np.int64)

    @property
    def is_masked(self) -> np.ndarray:
        """(N,) bool: the content token is masked in the masked pass."""
        return self.masked[self.content]

    def compute_hash(self) -> str:
        h = hashlib.sha256()
        h.update(f"probe-v1|{self.ids.shape}|{self.tokenizer_hash}|{','.join(self.bin_names)}".encode())
        for arr in (self.ids.astype(np.int32), self.masked.astype(np.bool_), self.freq_bin.astype(np.int8),
                    self.word_type.astype(np.int32), self.cka_index.astype(np.int64),
                    self.projection_index.astype(np.int64)):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def save(self, path: Path, id_to_token: list[str]) -> None:
        """Write the arrays (and the projection sample's token strings) to `path` (.npz), atomically."""
        tokens = self.tokens
        sample = self.projection_index
        copy = {} if self.copy is None else {"copy_ids": self.copy.ids, "copy_masked": self.copy.masked,
                                             "copy_start": np.array(self.copy.start), "copy_length": np.array(self.copy.length)}
        save_npz(path, ids=self.ids, content=self.content, masked=self.masked, freq_bin=self.freq_bin,
                 word_type=self.word_type, word_types=self.word_types, cka_index=self.cka_index,
                 projection_index=sample, bin_names=np.array(self.bin_names),
                 projection_tokens=np.array([id_to_token[t] for t in tokens[sample]]),
                 projection_seq_ids=self.seq_ids[sample], projection_freq_bin=self.freq_bin[sample],
                 word_type_strings=np.array([id_to_token[t] for t in self.word_types]), **copy)


@dataclass
class CopyBlocks:
    """The copying family's blocks: `ids` (n, start + 2T + end) int32, the framing's `start` opening tokens, then
    r_1…r_T r_1…r_T, then its closing tokens; `length` = T. The second copy's token t is at start + T + t.

    `masked` (n, width) bool, for an MLM's masked pass (`dynamics.metrics.copying`): per block a seeded 15 % of the
    t masked in the second copy only (`second_scored`), and another, disjoint 15 % masked in both copies
    (`first_scored`, scored at their first-copy positions)."""

    ids: np.ndarray
    start: int
    length: int
    masked: np.ndarray
    first_scored: np.ndarray  # (n, width) bool: masked first-copy positions whose second copy is masked too
    second_scored: np.ndarray  # (n, width) bool: masked second-copy positions whose first copy is visible

    @property
    def second(self) -> np.ndarray:
        """(n, width) bool: the second-copy positions (the queries of the duplicate-token and induction scores)."""
        out = np.zeros(self.ids.shape, dtype=bool)
        out[:, self.start + self.length : self.start + 2 * self.length] = True
        return out


def copy_blocks(tok: TokenizerView, *, seed: int, n_blocks: int, length: int, block_size: int,
                vocab_size: int) -> CopyBlocks | None:
    """The copy blocks (`CopyBlocks`): T = min(`length`, what fits in `block_size` with the framing); None when
    T < 2 or the vocabulary has no non-special token. Draws: `default_rng([seed, 4])` for the tokens (uniform over
    the non-special ids below `vocab_size`), `default_rng([seed, 5])` for the masked positions."""
    frame = tok.framing
    start, end = tuple(frame.start), tuple(frame.end)
    t = min(length, (block_size - len(start) - len(end)) // 2)
    special = np.zeros(vocab_size, dtype=bool)
    special[tok.special_ids[tok.special_ids < vocab_size]] = True
    pool = np.flatnonzero(~special)
    if t < 2 or n_blocks < 1 or pool.size == 0:
        return None
    r = pool[np.random.default_rng([seed, 4]).integers(0, pool.size, size=(n_blocks, t))]
    width = len(start) + 2 * t + len(end)
    ids = np.empty((n_blocks, width), dtype=np.int32)
    ids[:, : len(start)] = start
    ids[:, len(start) : len(start) + t] = r
    ids[:, len(start) + t : len(start) + 2 * t] = r
    ids[:, len(start) + 2 * t :] = end
    k = max(1, int(round(MASK_FRACTION * t)))
    rng = np.random.default_rng([seed, 5])
    first = np.zeros((n_blocks, width), dtype=bool)
    second = np.zeros((n_blocks, width), dtype=bool)
    for b in range(n_blocks):
        chosen = rng.permutation(t)[: 2 * k] if 2 * k <= t else rng.permutation(t)
        only_second, both = np.sort(chosen[:k]), np.sort(chosen[k:])
        second[b, len(start) + t + only_second] = True
        first[b, len(start) + both] = True
    masked = second | first
    masked[:, t:] |= first[:, :-t]  # the second copy of every t masked in both copies
    return CopyBlocks(ids, len(start), t, masked, first, second)


# ----------------------------------------------------------------------------------------------------- sources

def pack_text(path: Path, tok: TokenizerView, block_size: int) -> np.ndarray:
    """Tokenise the text file at `path` (documents split at blank lines) and pack it into blocks of `block_size`
    framed by `tok.framing` (`[CLS] … [SEP]` for encoders, see the module docstring); `ProbeError` when it is
    unreadable or gives less than one block."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProbeError(f"{path}: no such probe text file; pass an existing UTF-8 text file to --probe-text") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProbeError(f"{path}: unreadable as UTF-8 text ({type(exc).__name__}); pass a UTF-8 text file") from None
    docs = [d.strip() for d in text.replace("\r\n", "\n").split("\n\n")]
    docs = [d for d in docs if d]
    frame = tok.framing
    stream: list[int] = []
    for ids in tok.encode_batch(docs) if docs else []:
        if ids:
            if stream:
                stream.extend(frame.separator)
            stream.extend(ids)
    width = block_size - len(frame.start) - len(frame.end)
    n = len(stream) // width if width > 0 else 0
    if n == 0:
        raise ProbeError(f"{path}: gives {len(stream)} tokens, fewer than one probe block of {block_size} "
                         f"({width} text tokens); use a longer text")
    body = np.asarray(stream[: n * width], dtype=np.int32).reshape(n, width)
    out = np.empty((n, block_size), dtype=np.int32)
    out[:, : len(frame.start)] = frame.start
    out[:, len(frame.start) : len(frame.start) + width] = body
    out[:, len(frame.start) + width :] = frame.end
    return out


def load_blocks(path: Path) -> np.ndarray:
    """The packed validation blocks at `path` (int `(n_blocks, block)`); `ProbeError` when unusable."""
    fix = "re-run taco.train's data preparation or pass --probe-text FILE"
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise ProbeError(f"{path}: validation blocks missing; {fix}") from None
    except (OSError, ValueError) as exc:
        raise ProbeError(f"{path}: unreadable validation blocks ({type(exc).__name__}); {fix}") from None
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] < 3 or not np.issubdtype(arr.dtype, np.integer):
        raise ProbeError(f"{path}: expected a non-empty int array (n_blocks, block_size), got {arr.dtype} {arr.shape}; {fix}")
    return arr


def load_counts(path: Path | None, vocab_size: int) -> np.ndarray | None:
    """Training token counts `(vocab,)` or None when absent or not matching the vocabulary."""
    if path is None or not path.is_file():
        return None
    try:
        counts = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if counts.ndim != 1 or counts.shape[0] < vocab_size or not np.issubdtype(counts.dtype, np.integer):
        return None
    return counts.astype(np.int64)


# -------------------------------------------------------------------------------------------------- derivation

def _continuation(tokens: list[str], rule: str, is_special: np.ndarray) -> np.ndarray:
    """(V,) bool: the token id continues the previous word (it is not the start of a word)."""
    if rule == "##":
        return np.array([t.startswith("##") for t in tokens])
    if rule in ("G", "_"):
        marker = "\u0120" if rule == "G" else "\u2581"
        return np.array([not t.startswith(marker) for t in tokens]) & ~is_special
    return np.zeros(len(tokens), dtype=bool)


def word_types(ids: np.ndarray, content: np.ndarray, tok: TokenizerView, min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Eligible word types and, per content token, its type index (−1 if not a whole single-wordpiece word).

    Whole word at (b, i): content, not a continuation, and the token at (b, i+1) is not a continuation (the
    block's last position counts as followed by a word start). With start markers ('Ġ', '▁') the first
    content token after a special token also starts a word.
    """
    names = tok.id_to_token()
    vocab_n = max(len(names), int(ids.max()) + 1)
    names = names + [""] * (vocab_n - len(names))
    special = np.zeros(vocab_n, dtype=bool)
    special[tok.special_ids[tok.special_ids < vocab_n]] = True
    rule = tok.continuation_rule()
    cont = _continuation(names, rule, special)[ids]  # (B, T)
    if rule in ("G", "_"):
        prev_special = np.ones_like(content)
        prev_special[:, 1:] = ~content[:, :-1]
        cont &= ~prev_special
    nxt_cont = np.zeros_like(cont)
    nxt_cont[:, :-1] = cont[:, 1:]
    whole = content & ~cont & ~nxt_cont
    counts = np.bincount(ids[whole].ravel(), minlength=vocab_n)
    eligible = np.flatnonzero(counts >= min_count)
    lookup = np.full(vocab_n, -1, dtype=np.int32)
    lookup[eligible] = np.arange(eligible.size, dtype=np.int32)
    per_token = np.where(whole, lookup[ids], -1)[content].astype(np.int32)
    return eligible.astype(np.int32), per_token


def build(
    tok: TokenizerView,
    *,
    blocks: np.ndarray | None = None,
    text_path: Path | None = None,
    block_size: int = 128,
    probe_blocks: int = 64,
    max_tokens: int | None = None,
    seed: int = 0,
    train_counts: np.ndarray | None = None,
    source: str = "",
    min_word_count: int = 5,
    cka_tokens: int = 1024,
    projection_tokens: int = 2000,
    copy_blocks_n: int = 16,
    copy_length: int = 32,
) -> ProbeSet:
    """Build the probe set from validation `blocks` or the text at `text_path` (see the module docstring)."""
    if blocks is None:
        if text_path is None:
            raise ProbeError("no probe text: the run names no validation blocks; pass --probe-text FILE")
        blocks = pack_text(text_path, tok, block_size)
        source = source or f"text:{text_path}"
    where = str(text_path) if text_path is not None else source
    n_avail, width = blocks.shape
    n = min(probe_blocks, n_avail)
    if max_tokens is not None:
        if max_tokens < width:
            raise ProbeError(f"--max-tokens {max_tokens}: smaller than one probe block of {width} tokens; raise it")
        n = min(n, max_tokens // width)
    if n < 1:
        raise ProbeError(f"--probe-blocks {probe_blocks}: must be at least 1")
    rng = np.random.default_rng([seed, 0])
    chosen = np.sort(rng.choice(n_avail, size=n, replace=False))
    ids = np.ascontiguousarray(np.asarray(blocks[chosen], dtype=np.int32))
    vocab_len = len(tok)
    if ids.min() < 0 or ids.max() >= max(vocab_len, 1):
        raise ProbeError(f"{where}: token ids outside the tokenizer's vocabulary ({vocab_len}); "
                         "the blocks were made with another tokenizer — pass --probe-text FILE")
    special = np.zeros(max(vocab_len, int(ids.max()) + 1), dtype=bool)
    special[tok.special_ids] = True
    content = ~special[ids]
    n_content = int(content.sum())
    if n_content < 2:
        raise ProbeError(f"{where}: the probe blocks hold fewer than 2 content tokens; use more or longer text")

    mask_id = tok.token_id("mask_token")
    masked = np.zeros_like(content)
    flat = np.flatnonzero(content.ravel())
    k = max(1, int(round(MASK_FRACTION * n_content)))
    masked.ravel()[np.sort(np.random.default_rng([seed, 1]).choice(flat, size=k, replace=False))] = True

    notes: list[str] = []
    if mask_id is None:
        notes.append("the tokenizer has no mask token: an MLM's masked variant is skipped (a causal LM's "
                     "next-token head is measured at the masked positions instead)")
    tokens = ids[content].astype(np.int64)
    from dynamics.metrics.anchors import assign_frequency_bins, frequency_bin_names, frequency_bins

    if train_counts is not None:
        counts, freq_source = train_counts, "training counts"
    else:
        counts = np.bincount(tokens, minlength=special.size)
        freq_source = "probe set"
        notes.append("no training token counts: frequency bins come from the probe set itself")
    counts = counts.copy()
    counts[: special.size][special] = 0
    edges = frequency_bins(counts, n_bins=3)
    freq_bin = assign_frequency_bins(counts, edges)[tokens].astype(np.int8)

    types, per_token = word_types(ids, content, tok, min_word_count)
    rng_s = np.random.default_rng([seed, 2])
    cka_index = np.sort(rng_s.choice(n_content, size=min(cka_tokens, n_content), replace=False)).astype(np.int64)
    proj_index = np.sort(rng_s.choice(n_content, size=min(projection_tokens, n_content), replace=False)).astype(np.int64)
    probe = ProbeSet(ids, content, masked, freq_bin, per_token, types, cka_index, proj_index,
                     tuple(frequency_bin_names(3)), tok.hash, mask_id, source or where, freq_source, notes,
                     special_ids=tok.special_ids,
                     copy=copy_blocks(tok, seed=seed, n_blocks=copy_blocks_n, length=copy_length, block_size=width,
                                      vocab_size=vocab_len))
    probe.hash = probe.compute_hash()
    return probe
