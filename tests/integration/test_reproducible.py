"""The same run twice: two cold starts of `python -m taco.train --preset tiny` with one seed write the same run.

Each run has its own fresh cache root (`TACO_DYNAMICS_CACHE`), so the tokenizer and the packed blocks are built
from scratch in each; what they share is the training text, a JSONL slice of the built-in corpus (a file corpus
is read in place, never cached). The runs differ in hash seed and tokenizer thread settings, which must not
matter; torch gets one thread in both, since the thread count may change floating-point sums.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SETTINGS = [
    {"PYTHONHASHSEED": "0", "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
    {"PYTHONHASHSEED": "1", "RAYON_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "true"},
]
ARGS = ["--preset", "tiny", "--seed", "7", "--max-steps", "3", "--batch-size", "4", "--block-size", "64",
        "--eval-blocks", "8", "--snapshot-every", "3", "--log-every", "1", "--device", "cpu", "--no-progress"]
TIMING = {"tokens_per_s", "elapsed_s", "wall_time"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): _sha(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _without_timing(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING}


def test_two_cold_runs_with_one_seed_are_identical(small_english_corpus: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(line + "\n" for line in small_english_corpus.read_text().splitlines()[::3]))
    runs, caches, procs = [], [], []
    for i, settings in enumerate(SETTINGS):
        run, cache = tmp_path / f"run{i}", tmp_path / f"cache{i}"
        env = {**os.environ, **settings, "TACO_DYNAMICS_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "taco.train", *ARGS, "--corpus", str(corpus),
                                       "--output-dir", str(run)],
                                      cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        runs.append(run)
        caches.append(cache)
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    a, b = runs
    for cache in caches:  # each root built its own tokenizer and blocks
        assert sorted(p.name for p in cache.iterdir()) == ["blocks", "tokenizers"]
        assert list((cache / "tokenizers").glob("*/tokenizer.json")) and list((cache / "blocks").glob("*/train.npy"))

    assert _files(a / "tokenizer") == _files(b / "tokenizer")
    assert _files(a / "data") == _files(b / "data")
    run_a, run_b = (json.loads((r / "run.json").read_text()) for r in runs)
    assert run_a["tokenizer"] == run_b["tokenizer"] and run_a["corpus"] == run_b["corpus"]

    log_a, log_b = ([json.loads(line) for line in (r / "log.jsonl").read_text().splitlines()] for r in runs)
    assert [r["step"] for r in log_a if "split" not in r] == [1, 2, 3]
    assert [_without_timing(r) for r in log_a] == [_without_timing(r) for r in log_b]

    steps = sorted(p.name for p in (a / "snapshots").iterdir())
    assert steps == sorted(p.name for p in (b / "snapshots").iterdir()) == [f"step-{s:07d}" for s in range(4)]
    weights = [_sha(a / "snapshots" / s / "model.safetensors") for s in steps]
    assert weights == [_sha(b / "snapshots" / s / "model.safetensors") for s in steps]
    assert len(set(weights)) == len(steps)  # the steps trained something, so equal hashes mean equal training
    for s in steps:
        info_a, info_b = (json.loads((r / "snapshots" / s / "snapshot.json").read_text()) for r in runs)
        assert _without_timing(info_a) == _without_timing(info_b)
