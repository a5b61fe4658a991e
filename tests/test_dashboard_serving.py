"""The dashboard serves this machine only and reports nothing to the internet: the rule
(dashboard.serving), a real `streamlit run dashboard/app.py` started from another folder (which
listening address it binds), and the refusal of a server forced onto all interfaces."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import free_port, stop, wait_healthy
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from dashboard.serving import exposure_problem, is_loopback

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "dashboard" / "app.py"


@pytest.mark.parametrize(("address", "ok"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("", False), (None, False), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
    ("example.com", False),
])
def test_loopback_addresses(address, ok):
    assert is_loopback(address) is ok


def test_exposure_problem_names_the_cause_and_the_fix():
    assert exposure_problem({"server.address": "127.0.0.1", "browser.gatherUsageStats": False}) is None
    everywhere = exposure_problem({"server.address": "", "browser.gatherUsageStats": False})
    assert "every network interface" in everywhere and "--server.address 127.0.0.1" in everywhere
    assert "0.0.0.0" in exposure_problem({"server.address": "0.0.0.0", "browser.gatherUsageStats": False})
    stats = exposure_problem({"server.address": "localhost", "browser.gatherUsageStats": True})
    assert "usage statistics" in stats and "gatherUsageStats false" in stats


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of the sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.add(addr)
    return found


LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_streamlit_run_from_another_folder_listens_on_localhost_only(tmp_path, store):
    """The plain command of the probe, with no flags about the address, from a folder without
    a .streamlit/ of its own: the server binds 127.0.0.1 only."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    log = open(tmp_path / "streamlit.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port)],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=dict(env, PYTHONPATH=str(REPO)))
    try:
        wait_healthy(proc, port, tmp_path / "streamlit.log", 90, "streamlit")
        addresses = listening_addresses(port)
        assert addresses, "no listening socket found for the server"
        assert addresses <= LOOPBACK_HEX, f"listening on {addresses}, not only on loopback"
    finally:
        stop(proc)
        log.close()
    assert "Network URL" not in (tmp_path / "streamlit.log").read_text()  # no address beyond this machine


@pytest.fixture
def forced_options():
    """Options as a flag or STREAMLIT_* variable could force them; restored afterwards."""
    saved = {k: st_config.get_option(k) for k in ("server.address", "browser.gatherUsageStats")}
    yield st_config.set_option
    for k, v in saved.items():
        st_config.set_option(k, v)


@pytest.mark.parametrize(("option", "value"), [("server.address", "0.0.0.0"),
                                                ("browser.gatherUsageStats", True)])
def test_a_server_forced_open_refuses_to_show_the_store(store, forced_options, option, value):
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.error and at.title[0].value == "Overview"  # the shipped options serve
    forced_options(option, value)
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert at.error and at.error[0].value.startswith("Refusing to serve")
    assert not at.title and not at.info  # no page ran, nothing of the store is shown
