"""`python -m app` (app/__main__.py), `.streamlit/config.toml` and `app/.streamlit/config.toml`: the app is served on
the loopback interface only, without usage statistics, from any folder; `--host` is the explicit opt-in to serve the network; bad
flags are one `error:` line and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import __main__ as launcher
from tests.app.listening import assert_serves_loopback_only, free_port

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # Headless so that no browser tab opens on a developer's desktop; flags given by the launcher win over it.
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "STREAMLIT_SERVER_HEADLESS": "true"}


def _flag(cmd: list[str], name: str) -> list[str]:
    """Every value given to `--name` in a streamlit command line (before the script's own `--` arguments)."""
    head = cmd[:cmd.index("--")] if "--" in cmd else cmd
    return [head[i + 1] for i, a in enumerate(head[:-1]) if a == f"--{name}"]


@pytest.mark.parametrize("folder", [".", "app"])  # the repository root's file and the script-level one
def test_config_file_is_safe_and_matches_the_launcher(folder: str) -> None:
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((REPO / folder / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert config["server"]["address"] == "127.0.0.1"
    assert config["browser"]["gatherUsageStats"] is False
    assert config["client"]["toolbarMode"] == "viewer"
    assert config["server"]["showEmailPrompt"] is False
    flat = {f"{section}.{key}": str(value).lower() if isinstance(value, bool) else str(value)
            for section, values in config.items() for key, value in values.items()}
    assert flat == launcher.SAFE_SETTINGS  # `python -m app` passes exactly these as flags


def test_help_explains_every_flag() -> None:
    out = subprocess.run([sys.executable, "-m", "app", "--help"], cwd=REPO, env=_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    for flag in ("--runs DIR", "--port PORT", "--host HOST", "--help"):
        assert flag in text
    assert "default: 8501" in text and "default: 127.0.0.1" in text
    assert "0.0.0.0" in text and "serve the network" in text and "explicit opt-in" in text
    for action in launcher.build_parser()._actions:
        assert action.help and len(action.help) > 20, action.option_strings


def test_command_is_safe_by_default(tmp_path: Path) -> None:
    cmd = launcher.command(["--runs", "runs", str(tmp_path / "abs")], cwd=tmp_path / "caller")
    assert cmd[:5] == [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "main.py")]
    assert _flag(cmd, "server.address") == ["127.0.0.1"]
    assert _flag(cmd, "server.port") == ["8501"]
    assert _flag(cmd, "browser.gatherUsageStats") == ["false"]
    assert _flag(cmd, "client.toolbarMode") == ["viewer"]
    assert _flag(cmd, "server.headless") == []  # locally, Streamlit opens a tab where there is a display
    assert cmd[cmd.index("--"):] == ["--", "--runs", str(tmp_path / "caller" / "runs"), str(tmp_path / "abs")]
    assert "--" not in launcher.command([])  # no --runs: the app's own defaults, under the folder it runs in


def test_host_is_passed_through() -> None:
    cmd = launcher.command(["--runs", "r", "--host", "0.0.0.0", "--port", "9000"])
    assert _flag(cmd, "server.address") == ["0.0.0.0"]
    assert _flag(cmd, "server.port") == ["9000"]
    assert _flag(cmd, "server.headless") == ["true"]
    assert _flag(cmd, "browser.gatherUsageStats") == ["false"]


@pytest.mark.parametrize("argv", [["--port", "abc"], ["--port", "70000"], ["--port", "0"], ["--host", " "],
                                  ["--runs"], ["--bogus"]])
def test_bad_input_is_one_error_line(argv: list[str], tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "app", *argv], cwd=tmp_path, env=_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr and not out.stdout


def test_serves_on_loopback_only_from_another_folder(tmp_path: Path) -> None:
    port = free_port()
    caller = tmp_path / "elsewhere"
    caller.mkdir()
    assert_serves_loopback_only([sys.executable, "-m", "app", "--runs", "no-such-runs", "--port", str(port)],
                                cwd=caller, env=_env(), port=port, log_path=tmp_path / "app.log")
