"""What a corpus is made of (`Document`, `Corpus`, `CorpusError`) and the text normalisation every source shares."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


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
