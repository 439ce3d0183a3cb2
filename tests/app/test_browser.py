"""The app in a real browser: `streamlit run app/main.py -- --runs <fixture>` on a free loopback port, Debian's
headless Chromium driven over the DevTools protocol (`tests.app.browser`), every page waited on until its charts
are drawn, its text checked, and a screenshot saved in the test's temporary folder (paths printed; run with -s)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dynamics.metrics import registry
from tests.app.browser import REPO, Chromium, chromium_or_skip, serve

# page URL path → texts the drawn page must show (chart titles are SVG text, so they are in the page text)
EXPECT = {
    "": ["Runs", "mlm-tiny", "taco-tiny", "orphan-mlm", "Training curves", "Loss"],
    "anchors": ["Anchors", "Anchor similarity (word embedding), layer 2", "mlm-tiny", "taco-tiny",
                registry.get("anchor_sim_word").pointer],
    "context": ["Context alignment", "Context alignment, same sequence, layer 2",
                registry.get("ctx_same_all").pointer],
    "geometry": ["Geometry", "Anisotropy, layer 2", registry.get("anisotropy").pointer],
    "cka": ["CKA", "mlm-tiny: layer 2, step × step (debiased)", "mlm-tiny: step 4, layer × layer (debiased)"],
    "tokens": ["Token explorer", "mlm-tiny: h at layer 2, step 4"],
    "downstream": ["Downstream", "SST-2: Score (linear probe, layer 2)", "Final scores", "Notes from the evaluation",
                   "experiments.scoring.score"],
}
SIDEBAR = ["Runs", "Anchors", "Context alignment", "Geometry", "CKA", "Token explorer", "Downstream", "Results store"]


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_or_skip()  # skipped on a developer's machine without it; a failure on CI and as root


def test_every_page_in_chromium(chromium: str, probed_root: Path, tmp_path: Path) -> None:
    with serve([probed_root]) as url, Chromium(chromium, width=1400, height=1800) as browser:
        for path, texts in EXPECT.items():
            state = browser.open(f"{url}/{path}", expect=texts, min_charts=1, timeout=120)
            assert not [t for t in texts if t not in state["text"]]
            assert "Traceback" not in state["text"] and "Error" not in state["text"].split("\n")[0]
            assert all(name in state["sidebar"] for name in SIDEBAR)
            shot = browser.screenshot(tmp_path / f"{path or 'runs'}.png")
            assert shot.stat().st_size > 20_000
            print(f"screenshot: {shot} ({state['drawn']} charts drawn)")
        browser.open(f"{url}/geometry", expect=EXPECT["geometry"], min_charts=1)
        browser.click_tab("All layers")
        state = browser.wait_drawn()
        assert "Anisotropy, every layer" in state["text"]
        print(f"screenshot: {browser.screenshot(tmp_path / 'geometry-all-layers.png')}")


def test_open_page_follows_a_probe_that_is_writing(chromium: str, tmp_path: Path) -> None:
    """With "Live updates" on, a page reloads by itself when the store changes (the probe committed a snapshot)."""
    from dynamics.results import store as dstore
    from tests.app.synthetic import PROBE_HASH, TOKENS_PER_STEP, write_store

    db = write_store(tmp_path, steps=[0, 1, 2], n_metrics=20, projection_tokens=0)
    with serve([tmp_path]) as url, Chromium(chromium, width=1400, height=1200) as browser:
        state = browser.open(f"{url}/geometry", expect=["Anisotropy, layer 2"], min_charts=1)
        assert "6 of 6 snapshots measured" in state["sidebar"] and "4" not in browser.axis_labels()
        with dstore.open(db) as probe:  # what dynamics.probe does for the next snapshot
            probe.upsert_snapshots([("mlm-syn", 4, 4 * TOKENS_PER_STEP, "x", {})])
            probe.write_family(run="mlm-syn", step=4, tokens_seen=4 * TOKENS_PER_STEP, family="geometry",
                               probe_hash=PROBE_HASH, params="x",
                               result=dstore.FamilyResult([(2, "anisotropy", "all", 0.9)], {}, []))
            deadline = time.monotonic() + 40
            while "7 of 7 snapshots measured" not in browser.state()["sidebar"]:
                assert time.monotonic() < deadline, "the page did not pick up the new snapshot"
                time.sleep(0.5)
        browser.wait_drawn()
        assert "4" in browser.axis_labels()  # the new step is on the x axis (symmetric-log ticks 0, 1, 2, 4)
        print(f"screenshot: {browser.screenshot(tmp_path / 'live.png')}")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.integration.conftest import build_tiny_run

    return build_tiny_run(tmp_path_factory.mktemp("live-source") / "run", steps=(0, 1, 2, 4))


def test_page_follows_a_following_probe(chromium: str, tiny_run: Path, tmp_path: Path) -> None:
    """`dynamics.probe RUN --follow` measures snapshots as they are renamed into place (as taco.train writes them),
    and the open page shows each one as its results land, up to the final step."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    run = tmp_path / "runs" / "live-mlm"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("step-0000002", "step-0000004"))
    meta = json.loads((run / "run.json").read_text())
    meta["config"]["max_steps"] = 4
    (run / "run.json").write_text(json.dumps(meta))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    follower = subprocess.Popen([sys.executable, "-m", "dynamics.probe", str(run), "--follow", "--probe-blocks", "16",
                                 "--no-progress", "--no-figures", "--follow-timeout", "120"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def arrive(step: int) -> None:  # a snapshot completed by a rename, as taco.train writes it
        src = tiny_run / "snapshots" / f"step-{step:07d}"
        tmp = run / "snapshots" / f".tmp-step-{step:07d}-x"
        shutil.copytree(src, tmp)
        os.replace(tmp, run / "snapshots" / f"step-{step:07d}")

    def wait_for(text: str, timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = browser.state()
            if text in state["sidebar"]:
                return state
            assert time.monotonic() < deadline, f"the page never showed {text!r}: {state['sidebar'][-400:]}"
            time.sleep(0.5)

    try:
        db = run / "dynamics" / "results.sqlite"
        deadline = time.monotonic() + 120
        while not db.is_file():
            assert time.monotonic() < deadline and follower.poll() is None, follower.stderr.read()[-2000:]
            time.sleep(0.2)
        with serve([tmp_path / "runs"]) as url, Chromium(chromium, width=1400, height=1200) as browser:
            browser.open(f"{url}/geometry", expect=["Anisotropy, layer 2"], min_charts=1, timeout=120)
            wait_for("2 of 2 snapshots measured")
            arrive(2)
            wait_for("3 of 3 snapshots measured")
            assert follower.poll() is None, "the probe must keep following until the final step"
            arrive(4)
            wait_for("4 of 4 snapshots measured")
            browser.wait_drawn()
            assert "4" in browser.axis_labels()
            print(f"screenshot: {browser.screenshot(tmp_path / 'following.png')}")
        assert follower.wait(timeout=120) == 0
    finally:
        if follower.poll() is None:
            follower.kill()


def test_a_server_listening_everywhere_shows_only_its_warning(chromium: str, synthetic_root: Path,
                                                              tmp_path: Path) -> None:
    """A copy of the app without its script-level config (app/.streamlit/, as an older Streamlit ignores it),
    started from another folder with `server.address` set nowhere, so the server listens on every interface:
    every page shows the warning (app/serving.py) and none of the results."""
    import shutil

    from app.serving import exposure

    copy = tmp_path / "copy"
    shutil.copytree(REPO / "app", copy / "app", ignore=shutil.ignore_patterns(".streamlit", "__pycache__"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    warning = str(exposure(None, False)).split(":")[0]  # "Results are not shown"
    with serve([synthetic_root], script=copy / "app" / "main.py", address=None, cwd=elsewhere) as url, \
            Chromium(chromium, width=1400, height=1000) as browser:
        for path in ("", "geometry", "downstream"):
            state = browser.open(f"{url}/{path}", expect=[warning, "listens on every network interface"])
            assert "mlm-syn" not in state["text"] + state["sidebar"] and state["charts"] == 0
            assert "Results store" not in state["sidebar"]
            shot = browser.screenshot(tmp_path / f"exposed-{path or 'runs'}.png")
            print(f"screenshot: {shot}")
