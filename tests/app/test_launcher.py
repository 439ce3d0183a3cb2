"""`python -m app` (app/__main__.py) and `.streamlit/config.toml`: the app is served on the loopback interface
only, without usage statistics, from any folder; `--host` is the explicit opt-in to serve the network; bad
flags are one `error:` line and exit status 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from app import __main__ as launcher
from tests.app.browser import stop

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # Headless so that no browser tab opens on a developer's desktop; flags given by the launcher win over it.
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "STREAMLIT_SERVER_HEADLESS": "true"}


def _flag(cmd: list[str], name: str) -> list[str]:
    """Every value given to `--name` in a streamlit command line (before the script's own `--` arguments)."""
    head = cmd[:cmd.index("--")] if "--" in cmd else cmd
    return [head[i + 1] for i, a in enumerate(head[:-1]) if a == f"--{name}"]


def test_config_file_is_safe_and_matches_the_launcher() -> None:
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))  # free on every interface, not only on loopback
        return s.getsockname()[1]


def _listening(port: int) -> set[str] | None:
    """Local addresses of the sockets listening on TCP `port` (Linux's /proc/net/tcp{,6}); None elsewhere."""
    tables = [Path("/proc/net/tcp"), Path("/proc/net/tcp6")]
    if not tables[0].is_file():
        return None
    out = set()
    for table in tables:
        if not table.is_file():
            continue
        for line in table.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                if len(address) == 8:
                    out.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:  # four little-endian 32-bit words
                    raw = b"".join(bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, 32, 8))
                    out.add(socket.inet_ntop(socket.AF_INET6, raw))
    return out


def _accepts(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family) as s:
            s.settimeout(1)
            s.connect((host, port))
            return True
    except OSError:
        return False


def _outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it is not a loopback one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def _text(log: object) -> str:
    log.seek(0)  # type: ignore[attr-defined]
    return log.read().decode(errors="replace")  # type: ignore[attr-defined]


def test_serves_on_loopback_only_from_another_folder(tmp_path: Path) -> None:
    port = _free_port()
    caller = tmp_path / "elsewhere"
    caller.mkdir()
    log = (tmp_path / "app.log").open("w+b")
    proc = subprocess.Popen([sys.executable, "-m", "app", "--runs", "no-such-runs", "--port", str(port)],
                            cwd=caller, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        body = ""
        while body != "ok":
            assert proc.poll() is None, f"the app exited ({proc.returncode}): {_text(log)[-2000:]}"
            assert time.monotonic() < deadline, f"no answer on 127.0.0.1:{port}: {_text(log)[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    body = r.read().decode().strip()
            except OSError:
                time.sleep(0.25)
        listening = _listening(port)
        if listening is not None:
            assert listening == {"127.0.0.1"}
        for other in ("127.0.0.2", _outward_address()):  # a wildcard bind would accept on these
            if other and (other != "127.0.0.2" or sys.platform.startswith("linux")):
                assert not _accepts(other, port), f"the app accepts connections on {other}"
        printed = _text(log)
        assert f"http://127.0.0.1:{port}" in printed and "Network URL" not in printed
        assert "usage statistics" not in printed.lower()
    finally:
        stop(proc, log)
