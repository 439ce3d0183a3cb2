"""`python -m dynamics.probe ORG/NAME --revisions …` end to end on a Hub cache written by the test: three tiny
random BERTs (2 layers, hidden 32, a WordPiece tokenizer trained on English text) stored as Pythia-style step
revisions. The stored values must equal those of the same models probed as MultiBERTs-style step folders on
disk, the cache must be left as it was, and no request may leave the process (a local HTTP server stands in for
the Hub and counts them)."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from dynamics import probe
from dynamics.results import store
from tests.hub_fixture import add_revision
from tests.integration.conftest import (
    english_docs,
    one_thread_env,
    one_torch_thread,
    tiny_mlm,
    train_tokenizer,
)

REPO = Path(__file__).resolve().parents[2]
REPO_ID = "EleutherAI/pythia-tiny"  # a Pythia name: tokens seen = step × 2,097,152
STEPS = (1000, 2000, 3000)
SETTINGS = dict(probe_blocks=8, block_size=32, seed=0)
KEY = ["step", "layer", "metric", "variant"]


@pytest.fixture(scope="module")
def tiny_series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"folders": DIR of `tiny-step_1k/` … (each with its tokenizer), "cache": a Hub cache holding the same
    models as `step1000` … without tokenizer files and `main` = the last one with them, "text": probe text}."""
    import torch
    from tokenizers import Tokenizer

    root = tmp_path_factory.mktemp("hub-series")
    tok = train_tokenizer(english_docs(), 400, root / "tokenizer")
    vocab = Tokenizer.from_file(str(tok / "tokenizer.json")).get_vocab_size()
    folders = root / "tiny"
    cache = root / "hf-cache"
    with one_torch_thread():
        for i, step in enumerate(STEPS):
            torch.manual_seed(i)
            folder = folders / f"tiny-step_{step // 1000}k"
            tiny_mlm("bert", vocab=vocab, hidden=32, layers=2).save_pretrained(str(folder))
            add_revision(cache, REPO_ID, f"step{step}", folder)  # weights and config only
            shutil.copytree(tok, folder, dirs_exist_ok=True)
    add_revision(cache, REPO_ID, "main", folders / f"tiny-step_{STEPS[-1] // 1000}k")
    text = root / "probe.txt"
    text.write_text("\n\n".join(english_docs(30_000)), encoding="utf-8")
    return {"folders": folders, "cache": cache, "text": text}


@pytest.fixture
def fake_hub() -> Iterator[tuple[list[str], str]]:
    """A local HTTP server for HF_ENDPOINT: yields (the request paths it received, its URL)."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.path)
            self.send_response(404)
            self.end_headers()

        do_HEAD = do_POST = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def _rows(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    with store.open(out, readonly=True) as s:
        return s.metrics().sort_values(KEY).reset_index(drop=True), s.snapshots()


def test_cache_series_equals_the_same_snapshots_as_folders(
        tiny_series: dict[str, Path], fake_hub: tuple[list[str], str], tmp_path: Path) -> None:
    seen, endpoint = fake_hub
    cache = tiny_series["cache"]
    before = _digest(cache)
    env = {**one_thread_env(), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
           "HF_ENDPOINT": endpoint, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    revisions = ",".join(f"step{s}" for s in STEPS)
    result = subprocess.run(
        [sys.executable, "-m", "dynamics.probe", REPO_ID, "--revisions", revisions, "--probe-text",
         str(tiny_series["text"]), "--probe-blocks", str(SETTINGS["probe_blocks"]), "--block-size",
         str(SETTINGS["block_size"]), "--no-figures", "--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert seen == [], f"the probe contacted the Hub: {seen}"
    assert _digest(cache) == before, "the probe changed the Hub cache"
    hub_out = tmp_path / "dynamics-results"  # a Hub model's results go to ./dynamics-results, not into the cache

    with one_torch_thread():
        probe.run(tiny_series["folders"], out=tmp_path / "folders", probe_text=tiny_series["text"], progress=False,
                  figures=False, **SETTINGS)
    hub_rows, hub_snaps = _rows(hub_out)
    dir_rows, dir_snaps = _rows(tmp_path / "folders")

    assert set(hub_rows["run"]) == {REPO_ID} and set(dir_rows["run"]) == {"tiny"}
    assert sorted(set(hub_rows["step"])) == list(STEPS)
    assert len(hub_rows) == len(dir_rows) > 100
    pd.testing.assert_frame_equal(hub_rows[[*KEY, "value"]], dir_rows[[*KEY, "value"]], check_exact=False,
                                  rtol=1e-6, atol=1e-9)
    tokens = dict(zip(hub_snaps["step"], hub_snaps["tokens_seen"], strict=True))
    assert tokens == {s: s * 2_097_152 for s in STEPS}
    assert hub_snaps["tokens_seen"].notna().all() and dir_snaps["tokens_seen"].isna().all()
    assert all(Path(p).parent == cache / "models--EleutherAI--pythia-tiny" / "snapshots" for p in hub_snaps["path"])
