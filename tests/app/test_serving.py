"""`streamlit run app/main.py` is safe from any folder: started from another folder it listens on loopback only and
announces no usage statistics (the script-level `app/.streamlit/config.toml`), and a server whose address is set
nowhere, which listens on every interface, shows a warning on every page and no results (`app.serving`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit import config
from streamlit.config_option import ConfigOption

from app import serving
from tests.app.conftest import MAIN
from tests.app.helpers import charts, texts
from tests.app.listening import assert_serves_loopback_only, free_port

REPO = Path(__file__).resolve().parents[2]
WARNING = "Results are not shown: this server listens on every network interface"


@pytest.mark.parametrize(("address", "manually_set", "safe"), [
    (None, False, False),  # set nowhere: Streamlit listens on every interface
    ("127.0.0.1", False, True), ("127.0.0.1", True, True), ("127.1.2.3", True, True), ("::1", True, True),
    ("[::1]", True, True), ("localhost", True, True), ("unix:///tmp/app.sock", True, True),
    ("0.0.0.0", True, True), ("::", True, True), ("192.168.1.20", True, True), ("", True, True),  # chosen
    ("0.0.0.0", False, False), ("192.168.1.20", False, False),
])
def test_exposure(address: str | None, manually_set: bool, safe: bool) -> None:
    message = serving.exposure(address, manually_set, port=8765)
    assert (message is None) == safe
    if not safe:
        assert message is not None and message.startswith(WARNING) and "port 8765" in message
        assert "python -m app --runs DIR" in message and "--server.address 127.0.0.1" in message
        assert "\n" not in message


@pytest.fixture
def streamlit_option() -> Iterator[object]:
    """`set(key, value, where)` a Streamlit config option for one test (restored after)."""
    saved: dict[str, tuple[object, str]] = {}

    def set_(key: str, value: object, where: str = ConfigOption.DEFAULT_DEFINITION) -> None:
        saved.setdefault(key, (config.get_option(key), config.get_where_defined(key)))
        config.set_option(key, value, where_defined=where)

    yield set_
    for key, (value, where) in saved.items():
        config.set_option(key, value, where_defined=where)


def _app(monkeypatch: pytest.MonkeyPatch, *dirs: Path) -> object:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["app/main.py", "--runs", *map(str, dirs)])
    at = AppTest.from_file(str(MAIN), default_timeout=90)
    at.run()
    return at


@pytest.mark.parametrize("page", [None, "views/geometry.py", "views/downstream.py"])
def test_address_set_nowhere_shows_a_warning_and_no_results(monkeypatch: pytest.MonkeyPatch, streamlit_option,
                                                            synthetic_root: Path, page: str | None) -> None:
    streamlit_option("server.address", None)  # as `streamlit run` from another folder on an older Streamlit
    at = _app(monkeypatch, synthetic_root)
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value.startswith(WARNING) for e in at.error] == [True]
    shown = texts(at)
    assert "mlm-syn" not in shown and "taco-syn" not in shown and "Results store" not in shown
    assert not charts(at) and not at.dataframe and not at.selectbox and not at.multiselect


@pytest.mark.parametrize(("address", "where"), [("0.0.0.0", "command-line"), ("127.0.0.1", "environment variable")])
def test_a_chosen_address_shows_results(monkeypatch: pytest.MonkeyPatch, streamlit_option, synthetic_root: Path,
                                        address: str, where: str) -> None:
    streamlit_option("server.address", address, where)
    at = _app(monkeypatch, synthetic_root)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "mlm-syn" in texts(at) or any("mlm-syn" in str(df.value) for df in at.dataframe)


def test_usage_stats_off_unless_a_setting_names_them(monkeypatch: pytest.MonkeyPatch, streamlit_option,
                                                     synthetic_root: Path) -> None:
    streamlit_option("server.address", "127.0.0.1", "command-line")
    streamlit_option(serving.USAGE_STATS, True)  # Streamlit's default, set nowhere
    _app(monkeypatch, synthetic_root)
    assert config.get_option(serving.USAGE_STATS) is False
    streamlit_option(serving.USAGE_STATS, True, "environment variable")  # the user's own choice is kept
    _app(monkeypatch, synthetic_root)
    assert config.get_option(serving.USAGE_STATS) is True


def test_script_level_config_matches_the_repository_one() -> None:
    assert (REPO / "app" / ".streamlit" / "config.toml").read_text().split("\n[server]", 1)[1] == \
        (REPO / ".streamlit" / "config.toml").read_text().split("\n[server]", 1)[1]


def test_streamlit_run_from_another_folder_serves_loopback_only(tmp_path: Path) -> None:
    """`streamlit run /path/to/app/main.py` started in a folder without `.streamlit/`, with no STREAMLIT_*
    variables and a home without a global config: loopback only, no usage-statistics notice."""
    from streamlit import file_util

    if not hasattr(file_util, "get_main_script_streamlit_file_path"):  # the page warning covers it (tests above)
        pytest.skip("this Streamlit reads no script-level config file (app/.streamlit/config.toml)")
    port = free_port()
    caller, home = tmp_path / "elsewhere", tmp_path / "home"
    caller.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env.update(HOME=str(home), HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    cmd = [sys.executable, "-m", "streamlit", "run", str(MAIN), "--server.port", str(port), "--server.headless",
           "true", "--", "--runs", "no-such-runs"]
    assert_serves_loopback_only(cmd, cwd=caller, env=env, port=port, log_path=tmp_path / "app.log")
