"""The novels of the built-in corpus (Debian R packages janeaustenr, tidytext, tokenizers): one document per chapter.

Hard-wrapped plain text is cut at heading lines (`CHAPTER XII`); Gutenberg licence text and `_italics_` marks go.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from taco.corpus.documents import CorpusError, Document, lines_to_text, word_count
from taco.corpus.r_data import read_r_lazyload, read_r_rda

MIN_SEGMENT_WORDS = 200  # shorter novel segments (title pages, "VOLUME II") are merged into the next one


_HEADING = re.compile(r"^\s*(?:CHAPTER|Chapter|BOOK|Book|VOLUME|Volume|PART|Part)\s+(?:\d+|[IVXLC]+|[A-Z]+)(?:\.|\s*$)")


def novel_chapters(lines: Sequence[str], min_words: int = MIN_SEGMENT_WORDS) -> list[tuple[str, str]]:
    """`(heading, text)` per chapter of a hard-wrapped novel; headings are lines like `CHAPTER XII` followed by
    a blank line (Moby-Dick's "Cetology" starts paragraphs with "BOOK I. (FOLIO)").

    Segments shorter than `min_words` (title pages, tables of contents, "VOLUME II") are merged into the
    segment after them, so every document has a body. The heading of a leading untitled segment is "".
    """
    segments: list[tuple[str, list[str]]] = [("", [])]
    part = ""  # the current BOOK / VOLUME / PART heading, prefixed to chapter headings (numbering restarts)
    for i, line in enumerate(lines):
        if _HEADING.match(line) and (i + 1 == len(lines) or not lines[i + 1].strip()):
            heading = " ".join(line.split())
            if re.match(r"(?i)(book|volume|part)\b", heading):
                part = heading
            elif part:
                heading = f"{part}, {heading}"
            segments.append((heading, []))
        segments[-1][1].append(line)
    merged: list[tuple[str, list[str]]] = []
    carry: list[str] = []
    for heading, body in segments:
        body = carry + body
        if word_count(" ".join(body)) < min_words:
            carry = body
        else:
            merged.append((heading, body))
            carry = []
    if carry and merged:
        merged[-1][1].extend(carry)
    return [(heading, lines_to_text(body)) for heading, body in merged if lines_to_text(body)]


def strip_emphasis(text: str) -> str:
    """`_word_` -> `word`: Gutenberg's plain-text italics would otherwise become stray `_` tokens."""
    return re.sub(r"(?<!\w)_([^_\n]+?)_(?!\w)", r"\1", text)


def chapter_documents(book_id: str, title: str, lines: Sequence[str], source: str) -> list[Document]:
    return [Document(f"{source}/{book_id}/{i:03d}", source, f"{title}, {heading}" if heading else title,
                     strip_emphasis(text))
            for i, (heading, text) in enumerate(novel_chapters(lines))]


AUSTEN_TITLES = {"sensesensibility": "Sense and Sensibility", "prideprejudice": "Pride and Prejudice",
                 "mansfieldpark": "Mansfield Park", "emma": "Emma", "northangerabbey": "Northanger Abbey",
                 "persuasion": "Persuasion"}


def _find(files: Mapping[str, bytes], suffix: str) -> bytes:
    for path, data in files.items():
        if path.endswith(suffix):
            return data
    raise CorpusError(f"the downloaded package has no file ending in {suffix}; it may have changed layout")


def austen_documents(files: Mapping[str, bytes], source: str = "austen") -> list[Document]:
    """One document per chapter of the six novels in Debian `r-cran-janeaustenr`."""
    rdx, rdb = _find(files, "data/Rdata.rdx"), _find(files, "data/Rdata.rdb")
    docs = []
    for var, title in AUSTEN_TITLES.items():
        docs += chapter_documents(var, title, [str(x) for x in read_r_lazyload(rdx, rdb, var)], source)
    return docs


def tidytext_documents(files: Mapping[str, bytes], source: str = "novels") -> list[Document]:
    """Chapters of the novels in `r-cran-tidytext`'s `extdata/books.rda`, except Austen's (already present)."""
    books = read_r_rda(_find(files, "extdata/books.rda"))["books"]
    titles, texts = [str(t) for t in books["title"]], [str(t) for t in books["text"]]
    docs = []
    for title in dict.fromkeys(titles):
        if title in AUSTEN_TITLES.values():
            continue
        lines = [text for t, text in zip(titles, texts, strict=True) if t == title]
        docs += chapter_documents(re.sub(r"\W+", "-", title.lower()).strip("-"), title, lines, source)
    return docs


def strip_gutenberg(text: str) -> str:
    """The body of a Project Gutenberg e-text, between its `*** START OF` and `*** END OF` lines."""
    start = re.search(r"^\*\*\* ?START OF.*$", text, re.M | re.I)
    end = re.search(r"^\*\*\* ?END OF.*$", text, re.M | re.I)
    return text[start.end() if start else 0 : end.start() if end else len(text)]


def mobydick_documents(files: Mapping[str, bytes], source: str = "mobydick") -> list[Document]:
    """Chapters of Moby-Dick from `r-cran-tokenizers` (one Gutenberg string; licence text dropped)."""
    raw = read_r_lazyload(_find(files, "data/Rdata.rdx"), _find(files, "data/Rdata.rdb"), "mobydick")
    text = strip_gutenberg(str(raw[0]).lstrip("\ufeff").replace("\r\n", "\n"))
    return chapter_documents("moby-dick", "Moby-Dick", text.split("\n"), source)
