"""What the dashboard server must be: reachable from this machine only, and silent towards the
internet. dashboard/.streamlit/config.toml sets both however the app is started; a command-line
flag or a STREAMLIT_* variable can still override it, and then the app refuses to serve.

No Streamlit import here: the options come in as a mapping (name -> value).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

LOOPBACK_NAMES = {"localhost"}


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; False for an empty address (all interfaces),
    0.0.0.0, :: and any other host."""
    if not address:
        return False
    host = address.strip().strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_problem(options: Mapping[str, Any]) -> str | None:
    """Why a server with these Streamlit options must not serve the store (one line), or None.

    `options` holds at least `server.address` and `browser.gatherUsageStats`."""
    address = options.get("server.address")
    if not is_loopback(address):
        where = f"on {address}" if address else "on every network interface"
        return (f"this dashboard server listens {where}, so other machines could read the store; "
                "restart it bound to this machine: `w2stree dashboard` or "
                "`streamlit run dashboard/app.py --server.address 127.0.0.1`")
    if options.get("browser.gatherUsageStats"):
        return ("this dashboard server sends usage statistics to Streamlit; restart it with "
                "`--browser.gatherUsageStats false` (or unset STREAMLIT_BROWSER_GATHER_USAGE_STATS)")
    return None
