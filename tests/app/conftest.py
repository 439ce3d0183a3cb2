"""Fixtures for the app's tests.

* `probed_root`: two tiny real runs (`tests.integration.conftest.build_tiny_run`: real English text, a WordPiece
  tokenizer, a 2-layer BERT trained between snapshots) measured by `dynamics.probe.run` into `ROOT/dynamics`, plus
  a run directory without results, and downstream scores for both runs written through
  `experiments.results.store_result` (`tests.app.synthetic.write_downstream`). Built once per session (about 45 s
  on two cores).
* `synthetic_root`: run directories and a store written through `dynamics.results.store`'s write API with known values,
  `g` projections and `taco.train`-shaped logs (`tests.app.synthetic`); a second of work.
* `acquisition_root`: two tiny runs with log-spaced snapshots up to step 64 and a run without an MLM head, measured
  (anchors family, so word acquisition) by the real probe (`tests.acquisition_fixture`); about 40 s.
* `make_app`: an `AppTest` of `app/main.py` given `--runs DIR …`, optionally switched to a page. An AppTest serves
  nothing, so when no Streamlit setting names `server.address` (pytest started outside the repository root, where
  `.streamlit/config.toml` is not read) it is set to loopback for the test; otherwise the app would show only its
  warning about listening on every interface (`app.serving`, tested in tests/app/test_serving.py).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
MAIN = REPO / "app" / "main.py"
PAGES = ("overview", "anchors", "context", "geometry", "cka", "attention", "tokens", "acquisition", "downstream")
TITLES = {"overview": "Runs", "anchors": "Anchors", "context": "Context alignment", "geometry": "Geometry",
          "cka": "CKA", "attention": "Attention", "tokens": "Token explorer", "acquisition": "Word acquisition",
          "downstream": "Downstream"}


@pytest.fixture(scope="session")
def probed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/{mlm-tiny, taco-tiny} measured into ROOT/dynamics (with downstream scores); ROOT/orphan-mlm has no
    results. Read-only."""
    from dynamics import probe
    from tests.app.synthetic import write_downstream
    from tests.integration.conftest import build_tiny_run

    root = tmp_path_factory.mktemp("app-probed")
    mlm = build_tiny_run(root / "mlm-tiny", objective="mlm", seed=0)
    taco = build_tiny_run(root / "taco-tiny", objective="taco", seed=1, steps=(0, 2, 3),
                          tokenizer_dir=mlm / "tokenizer")
    probe.run([mlm, taco], out=root / "dynamics", probe_blocks=16, progress=False, figures=False,
              metrics=["anchors", "context", "geometry", "attention", "copying"], copy_blocks=4)
    write_downstream(root / "dynamics")
    orphan = root / "orphan-mlm"
    (orphan / "snapshots" / "step-0000000").mkdir(parents=True)
    for name in ("run.json", "log.jsonl"):
        shutil.copy(mlm / name, orphan / name)
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/{mlm-syn, taco-syn} (full logs) and ROOT/dynamics: 6 snapshots, 3 layers, every known metric. Read-only."""
    from tests.app.synthetic import write_store

    root = tmp_path_factory.mktemp("app-synthetic")
    write_store(root)
    return root


@pytest.fixture(scope="session")
def acquisition_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/{mlm-acq, taco-acq, headless-acq} measured into ROOT/dynamics, word acquisition for the first two.
    Read-only."""
    from tests.acquisition_fixture import build

    root = tmp_path_factory.mktemp("app-acquisition")
    build(root, figures=False)
    return root


@pytest.fixture(scope="session")
def _components() -> dict[str, object]:
    return {}


@pytest.fixture
def make_app(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest,
             _components: dict[str, object]) -> Callable[..., object]:
    """`make_app(DIR, …, page="geometry")`: the app run once with `--runs DIR …` (then switched to `page`)."""
    from streamlit import config
    from streamlit.testing.v1 import AppTest

    if not config.is_manually_set("server.address"):
        saved = config.get_option("server.address"), config.get_where_defined("server.address")
        config.set_option("server.address", "127.0.0.1", where_defined="tests/app/conftest.py")
        request.addfinalizer(lambda: config.set_option("server.address", saved[0], where_defined=saved[1]))

    def make(*dirs: Path | str, page: str | None = None) -> AppTest:
        monkeypatch.setattr(sys, "argv", ["app/main.py", "--runs", *map(str, dirs)])
        at = AppTest.from_file(str(MAIN), default_timeout=90)
        # Every AppTest scans installed packages for components (0.7 s); one scan serves the session.
        if "manager" in _components and hasattr(at, "_bidi_component_manager"):
            at._bidi_component_manager = _components["manager"]
        at.run()
        if getattr(at, "_bidi_component_manager", None) is not None:
            _components.setdefault("manager", at._bidi_component_manager)
        if page and page != "overview":
            at.switch_page(f"views/{page}.py").run()
        return at

    return make
