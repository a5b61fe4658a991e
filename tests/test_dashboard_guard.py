"""Only pages of this machine holding the token may drive the dashboard (issue 21, item 5): real
HTTP requests and websocket handshakes against `w2stree dashboard` on 127.0.0.1. A foreign Host
(DNS rebinding) gets 403, a websocket from a foreign page is refused, a request without the token
is refused, the printed URL's token opens it (and leaves it as a cookie); `--allow-host` and
`--no-token` do what they say. The browser side is in test_browser_security.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from servers import free_port, stop, wait_healthy

from dashboard.serving import TOKEN_COOKIE, request_problem

REPO = Path(__file__).resolve().parents[1]
TOKEN = "t0ken-for-the-test"

pytestmark = pytest.mark.slow


def test_request_rules() -> None:
    good = {"host": "127.0.0.1:8501", "origin": "http://localhost:8501"}
    cookie = {TOKEN_COOKIE: TOKEN}
    assert request_problem(good, cookie, "/", TOKEN, (), websocket=True) is None
    for host in ("localhost:8501", "[::1]:8501", "127.0.0.5"):
        assert request_problem({"host": host}, cookie, "/", TOKEN, (), websocket=False) is None
    for host in ("evil.example:8501", "evil.example", "127.0.0.1.evil.example:8501", "", "0.0.0.0:8501"):
        assert "Host" in request_problem({"host": host}, cookie, "/", TOKEN, (), websocket=False), host
    assert request_problem({"host": "dash.example"}, cookie, "/", TOKEN, {"dash.example"}, websocket=False) is None
    assert "connect" in request_problem({**good, "origin": "http://evil.example:8501"}, cookie, "/s", TOKEN, (), True)
    assert "connect" in request_problem({**good, "origin": "null"}, cookie, "/s", TOKEN, (), True)
    assert "token" in request_problem(good, {}, "/", TOKEN, (), websocket=False)
    assert "token" in request_problem(good, {TOKEN_COOKIE: "wrong"}, "/", TOKEN, (), websocket=False)
    assert request_problem(good, {}, "/_stcore/health", TOKEN, (), websocket=False) is None
    assert request_problem(good, {}, "/", "", (), websocket=False) is None  # --no-token


def _serve(store, tmp_path, *flags: str):
    port = free_port()
    log_path = tmp_path / f"dashboard-{port}.log"
    log = open(log_path, "wb")  # noqa: SIM115 (closed by the caller's stop)
    proc = subprocess.Popen([sys.executable, "-m", "core", "dashboard", "--db", str(store.path), "--port",
                             str(port), *flags], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO), "W2STREE_DASHBOARD_TOKEN": TOKEN})
    wait_healthy(proc, port, log_path, 240, "dashboard")
    return proc, port, log_path


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _get(port: int, path: str, host: str | None = None, token: str | None = TOKEN) -> tuple[int, dict, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if host:
        req.add_header("Host", host)
    if token:
        req.add_header("Cookie", f"{TOKEN_COOKIE}={token}")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=30) as res:
            return res.status, dict(res.headers), res.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode()


def _websocket(port: int, origin: str, host: str | None = None, token: str | None = TOKEN) -> int:
    """The status of a real websocket handshake on Streamlit's stream endpoint."""
    lines = ["GET /_stcore/stream HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
             f"Origin: {origin}"] + ([f"Cookie: {TOKEN_COOKIE}={token}"] if token else [])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return int(sock.recv(200).split(b" ", 2)[1])


def test_foreign_hosts_pages_and_tokenless_requests_are_refused(store, tmp_path) -> None:
    proc, port, log = _serve(store, tmp_path)
    try:
        printed = log.read_text()
        assert f"http://127.0.0.1:{port}/?token={TOKEN}" in printed
        local = f"127.0.0.1:{port}"
        assert _get(port, "/")[0] == 200
        assert _get(port, "/", host=f"localhost:{port}")[0] == 200
        status, _, body = _get(port, "/", host=f"evil.example:{port}")
        assert status == 403 and "Host" in body
        assert _get(port, "/_stcore/health", host=f"evil.example:{port}", token=None)[0] == 403
        assert _get(port, "/_stcore/health", token=None)[0] == 200
        status, _, body = _get(port, "/trees", token=None)
        assert status == 403 and "token" in body
        assert _get(port, "/", token="guessed")[0] == 403
        status, headers, _ = _get(port, f"/trees?tree=a&token={TOKEN}", token=None)
        assert status == 302 and headers["location"] == "/trees?tree=a"
        assert f"{TOKEN_COOKIE}={TOKEN}" in headers["set-cookie"] and "HttpOnly" in headers["set-cookie"]
        assert _get(port, "/?token=wrong", token=None)[0] == 403
        assert _websocket(port, f"http://{local}") == 101
        assert _websocket(port, f"http://localhost:{port}") == 101
        assert _websocket(port, f"http://evil.example:{port}") == 403
        assert _websocket(port, f"http://evil.example:{port}", host=f"evil.example:{port}") == 403
        assert _websocket(port, f"http://{local}", token=None) == 403
    finally:
        stop(proc)


def test_allow_host_and_no_token(store, tmp_path) -> None:
    proc, port, log = _serve(store, tmp_path, "--no-token", "--allow-host", "dash.example")
    try:
        assert f"http://127.0.0.1:{port}/  (store" in log.read_text()  # no token in the URL
        assert _get(port, "/", token=None)[0] == 200
        assert _get(port, "/", host=f"dash.example:{port}", token=None)[0] == 200
        assert _get(port, "/", host=f"evil.example:{port}", token=None)[0] == 403
        assert _websocket(port, f"http://dash.example:{port}", host=f"dash.example:{port}", token=None) == 101
        assert _websocket(port, f"http://evil.example:{port}", token=None) == 403
    finally:
        stop(proc)
