"""Where the app is served, checked from inside the app: results are shown on this machine only unless the
network was asked for.

`streamlit run app/main.py` is safe from any folder in three layers:

1. `app/.streamlit/config.toml`, Streamlit's script-level config file (read from the folder of the script it
   runs, wherever it starts; the repository root's `.streamlit/config.toml` is the same file for Streamlit
   versions that only read the folder they start in): loopback address, no usage statistics.
2. `python -m app` passes the same settings as flags (`app.__main__.SAFE_SETTINGS`).
3. This module, for a server started without either (an older Streamlit from another folder): when Streamlit's
   `server.address` was set nowhere, the server listens on every interface, so `exposure()` returns a message
   and `app/main.py` shows it on every page instead of any result. Setting `server.address` anywhere (the
   `--server.address` flag, `STREAMLIT_SERVER_ADDRESS`, a config file, `python -m app --host`) is an explicit
   choice and is respected, loopback or not.

`quiet_usage_stats()` turns Streamlit's usage statistics off from inside the script when no setting names them
(from the script's first run on; the config files turn them off before the server starts).
"""

from __future__ import annotations

import ipaddress

from streamlit import config

ADDRESS = "server.address"
USAGE_STATS = "browser.gatherUsageStats"
WHERE = "app/serving.py"  # how this module's settings are marked in Streamlit's config (`get_where_defined`)


def is_loopback(address: str) -> bool:
    """True for an address only this machine can reach: 127.0.0.0/8, ::1, localhost, or a Unix socket."""
    address = address.strip()
    if address.lower() == "localhost" or address.startswith("unix://"):
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or a LAN address


def exposure(address: str | None, manually_set: bool, port: int | str = 8501) -> str | None:
    """Why results must not be shown by a server with this `server.address`, or None when they may be:
    the address is loopback, or somebody chose it (`manually_set`: a flag, an environment variable, a config
    file). An address set nowhere (None) makes Streamlit listen on every network interface."""
    if address is not None and is_loopback(address):
        return None
    if manually_set:
        return None
    return (f"Results are not shown: this server listens on every network interface, so anyone who can reach "
            f"port {port} could read them. Streamlit's `server.address` is set nowhere (the repository's "
            "`.streamlit/config.toml` was not read). Stop it (Ctrl-C) and start it again with "
            "`python -m app --runs DIR` (this machine only, from any folder), or `streamlit run app/main.py "
            "--server.address 127.0.0.1`. To serve the network on purpose: `python -m app --host 0.0.0.0`.")


def check() -> str | None:
    """`exposure()` of the running server's settings."""
    return exposure(config.get_option(ADDRESS), config.is_manually_set(ADDRESS), config.get_option("server.port"))


def quiet_usage_stats() -> None:
    """Usage statistics off, unless a setting (flag, environment variable, config file) names them."""
    if not config.is_manually_set(USAGE_STATS):
        config.set_option(USAGE_STATS, False, where_defined=WHERE)
