"""Helpers for tests that start a real server: a free port, waiting for a dashboard's health
check, stopping it, and a `w2stree serve` completions server in its own process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def w2stree_serve(model: str, env: dict[str, str], *extra: str) -> Iterator[str]:
    """`w2stree serve --model MODEL` on a free port in its own process (CPU, one call at a time,
    `extra` flags added) with the environment `env`; yields its URL, then stops it."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "core", "serve", "--model", model, "--port", str(port),
                             "--device", "cpu", "--one-call-at-a-time", *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        if "serving " not in line:
            proc.kill()
            pytest.fail(f"w2stree serve did not start:\n{line}{proc.stdout.read()[-3000:]}")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
