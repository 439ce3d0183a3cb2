"""`python -m app --runs DIR [DIR …]`: start the results browser (`app/main.py`) from any folder, safe by default.

It runs Streamlit's own `streamlit run` with the settings of the repository's `.streamlit/config.toml` (and its
script-level twin `app/.streamlit/config.toml`) passed as flags (`SAFE_SETTINGS`; flags win over every config file
and need no Streamlit version that reads script-level files): listening on the loopback interface only, no usage
statistics, the viewer's toolbar. `--host ADDRESS` (e.g. 0.0.0.0) is the explicit
opt-in to serve the network. Relative `--runs` folders are taken from the folder the command is run in, and the
app runs there (so its defaults, ./runs and ./experiments/results, are found there too).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.cli import Parser, option
from common.errors import UsageError

PROG = "python -m app"
MAIN = Path(__file__).resolve().parent / "main.py"
LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8501
# The settings of .streamlit/config.toml and app/.streamlit/config.toml, as `streamlit run` flags (the tests
# check the three agree).
SAFE_SETTINGS = {
    "server.address": LOOPBACK,
    "server.showEmailPrompt": "false",
    "browser.gatherUsageStats": "false",
    "client.toolbarMode": "viewer",
}


@dataclass
class LaunchConfig:
    """Where the app listens."""

    port: int = option(DEFAULT_PORT, "TCP port to serve the app on (1-65535)")
    host: str = option(LOOPBACK, "address to listen on. The default serves this machine only; "
                                 "--host 0.0.0.0 (all interfaces) or a LAN address is an explicit opt-in to "
                                 "serve the network: anyone who can reach the port can read every result found")


def build_parser() -> Parser:
    parser = Parser(
        LaunchConfig, prog=PROG, config_file=False,
        description="Browse training runs and their learning dynamics in a browser: starts `streamlit run "
                    "app/main.py` on this machine's loopback interface (http://127.0.0.1:PORT), with usage "
                    "statistics off. The app only reads run directories and results stores.",
        epilog="Examples: python -m app --runs runs    |    python -m app --runs runs/dynamics --port 8600    |    "
               "python -m app --runs runs --host 0.0.0.0   (serve the network). Bad input exits with status 2.")
    parser.add_argument("--runs", nargs="+", metavar="DIR", default=None,
                        help="folders searched for run directories and results stores (dynamics/results.sqlite); "
                             "relative paths are taken from the current folder; a folder that does not exist "
                             "shows an empty state (default: ./runs and ./experiments/results)")
    return parser


def command(argv: Sequence[str] | None = None, cwd: str | Path | None = None) -> list[str]:
    """The `python -m streamlit run app/main.py …` command line for these arguments (`UsageError` for bad input;
    exits 2 with one line for a malformed flag). Relative `--runs` folders become absolute against `cwd`
    (default: the current folder)."""
    cfg, *extra = build_parser().parse(argv)
    if not 1 <= cfg.port <= 65535:
        raise UsageError(f"--port {cfg.port}: not a TCP port; pick one in 1-65535 (default {DEFAULT_PORT})")
    host = cfg.host.strip()
    if not host or any(c.isspace() for c in host):
        raise UsageError(f"--host {cfg.host!r}: give an address to listen on, e.g. {LOOPBACK} or 0.0.0.0")
    settings = {**SAFE_SETTINGS, "server.address": host, "server.port": str(cfg.port)}
    if host != LOOPBACK:
        settings["server.headless"] = "true"  # serving others: no browser tab on the serving machine
    flags = [arg for key, value in settings.items() for arg in (f"--{key}", value)]
    cmd = [sys.executable, "-m", "streamlit", "run", str(MAIN), *flags]
    runs = vars(extra[0]).get("runs") if extra else None
    if runs:
        base = Path.cwd() if cwd is None else Path(cwd)
        cmd += ["--", "--runs", *(os.path.abspath(base / Path(d).expanduser()) for d in runs)]
    return cmd


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cmd = command(argv)
    except UsageError as exc:
        print(f"error: {exc}; see {PROG} --help", file=sys.stderr)
        return UsageError.exit_code
    if os.name == "posix":  # become the server: Ctrl-C and signals reach Streamlit directly
        sys.stdout.flush()
        os.execv(cmd[0], cmd)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
