"""`python -m dynamics.probe` on bad input: one line naming the path, exit status 2, stored results untouched."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dynamics import probe
from tests.integration.conftest import one_thread_env, one_torch_thread, train_tokenizer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def probed_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny run with a finished store in RUN/dynamics (copy it again before mutating)."""
    run = shutil.copytree(tiny_run, tmp_path_factory.mktemp("cli") / "mlm")
    with one_torch_thread():
        probe.run(run, probe_blocks=8, metrics=["geometry"], progress=False, figures=False)
    return run


@pytest.fixture()
def run(probed_run: Path, tmp_path: Path) -> Path:
    return shutil.copytree(probed_run, tmp_path / "mlm")


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (relative path → hash)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dynamics.probe", *map(str, args), "--no-progress"],
                          cwd=REPO, env=one_thread_env(), capture_output=True, text=True, timeout=300)


def assert_rejected(result: subprocess.CompletedProcess[str], path: Path | str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(path) in lines[0], lines[0]


def test_missing_and_empty_dirs(tmp_path: Path) -> None:
    assert_rejected(cli(tmp_path / "nope", "--out", tmp_path / "o"), tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert_rejected(cli(tmp_path / "empty", "--out", tmp_path / "o"), tmp_path / "empty")
    assert not (tmp_path / "o").exists()


def test_no_snapshots(run: Path) -> None:
    before = digest(run / "dynamics")
    for snap in (run / "snapshots").iterdir():
        shutil.rmtree(snap)
    assert_rejected(cli(run), run / "snapshots")
    assert digest(run / "dynamics") == before


def test_truncated_safetensors(run: Path) -> None:
    before = digest(run / "dynamics")
    weights = run / "snapshots" / "step-0000002" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    result = cli(run)  # every snapshot is already stored: the check still runs before anything is written
    assert_rejected(result, weights)
    assert "--steps" in result.stderr
    assert digest(run / "dynamics") == before


def test_different_tokenizers_in_one_series(run: Path, tmp_path: Path) -> None:
    before = digest(run / "dynamics")
    other = train_tokenizer(["completely different words here"] * 20 + ["zebra quartz"] * 5, 60, tmp_path / "tok")
    for f in other.iterdir():
        shutil.copy(f, run / "snapshots" / "step-0000001" / f.name)
    assert_rejected(cli(run), run / "snapshots" / "step-0000001")
    assert digest(run / "dynamics") == before


def test_vocab_size_differs_within_a_series(run: Path) -> None:
    before = digest(run / "dynamics")
    config = run / "snapshots" / "step-0000004" / "config.json"
    data = json.loads(config.read_text())
    data["vocab_size"] += 100
    config.write_text(json.dumps(data))
    assert_rejected(cli(run), "step-000000")
    assert digest(run / "dynamics") == before


def test_runs_with_different_tokenizers(run: Path, tmp_path: Path) -> None:
    before = digest(run / "dynamics")
    other = shutil.copytree(run, tmp_path / "other")
    shutil.rmtree(other / "tokenizer")
    train_tokenizer(["completely different words here"] * 20 + ["zebra quartz"] * 5, 60, other / "tokenizer")
    for config in (other / "snapshots").glob("*/config.json"):  # keep the series itself consistent
        data = json.loads(config.read_text())
        config.write_text(json.dumps({**data, "vocab_size": max(data["vocab_size"], 60)}))
    assert_rejected(cli(run, other, "--out", run / "dynamics"), other / "tokenizer")
    assert digest(run / "dynamics") == before


def test_probe_text_shorter_than_a_block(run: Path, tmp_path: Path) -> None:
    before = digest(run / "dynamics")
    short = tmp_path / "short.txt"
    short.write_text("Too short to fill a block.")
    assert_rejected(cli(run, "--probe-text", short), short)
    assert digest(run / "dynamics") == before


def test_unknown_step_and_bad_flag_values(run: Path, tmp_path: Path) -> None:
    before = digest(run / "dynamics")
    assert_rejected(cli(run, "--steps", "0,3"), run)
    result = cli(run, "--metrics", "anchors,bogus")
    assert result.returncode == 2 and "--metrics" in result.stderr
    bad = tmp_path / "c.json"
    bad.write_text('{"nonsense": 1}')
    assert_rejected(cli(run, "--config", bad), bad)
    assert digest(run / "dynamics") == before


def test_help_documents_the_output_rule() -> None:
    result = cli("--help")
    assert result.returncode == 0 and "dynamics-results" in result.stdout and "--probe-text" in result.stdout
