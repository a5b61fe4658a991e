"""What the dashboard server must be: reachable from this machine only, silent towards the
internet, and driven only by pages of this machine that hold its token.
dashboard/.streamlit/config.toml sets the first two however the app is started; a command-line
flag or a STREAMLIT_* variable can still override it, and then the app refuses to serve. `Guard`
(the ASGI middleware dashboard/server.py puts in front of Streamlit) refuses requests naming a
foreign Host, websockets from foreign pages and requests without the token; the app checks the
Host and Origin of its own session too (`request_problem`), so a plain `streamlit run
dashboard/app.py` refuses a DNS-rebinding page as well.

No Streamlit import here: the options come in as a mapping (name -> value).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Collection, Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

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


# -- who may talk to the server ----------------------------------------------------------------
# A web page can reach 127.0.0.1 through DNS rebinding (evil.example resolving to 127.0.0.1): its
# requests then carry `Host: evil.example` (and its websocket that Origin). So, as Jupyter does,
# every request must name a loopback host (or one the user allowed, for a proxy), a websocket
# must come from a page of such a host, and every request but the health check must carry the
# token printed on start (`?token=` once, then a cookie).

#: The session token (`w2stree dashboard` sets it; empty or unset: no token is asked).
TOKEN_ENV = "W2STREE_DASHBOARD_TOKEN"
#: Further host names requests may name (comma-separated), e.g. a reverse proxy's.
HOSTS_ENV = "W2STREE_DASHBOARD_HOSTS"
TOKEN_COOKIE = "w2stree_token"
#: Paths served without the token (they tell nothing about the store).
OPEN_PATHS = frozenset({"/_stcore/health", "/healthz"})


def allowed_hosts(env: Mapping[str, str]) -> frozenset[str]:
    """The host names allowed besides the loopback ones (lower case), from `HOSTS_ENV`."""
    return frozenset(h.strip().lower() for h in env.get(HOSTS_ENV, "").split(",") if h.strip())


def _host_name(netloc: str) -> str:
    """The host of `host[:port]` / `[v6]:port`."""
    netloc = netloc.strip()
    if netloc.startswith("["):
        return netloc[1:netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def host_allowed(host: str | None, extra: Collection[str] = ()) -> bool:
    """Whether a request's Host header names this machine (or an allowed host)."""
    if not host:
        return False
    name = _host_name(host).lower()
    return is_loopback(name) or name in extra


def origin_allowed(origin: str | None, extra: Collection[str] = ()) -> bool:
    """Whether a websocket's Origin is a page of an allowed host (none: not a browser, allowed;
    the Host and token checks still hold)."""
    if origin is None:
        return True
    parsed = urlsplit(origin)
    return parsed.scheme in ("http", "https") and host_allowed(parsed.netloc, extra)


def request_problem(headers: Mapping[str, str], cookies: Mapping[str, str], path: str, token: str,
                    extra: Collection[str], websocket: bool) -> str | None:
    """Why a request (lower-case `headers`, `cookies`) must be refused, or None."""
    if not host_allowed(headers.get("host"), extra):
        return (f"requests must name this machine (Host {headers.get('host')!r} is not a loopback name); "
                f"a proxy's host name can be allowed with `w2stree dashboard --allow-host NAME`")
    if websocket and not origin_allowed(headers.get("origin"), extra):
        return f"a page of {headers.get('origin')!r} may not connect to this dashboard"
    if token and path not in OPEN_PATHS and not hmac.compare_digest(cookies.get(TOKEN_COOKIE, ""), token):
        return "this dashboard needs its token: open the URL that `w2stree dashboard` printed"
    return None


class Guard:
    """ASGI middleware refusing (403) every request `request_problem` refuses; a request with a
    valid `?token=` is redirected to the same URL without it, with the token as a cookie.
    Configured from the environment (`TOKEN_ENV`, `HOSTS_ENV`) when the server starts."""

    def __init__(self, app: Any, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.app, self.token, self.extra = app, env.get(TOKEN_ENV, ""), allowed_hosts(env)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        cookies = _cookies(headers.get("cookie", ""))
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = (query.get("token") or [""])[0]
        path = scope.get("path", "")
        if kind == "http" and self.token and given and hmac.compare_digest(given, self.token) \
                and host_allowed(headers.get("host"), self.extra):
            rest = urlencode([(k, v) for k, vs in query.items() if k != "token" for v in vs])
            return await _respond(send, 302, b"", [
                (b"location", (path + ("?" + rest if rest else "")).encode("latin-1")),
                (b"set-cookie", f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode())])
        problem = request_problem(headers, cookies, path, self.token, self.extra, kind == "websocket")
        if problem is None:
            return await self.app(scope, receive, send)
        if kind == "websocket":  # closing before accepting refuses the handshake (HTTP 403)
            await receive()
            return await send({"type": "websocket.close", "code": 1008})
        return await _respond(send, 403, f"403 Forbidden: {problem}\n".encode(), [])


def _cookies(header: str) -> dict[str, str]:
    jar = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {k: m.value for k, m in jar.items()}


async def _respond(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
