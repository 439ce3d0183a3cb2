"""Is a server listening on this machine only? Free ports, the sockets listening on a port (Linux's /proc), whether
another local address accepts connections, and one check of a `streamlit run` command started in a given folder."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from tests.app.browser import stop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))  # free on every interface, not only on loopback
        return s.getsockname()[1]


def listening(port: int) -> set[str] | None:
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


def accepts(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family) as s:
            s.settimeout(1)
            s.connect((host, port))
            return True
    except OSError:
        return False


def outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it is not a loopback one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def log_text(log: object) -> str:
    log.seek(0)  # type: ignore[attr-defined]
    return log.read().decode(errors="replace")  # type: ignore[attr-defined]


def assert_serves_loopback_only(cmd: Sequence[str], cwd: Path, env: dict[str, str], port: int, log_path: Path) -> str:
    """Start `cmd` (a Streamlit server on `port`) in `cwd`, wait until it answers on 127.0.0.1, and check that it
    listens on 127.0.0.1 only (no other local address accepts), prints only the loopback URL and no
    usage-statistics notice. Stops it; returns what it printed."""
    log = log_path.open("w+b")
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        body = ""
        while body != "ok":
            assert proc.poll() is None, f"the app exited ({proc.returncode}): {log_text(log)[-2000:]}"
            assert time.monotonic() < deadline, f"no answer on 127.0.0.1:{port}: {log_text(log)[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    body = r.read().decode().strip()
            except OSError:
                time.sleep(0.25)
        addresses = listening(port)
        if addresses is not None:
            assert addresses == {"127.0.0.1"}, addresses
        for other in ("127.0.0.2", outward_address()):  # a wildcard bind would accept on these
            if other and (other != "127.0.0.2" or sys.platform.startswith("linux")):
                assert not accepts(other, port), f"the app accepts connections on {other}"
        printed = log_text(log)
        assert f"http://127.0.0.1:{port}" in printed and "Network URL" not in printed, printed
        assert "usage statistics" not in printed.lower(), printed
        return printed
    finally:
        stop(proc, log)
