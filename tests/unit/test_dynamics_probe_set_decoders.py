"""The probe set from decoder tokenizers (GPT-2 and GPT-NeoX byte-level BPE, Llama-style SentencePiece BPE, trained
here on English text): framing without CLS/SEP, EOS between documents, a BOS only where the tokenizer adds one,
special tokens never content, and word types by the word-start marker rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dynamics.find.tokens import TokenizerView, load_tokenizer
from dynamics.measure import probe_set as ps
from tests.causal_fixture import ARCHS, train_tokenizer
from tests.integration.conftest import english_docs
from tests.integration.conftest import train_tokenizer as train_wordpiece

DOCS = english_docs(60_000)


@pytest.fixture(scope="module")
def toks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TokenizerView]:
    root = tmp_path_factory.mktemp("decoder-tokenizers")
    out = {arch: load_tokenizer(train_tokenizer(arch, DOCS, root / arch)) for arch in ARCHS}
    out["bert"] = load_tokenizer(train_wordpiece(DOCS, 400, root / "bert"))
    return out


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("decoder-text") / "probe.txt"
    # many of these documents open with "Return" or "Get", which byte-level BPE spells without a 'Ġ' there
    path.write_text("\n\n".join(DOCS[:120]), encoding="utf-8")
    return path


def _id(tok: TokenizerView, s: str) -> int:
    return tok.vocab[s]


def test_framing_by_tokenizer_style(toks: dict[str, TokenizerView]) -> None:
    eot = _id(toks["gpt2"], "<|endoftext|>")
    for arch in ("gpt2", "neox"):  # no BOS added in front of a text; <|endoftext|> ends documents
        f = toks[arch].framing
        assert (f.style, f.start, f.end, f.separator) == ("decoder", (), (), (_id(toks[arch], "<|endoftext|>"),))
    assert toks["gpt2"].special_ids.tolist() == [eot]
    assert set(toks["neox"].special_ids.tolist()) == {_id(toks["neox"], "<|endoftext|>"), _id(toks["neox"], "<|padding|>")}
    llama = toks["llama"]
    assert (llama.framing.style, llama.framing.start, llama.framing.separator) == \
        ("decoder", (_id(llama, "<s>"),), (_id(llama, "</s>"),))
    bert = toks["bert"]
    assert (bert.framing.style, bert.framing.start, bert.framing.end, bert.framing.separator) == \
        ("encoder", (_id(bert, "[CLS]"),), (_id(bert, "[SEP]"),), (_id(bert, "[SEP]"),))
    assert toks["gpt2"].continuation_rule() == toks["neox"].continuation_rule() == "G"
    assert llama.continuation_rule() == "_" and bert.continuation_rule() == "##"


@pytest.mark.parametrize("arch", [*ARCHS, "bert"])
def test_pack_text_frames_the_document_stream(arch: str, toks: dict[str, TokenizerView], text: Path) -> None:
    """The blocks, with the framing tokens taken off, are the documents' tokens joined by the separator, in order."""
    tok = toks[arch]
    f = tok.framing
    blocks = ps.pack_text(text, tok, block_size=24)
    docs = [d.strip() for d in text.read_text().split("\n\n") if d.strip()]
    stream: list[int] = []
    for ids in tok.encode_batch(docs):
        stream += (list(f.separator) if stream else []) + ids
    width = 24 - len(f.start) - len(f.end)
    assert blocks.shape == (len(stream) // width, 24)
    assert (blocks[:, : len(f.start)] == f.start).all() and (blocks[:, 24 - len(f.end) :] == f.end).all()
    assert blocks[:, len(f.start) : 24 - len(f.end)].ravel().tolist() == stream[: blocks.shape[0] * width]
    if arch in ("gpt2", "neox"):  # not wrapped: the first block starts with the first document's first token
        assert blocks[0, 0] == tok.encode_batch(docs[:1])[0][0]


@pytest.mark.parametrize("arch", ARCHS)
def test_build_excludes_special_tokens_and_finds_word_types(arch: str, toks: dict[str, TokenizerView],
                                                           text: Path) -> None:
    tok = toks[arch]
    p = ps.build(tok, text_path=text, block_size=32, probe_blocks=10_000, min_word_count=3)  # every block
    special = np.isin(p.ids, tok.special_ids)
    assert special.any()  # EOS between documents (and Llama's <s> opening each block)
    assert np.array_equal(p.content, ~special) and not (p.masked & ~p.content).any()
    if arch == "llama":
        assert (p.ids[:, 0] == _id(tok, "<s>")).all() and not p.content[:, 0].any()
    assert p.mask_id is None and any("next-token head" in n for n in p.notes)
    assert np.array_equal(p.word_type >= 0, _marker_word_types(p, tok, 3) >= 0)
    assert len(p.word_types) >= 5
    if arch != "llama":  # a document's first word has no 'Ġ' and still counts, as the word after a special token
        names = tok.id_to_token()
        assert any(not names[t].startswith("\u0120") for t in p.tokens[p.word_type >= 0])


def _marker_word_types(p: ps.ProbeSet, tok: TokenizerView, min_count: int) -> np.ndarray:
    """The documented rule, one cell at a time: a content token that starts a word (its string starts with the
    marker, or it is its block's first token or follows a special token) and is followed by a word start, a
    special token or the block's end; eligible when such occurrences of its id number at least `min_count`."""
    names = tok.id_to_token()
    marker = "\u0120" if tok.continuation_rule() == "G" else "\u2581"
    special = set(tok.special_ids.tolist())

    def starts(b: int, i: int) -> bool:
        return names[p.ids[b, i]].startswith(marker) or i == 0 or int(p.ids[b, i - 1]) in special

    whole = []
    for b, i in zip(*np.nonzero(p.content), strict=True):
        nxt = i + 1 == p.block_size or int(p.ids[b, i + 1]) in special or starts(b, i + 1)
        whole.append(starts(b, i) and nxt)
    whole = np.array(whole)
    counts = np.bincount(p.tokens[whole], minlength=len(names))
    return np.where(whole & (counts[p.tokens] >= min_count), p.tokens, -1)
