"""The two Bibles of the built-in corpus: Debian `sword-text-*` packages, read without SWORD.

A SWORD zText module (`.bzs`/`.bzz`/`.bzv` per testament) is unpacked into its OSIS entries, OSIS markup
becomes plain text, and runs of chapters of one book become documents of about `BIBLE_TARGET_WORDS` words.
"""

from __future__ import annotations

import bisect
import html
import re
import struct
import zlib
from collections.abc import Mapping, Sequence

from taco.corpus.documents import CorpusError, Document, normalise_text, word_count

BIBLE_TARGET_WORDS = 2500  # chapters are grouped into documents of about this size


def parse_sword_conf(text: str) -> dict[str, str]:
    """`Key=Value` lines of a SWORD `mods.d/*.conf`; the `[Module]` header becomes key `module`."""
    conf: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]") and "module" not in conf:
            conf["module"] = line[1:-1]
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            conf.setdefault(key.strip(), value.strip())
    return conf


def read_ztext(bzs: bytes, bzz: bytes, bzv: bytes) -> list[str]:
    """Entries of one zText testament (`ot` or `nt`) in versification order.

    `.bzs` holds 12-byte records (offset, size, uncompressed size) of zlib blocks in `.bzz`; `.bzv` holds
    10-byte records (block, offset, size) locating each verse inside its decompressed block. Reading through
    the verse index, not block by block, puts text the converter stored out of order back in reading order.
    Empty entries (unused headings) and repeated ones (linked verses) are skipped. Sizes are 16-bit, so an
    entry over 64 KiB (a whole chapter the versification lacks, folded into one verse) reads as its size
    modulo 65536; the gap to the next indexed entry in the block restores it. Text between entries is not
    used: it is stale, left where the converter rewrote a verse elsewhere.
    """
    if len(bzs) % 12 or len(bzv) % 10:
        raise CorpusError("corrupt SWORD zText module: index sizes are not multiples of the record sizes")
    blocks = list(struct.iter_unpack("<III", bzs))
    records = [r for r in struct.iter_unpack("<IIH", bzv) if r[2]]
    starts: dict[int, list[int]] = {}
    for block, offset, _ in records:
        starts.setdefault(block, []).append(offset)
    for block, offsets in starts.items():
        offsets.sort()
        offsets.append(blocks[block][2])
    cache: dict[int, bytes] = {}
    seen: set[tuple[int, int]] = set()
    entries = []
    for block, offset, size in records:
        if (block, offset) in seen:
            continue
        seen.add((block, offset))
        if block not in cache:
            start, length, _ = blocks[block]
            cache[block] = zlib.decompress(bzz[start : start + length])
        offsets = starts[block]
        room = offsets[bisect.bisect_right(offsets, offset)] - offset
        size += (room - size) // 0x10000 * 0x10000 if room > size else 0  # undo u16 overflow of long entries
        entries.append(cache[block][offset : offset + size].decode("utf-8", errors="replace"))
    return entries


_NOTE = re.compile(r"<note\b[^>]*/>|<note\b[^>]*>.*?</note>", re.S)
# Structural elements become paragraph breaks, poetry lines and milestones word breaks, inline markup nothing.
_BREAK_TAG = re.compile(r"<(?:/?title|/?lg|lb|chapter|/?item|/?list|/?p|div(?![^>]*x-milestone))\b[^>]*>")
_SPACE_TAG = re.compile(r"<(?:l|milestone)\b[^>]*>")
_ANY_TAG = re.compile(r"<[^>]*>")
_NOTE_MARK = "\x00"


def osis_to_text(osis: str) -> str:
    """Plain text of an OSIS fragment: notes dropped entirely, other tags removed, paragraphs kept.

    A removed note leaves a word break unless punctuation follows (the source writes `Yahweh’s<note/>law`
    as well as `gerahs<note/>);`).
    """
    text = _NOTE.sub(_NOTE_MARK, osis)
    text = _BREAK_TAG.sub("\n\n", text)
    text = _SPACE_TAG.sub(" ", text)
    text = _ANY_TAG.sub("", text).replace("¶", "\n\n")
    text = re.sub(_NOTE_MARK + r"+(?=[,.;:!?)\]”’])", "", text).replace(_NOTE_MARK, " ")
    return normalise_text(html.unescape(text))


_START_TAG = re.compile(r"<(?:chapter|div)\b[^>]*>")


def _attr(tag: str, name: str) -> str | None:
    match = re.search(rf'\b{name}="([^"]*)"', tag)
    return match.group(1) if match else None


def bible_chapters(osis: str) -> list[tuple[str, int, str]]:
    """Split a concatenated OSIS stream into `(book, chapter, osis)` at chapter start milestones.

    Text between a book's start and its first chapter (book title, introduction) joins that first chapter;
    text after the last chapter (a glossary) stays with it.
    """
    starts: list[tuple[int, str]] = []  # (where the chapter's text begins, its osisID)
    book_start: int | None = None
    for match in _START_TAG.finditer(osis):
        tag = match.group(0)
        if _attr(tag, "sID") is None:
            continue
        if tag.startswith("<div") and _attr(tag, "type") == "book":
            book_start = match.start()
        elif tag.startswith("<chapter") and (osis_id := _attr(tag, "osisID")):
            starts.append((match.start() if book_start is None else book_start, osis_id))
            book_start = None
    bounds = [0] + [pos for pos, _ in starts[1:]] + [len(osis)]
    chapters = []
    for (_, osis_id), begin, end in zip(starts, bounds, bounds[1:], strict=False):
        book, _, num = osis_id.rpartition(".")
        chapters.append((book, int(num) if num.isdigit() else 0, osis[begin:end]))
    return chapters


def book_names(osis: str) -> dict[str, str]:
    """OSIS book id -> display name, from the `x-usfm-h` milestone following each book start."""
    names: dict[str, str] = {}
    for match in re.finditer(r'<div\b[^>]*type="book"[^>]*>', osis):
        book = _attr(match.group(0), "osisID")
        header = re.search(r'<milestone\b[^>]*type="x-usfm-h"[^>]*>', osis[match.end() : match.end() + 2000])
        if book and header and _attr(header.group(0), "n") and book not in names:
            names[book] = _attr(header.group(0), "n") or book
    return names


def group_chapters(chapters: Sequence[tuple[str, int, str]], target_words: int) -> list[list[int]]:
    """Indices of consecutive chapters of one book, grouped to about `target_words` words per document.

    A chapter alone (~700 words) is short for a training document and a book (up to 40k) long, so runs of
    chapters are closed once they reach the target; a short tail is folded into the previous run.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    words = 0
    for i, (book, _, text) in enumerate(chapters):
        current.append(i)
        words += word_count(text)
        last_of_book = i + 1 == len(chapters) or chapters[i + 1][0] != book
        if words >= target_words or last_of_book:
            if words < target_words // 2 and groups and chapters[groups[-1][-1]][0] == book:
                groups[-1].extend(current)
            else:
                groups.append(current)
            current, words = [], 0
    return groups


def bible_documents(files: Mapping[str, bytes], source: str) -> list[Document]:
    """Documents of runs of chapters from the one zText module in a Debian `sword-text-*` package."""
    confs = [p for p in files if "/mods.d/" in p and p.endswith(".conf")]
    if len(confs) != 1:
        raise CorpusError(f"expected one SWORD module in the {source} package, found {len(confs)} conf files")
    conf = parse_sword_conf(files[confs[0]].decode("utf-8", errors="replace"))
    if conf.get("ModDrv", "").lower() != "ztext" or conf.get("CompressType", "ZIP").upper() != "ZIP":
        raise CorpusError(f"SWORD module {conf.get('module')} is not a zlib zText module; cannot read it")
    root = confs[0].split("mods.d/")[0] + conf["DataPath"].removeprefix("./").rstrip("/") + "/"
    entries: list[str] = []
    for testament in ("ot", "nt"):
        bzs, bzz, bzv = (files.get(f"{root}{testament}.{ext}") for ext in ("bzs", "bzz", "bzv"))
        if bzs is not None and bzz is not None and bzv is not None:
            entries += read_ztext(bzs, bzz, bzv)
    osis = "".join(entries)
    names = book_names(osis)
    chapters = [(book, num, osis_to_text(text)) for book, num, text in bible_chapters(osis)]
    docs = []
    for group in group_chapters(chapters, BIBLE_TARGET_WORDS):
        book, first, last = chapters[group[0]][0], chapters[group[0]][1], chapters[group[-1]][1]
        span = str(first) if first == last else f"{first}–{last}"
        text = "\n\n".join(chapters[i][2] for i in group if chapters[i][2])
        if text:
            docs.append(Document(f"{source}/{book}.{first}-{last}", source,
                                 f"{conf.get('Abbreviation', source)} {names.get(book, book)} {span}", text))
    return docs
