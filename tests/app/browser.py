"""Serve the app with `streamlit run` and look at it with headless Chromium over the DevTools protocol.

Streamlit draws the page client-side from a websocket, so a one-shot `chromium --dump-dom` races the script; instead
Chromium runs with a debugging port and we poll the live DOM until the page is drawn (title present, charts
rendered, no script running), then take a screenshot. Usage for a look by hand:

    python -m tests.app.browser OUT_DIR --runs DIR [DIR …]     # one PNG per page in OUT_DIR
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
INSTALL = Path(__file__).with_name("install_chromium.sh")
INSTALL_COMMAND = "sudo apt-get install -y chromium"
PAGES = {"": "Runs", "anchors": "Anchors", "context": "Context alignment", "geometry": "Geometry", "cka": "CKA",
         "tokens": "Token explorer", "downstream": "Downstream"}

# The page is drawn when the script finished (no status widget saying it runs), the title is there, and every
# visible chart container holds a rendered canvas or svg.
_STATE_JS = """(() => {
  const charts = [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')]
    .filter(c => c.getClientRects().length > 0);  // charts in hidden tabs are drawn when shown
  const drawn = charts.filter(c => c.querySelector('canvas, svg.marks')).length;
  const status = document.querySelector('[data-testid="stStatusWidget"]');
  const running = !!status && /running/i.test(status.innerText || status.getAttribute('aria-label') || '');
  const main = document.querySelector('[data-testid="stMain"]') || document.body;
  return JSON.stringify({charts: charts.length, drawn: drawn, running: running,
                         skeleton: document.querySelectorAll('[data-testid="stSkeleton"]').length,
                         text: main.innerText, sidebar: (document.querySelector('[data-testid="stSidebar"]') || {}).innerText || ''});
})()"""


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def on_ci() -> bool:
    """True when the environment says CI (`CI` set to anything but empty, 0, false or no), as install_chromium.sh
    reads it."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def ensure_chromium() -> str | None:
    """Path of Debian's Chromium, installing it (as root) when missing; None when it cannot be had."""
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    if _is_root() and shutil.which("apt-get"):
        subprocess.run(["bash", str(INSTALL)], check=False, timeout=900)
    return CHROMIUM if Path(CHROMIUM).is_file() else None


def chromium_or_skip() -> str:
    """Chromium's path for a browser test. Without it: a skip naming the install command on a developer's machine
    (not root, not CI), a failure on CI or as root (where it is installed for the tests), so that CI never passes
    with its browser tests skipped."""
    import pytest

    binary = ensure_chromium()
    if binary is not None:
        return binary
    if on_ci() or _is_root():
        who = "CI is set" if on_ci() else "this is root"
        pytest.fail(f"no {CHROMIUM} and {who}, so the browser tests must run; install it: bash {INSTALL.relative_to(REPO)}"
                    f" (as root) or {INSTALL_COMMAND}", pytrace=False)
    pytest.skip(f"no {CHROMIUM} (not root, so it was not installed); to run the browser tests: {INSTALL_COMMAND}")


@contextlib.contextmanager
def serve(dirs: Sequence[str | Path], port: int | None = None, timeout: float = 60, *,
          script: Path = REPO / "app" / "main.py", address: str | None = "127.0.0.1",
          cwd: Path = REPO) -> Iterator[str]:
    """`streamlit run SCRIPT -- --runs DIRS` on a free port, started in `cwd`; yields its URL (127.0.0.1), stops it
    after. `address` is passed as `--server.address`; None passes none and takes away every STREAMLIT_* variable,
    so the address is whatever the config files say (set nowhere: every interface)."""
    port = port or free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    flags = ["--server.headless", "true", "--server.port", str(port), "--server.fileWatcherType", "none"]
    if address is not None:
        flags += ["--server.address", address]
    else:
        env = {k: v for k, v in env.items() if not k.startswith("STREAMLIT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "streamlit", "run", str(script), *flags, "--", "--runs", *map(str, dirs)]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"streamlit did not start: {log.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        stop(proc, log)


def stop(proc: subprocess.Popen, log: Any) -> None:
    """Stop a server process (terminate, then kill after 10 s) and close its log file."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


class Chromium:
    """Headless Chromium driven through one DevTools websocket (navigate, evaluate, screenshot)."""

    def __init__(self, binary: str = CHROMIUM, width: int = 1400, height: int = 2000) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={self.profile}", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
             f"--window-size={width},{height}", "--hide-scrollbars", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.size = (width, height)
        self._ids = itertools.count(1)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
            target = next(t for t in json.load(r) if t["type"] == "page")
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(
            connect(target["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=10))

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are skipped)."""
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def state(self) -> dict[str, Any]:
        """Charts (found, drawn), whether the script runs, and the visible text of the main area and sidebar."""
        out = self.call("Runtime.evaluate", expression=_STATE_JS, returnByValue=True)
        return json.loads(out["result"]["value"])

    def open(self, url: str, expect: Sequence[str] = (), min_charts: int = 0, timeout: float = 90) -> dict[str, Any]:
        """Load `url` and wait until the page is drawn: `expect` texts shown, at least `min_charts` charts, all
        drawn, nothing running, and the same for two polls in a row. Returns the final `state()`."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        last, stable = None, 0
        while time.monotonic() < deadline:
            time.sleep(0.5)
            s = self.state()
            ready = (all(t in s["text"] for t in expect) and s["charts"] >= min_charts and s["drawn"] == s["charts"]
                     and not s["running"] and not s["skeleton"])
            key = (s["charts"], s["drawn"], len(s["text"]))
            stable = stable + 1 if ready and key == last else 0
            last = key
            if stable >= 2:
                return s
        final = self.state()
        counts = {k: v for k, v in final.items() if k not in ("text", "sidebar")}
        raise TimeoutError(f"{url} not drawn in {timeout:.0f} s; last state {counts}, text {final['text'][:500]!r}")

    def evaluate(self, expression: str) -> Any:
        """The JSON-able value of a JavaScript expression in the page."""
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def axis_labels(self, chart: int = 0) -> list[str]:
        """Tick labels of the axes of the `chart`-th visible chart (Vega draws them as SVG text)."""
        return self.evaluate(
            "Array.from([...document.querySelectorAll('[data-testid=\"stVegaLiteChart\"]')].filter(c => c.getClientRects().length)"
            f"[{chart}]?.querySelectorAll('.role-axis-label text') ?? [], t => t.textContent)")

    def click_tab(self, label: str) -> None:
        """Click the tab whose label is `label` (charts in a tab are drawn when it is shown)."""
        js = ("(() => { const t = [...document.querySelectorAll('[role=\"tab\"]')]"
              f".find(b => b.innerText.trim() === {json.dumps(label)}); if (t) t.click(); return !!t; }})()")
        if not self.call("Runtime.evaluate", expression=js, returnByValue=True)["result"]["value"]:
            raise LookupError(f"no tab {label!r}")

    def wait_drawn(self, timeout: float = 30) -> dict[str, Any]:
        """Wait until every visible chart is drawn (after a click)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.5)
            s = self.state()
            if s["drawn"] == s["charts"] and not s["running"]:
                return s
        raise TimeoutError("charts not drawn")

    def screenshot(self, path: Path) -> Path:
        """PNG of the window."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: Sequence[str]) -> int:
    """Screenshot every page for a look by hand: `python -m tests.app.browser OUT_DIR --runs DIR …`."""
    out = Path(argv[0])
    dirs = list(argv[argv.index("--runs") + 1:]) if "--runs" in argv else []
    out.mkdir(parents=True, exist_ok=True)
    binary = ensure_chromium()
    if binary is None:
        print("no chromium", file=sys.stderr)
        return 1
    with serve(dirs) as url, Chromium(binary) as browser:
        for path, title in PAGES.items():
            s = browser.open(f"{url}/{path}", expect=[title])
            shot = browser.screenshot(out / f"{path or 'runs'}.png")
            print(f"{shot}  charts={s['charts']}")
            if path in ("anchors", "context", "geometry"):
                for tab in ("All layers", "Difference", "Frequency bins", "By distance"):
                    try:
                        browser.click_tab(tab)
                    except LookupError:
                        continue
                    browser.wait_drawn()
                    print(browser.screenshot(out / f"{path}-{tab.replace(' ', '-').lower()}.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
