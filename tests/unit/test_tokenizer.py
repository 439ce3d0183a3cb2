"""`taco.tokenizer`: the WordPiece vocabulary is a function of the text and the size alone (same bytes in any
process, hash seed or thread count), its merge rule and tie-break, and the saved folder loads as a BERT tokenizer."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tokenizers import normalizers, pre_tokenizers
from transformers import AutoTokenizer

from taco.tokenizer import SPECIAL_TOKENS, cached_tokenizer, learn_vocab, train_wordpiece, word_counts

REPO = Path(__file__).resolve().parents[2]
# Trains on the text of a JSONL file (argv[1]) and saves to argv[2] with vocabulary size argv[3].
TRAIN_SCRIPT = """
import json, sys
from pathlib import Path
from taco.tokenizer import train_wordpiece
texts = [json.loads(line)["text"] for line in Path(sys.argv[1]).read_text().splitlines()]
train_wordpiece(texts, int(sys.argv[3])).save_pretrained(sys.argv[2])
"""
# On a third of `small_english_corpus` (100 documents, 0.28 M words) the last merges have counts of 2-3, where
# many pairs tie: the Hugging Face trainer then picks different tokens, not only different ids, from run to run.
VOCAB = 6000
# The classic BPE example: "hug", "pug", "pun", "bun", "hugs" with these counts.
HUG_WORDS = {"hug": 10, "pug": 5, "pun": 12, "bun": 4, "hugs": 5}
HUG_BASE = [*SPECIAL_TOKENS, "b", "g", "h", "n", "p", "s", "u", "##g", "##n", "##s", "##u"]


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_merges_follow_counts_then_code_point_order_up_to_the_size():
    # Counts: ##u ##g 20 -> ##un 16 -> hug 15 -> pun 12 -> then (hug, ##s) and (p, ##ug) tie at 5: "hug" < "p"
    # decides -> pug 5 -> bun 4.
    merges = ["##ug", "##un", "hug", "pun", "hugs", "pug", "bun"]
    assert learn_vocab(HUG_WORDS, 100) == HUG_BASE + merges
    # The size cuts between the two tied pairs: the tie-break, not dict order, decides which one is in.
    assert learn_vocab(HUG_WORDS, len(HUG_BASE) + 5) == HUG_BASE + merges[:5]
    assert learn_vocab(dict(reversed(HUG_WORDS.items())), len(HUG_BASE) + 5) == HUG_BASE + merges[:5]
    # min_frequency: "bun" (4 occurrences) is the first merge below 5.
    assert learn_vocab(HUG_WORDS, 100, min_frequency=5) == HUG_BASE + merges[:6]
    # A size below the alphabet keeps the whole alphabet and merges nothing.
    assert learn_vocab(HUG_WORDS, 3) == HUG_BASE


def test_word_counts_match_the_pre_tokeniser_on_whole_documents(small_english_corpus):
    texts = [json.loads(line)["text"] for line in small_english_corpus.read_text().splitlines()[::10]]
    # Accents, tabs and newlines, a no-break space, a control character, CJK, a combining accent after a space,
    # runs of spaces and punctuation glued to words: the cut at ASCII spaces must not change any word.
    texts.append("Café  naïve\tword\nend\u00a0of\x1cline 中文字 x \u0301y ...dots!! (paren) \"quote\" ##hash  ")
    norm = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    pre = pre_tokenizers.BertPreTokenizer()
    direct = Counter(w for t in texts for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
    assert word_counts(texts) == direct
    assert word_counts(iter(texts)) == direct  # a one-pass iterator is enough


def test_the_same_text_gives_the_same_files_in_any_process(small_english_corpus, tmp_path):
    """Three fresh processes with different hash seeds and thread counts write byte-identical folders."""
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(line + "\n" for line in small_english_corpus.read_text().splitlines()[::3]))
    settings = [
        {"PYTHONHASHSEED": "0", "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
        {"PYTHONHASHSEED": "1", "RAYON_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "true"},
        {"PYTHONHASHSEED": "random", "RAYON_NUM_THREADS": "3", "TOKENIZERS_PARALLELISM": "true"},
    ]
    procs = []
    for i, env in enumerate(settings):
        out = tmp_path / f"tok{i}"
        procs.append((out, subprocess.Popen(
            [sys.executable, "-c", TRAIN_SCRIPT, str(corpus), str(out), str(VOCAB)],
            cwd=REPO, env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)))
    folders = []
    for out, proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        folders.append(out)
    first = _files(folders[0])
    assert "tokenizer.json" in first
    assert [_files(f) for f in folders[1:]] == [first, first]

    tok = AutoTokenizer.from_pretrained(str(folders[0]))
    assert len(tok) == VOCAB
    assert tok.convert_ids_to_tokens(list(range(5))) == SPECIAL_TOKENS
    ids = tok("The President addressed the Congress of the United States.")["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and ids[0] == 2 and ids[-1] == 3
    assert tok.unk_token_id not in ids, tokens
    assert {"the", "president", "congress", "united", "states", "."} <= set(tokens)
    assert tok.decode(ids, skip_special_tokens=True) == "the president addressed the congress of the united states."
    # A word outside the vocabulary splits into `##` continuations rather than [UNK].
    pieces = tok.tokenize("Supercalifragilistic")
    assert len(pieces) > 1 and all(p.startswith("##") for p in pieces[1:]) and "[UNK]" not in pieces
    # Special tokens written in the text are recognised, as in BERT.
    assert tok("a [MASK] b")["input_ids"][2] == tok.mask_token_id == 4


def test_tokenizers_cached_by_the_old_trainer_are_not_reused(tmp_path):
    texts = ["the people of the united states and their government"] * 30
    fingerprint = "f" * 64
    old_key = hashlib.sha256(f"wordpiece-uncased|{fingerprint}|80".encode()).hexdigest()[:16]
    stale = tmp_path / "tokenizers" / old_key
    train_wordpiece(["something else entirely"] * 5, 40).save_pretrained(str(stale))
    path = cached_tokenizer(texts, fingerprint, 80, tmp_path)
    assert path != stale and path.parent == stale.parent
    assert "government" in AutoTokenizer.from_pretrained(str(path)).get_vocab()
    assert cached_tokenizer(texts, fingerprint, 80, tmp_path) == path  # and the new entry is reused
