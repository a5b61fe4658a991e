"""Helpers for tests that start a real dashboard server: a free port, waiting for its health
check, and stopping it."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, port: int, log: Path, timeout: float, what: str) -> None:
    """Wait until the server on `port` answers its health check; fail the test with the log's tail
    if `proc` exits or `timeout` seconds pass first (killing it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what} did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    """Terminate the server, killing it after 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
