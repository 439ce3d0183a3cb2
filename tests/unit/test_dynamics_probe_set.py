"""The frozen probe set: packing, masking, word types, frequency bins, hashing, and its error cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dynamics.errors import ProbeError
from dynamics.find.tokens import TokenizerView, load_tokenizer, vocab_hash
from dynamics.measure import probe_set as ps

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "un", "##der", "##s",
         "a", "dog", ".", "ran"]


@pytest.fixture()
def tok(tmp_path: Path) -> TokenizerView:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    t = Tokenizer(models.WordPiece(vocab={w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    t.normalizer = normalizers.BertNormalizer(lowercase=True)
    t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    t.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "mask_token": "[MASK]", "unk_token": "[UNK]"}))
    return load_tokenizer(tmp_path)


def test_tokenizer_view(tok: TokenizerView) -> None:
    assert tok.token_id("cls_token") == 2 and tok.token_id("mask_token") == 4
    assert list(tok.special_ids) == [0, 1, 2, 3, 4]
    assert tok.continuation_rule() == "##"
    assert tok.encode_batch(["The cat sat under the mat."]) == [[5, 6, 7, 10, 11, 5, 9, 15]]
    assert tok.hash == vocab_hash({w: i for i, w in enumerate(VOCAB)})


def test_saved_padding_and_truncation_are_ignored(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    t = Tokenizer(models.WordPiece(vocab={w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    t.enable_padding(pad_id=0, pad_token="[PAD]")
    t.enable_truncation(max_length=3)
    t.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"cls_token": "[CLS]", "sep_token": "[SEP]"}))
    view = load_tokenizer(tmp_path)
    assert view.encode_batch(["the cat sat on the mat", "a dog"]) == [[5, 6, 7, 8, 5, 9], [13, 14]]


def test_pack_text(tok: TokenizerView, tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat .\n\na dog ran .")
    blocks = ps.pack_text(text, tok, block_size=6)
    # stream: the cat sat on the mat . [SEP] a dog ran . → 12 tokens → 3 blocks of 4 text tokens
    assert blocks.shape == (3, 6)
    assert (blocks[:, 0] == 2).all() and (blocks[:, -1] == 3).all()
    assert list(blocks[1, 1:-1]) == [5, 9, 15, 3]
    with pytest.raises(ProbeError, match="fewer than one probe block"):
        ps.pack_text(text, tok, block_size=64)
    with pytest.raises(ProbeError, match="no such probe text"):
        ps.pack_text(tmp_path / "missing.txt", tok, block_size=6)


def test_word_types_single_wordpiece_whole_words(tok: TokenizerView) -> None:
    # [CLS] the cat un ##der the ##s cat [SEP] — "un" and "the"(before ##s) are not whole words
    row = [2, 5, 6, 10, 11, 5, 12, 6, 3]
    ids = np.array([row] * 3, dtype=np.int32)
    content = ~np.isin(ids, tok.special_ids)
    types, per_token = ps.word_types(ids, content, tok, min_count=5)
    assert list(types) == [6]  # "cat": 2 whole occurrences per block × 3 = 6 ≥ 5; "the": 3 whole occurrences < 5
    per_block = per_token.reshape(3, 7)
    assert list(per_block[0]) == [-1, 0, -1, -1, -1, -1, 0]


def _blocks(n: int = 40, width: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    body = rng.integers(5, len(VOCAB), size=(n, width - 2))
    return np.concatenate([np.full((n, 1), 2), body, np.full((n, 1), 3)], axis=1).astype(np.int32)


def test_build_is_frozen_and_seeded(tok: TokenizerView) -> None:
    blocks = _blocks()
    a = ps.build(tok, blocks=blocks, probe_blocks=10, seed=0, source="v")
    b = ps.build(tok, blocks=blocks, probe_blocks=10, seed=0, source="v")
    c = ps.build(tok, blocks=blocks, probe_blocks=10, seed=1, source="v")
    assert a.hash == b.hash and a.hash != c.hash
    assert a.ids.shape == (10, 12) and a.n_tokens == 100
    assert not (a.masked & ~a.content).any()
    assert a.masked.sum() == round(0.15 * a.n_tokens)
    assert a.freq_source == "probe set" and any("probe set" in n for n in a.notes)
    assert set(np.unique(a.freq_bin)) <= {0, 1, 2}
    assert a.tokens.shape == a.seq_ids.shape == a.positions.shape == (100,)
    assert a.positions.min() == 1 and a.positions.max() == 10
    capped = ps.build(tok, blocks=blocks, probe_blocks=10, max_tokens=30, seed=0)
    assert capped.n_blocks == 2
    with pytest.raises(ProbeError, match="--max-tokens"):
        ps.build(tok, blocks=blocks, max_tokens=5)


def test_training_counts_make_the_bins(tok: TokenizerView) -> None:
    counts = np.zeros(len(VOCAB), dtype=np.int64)
    counts[5] = 100  # "the" holds the first third of the training mass alone → the only frequent type
    counts[6:] = 10
    p = ps.build(tok, blocks=_blocks(), probe_blocks=10, train_counts=counts)
    assert p.freq_source == "training counts"
    assert set(p.freq_bin[p.tokens == 5]) == {0}
    assert (p.freq_bin[p.tokens != 5] > 0).all()


def test_ids_outside_the_vocabulary(tok: TokenizerView) -> None:
    blocks = _blocks()
    blocks[0, 3] = 999
    with pytest.raises(ProbeError, match="outside the tokenizer"):
        ps.build(tok, blocks=blocks, probe_blocks=40, source="validation:x")


def test_save_roundtrip(tok: TokenizerView, tmp_path: Path) -> None:
    p = ps.build(tok, blocks=_blocks(), probe_blocks=5)
    path = tmp_path / "probe.npz"
    p.save(path, tok.id_to_token())
    with np.load(path) as data:
        assert (data["ids"] == p.ids).all()
        assert list(data["bin_names"]) == ["frequent", "medium", "rare"]
        assert len(data["projection_tokens"]) == len(p.projection_index)
    assert not list(tmp_path.glob(".*tmp"))
