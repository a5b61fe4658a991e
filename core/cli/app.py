"""`w2stree dashboard` (serve the Streamlit dashboard) and `w2stree up` (fill the embedded default
when the store has no results yet, then serve). The dashboard is bound to 127.0.0.1, answers only
requests naming a loopback host (or one given with --allow-host), and asks for the token in the
URL it prints (--no-token: none)."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

import dashboard
from core.cli.context import add_db_argument, add_renamed_flag, open_store
from core.envs.shop import TINY_WORLD
from core.errors import UserError
from core.pipeline import run_pipeline
from core.processes import reap_ended_children
from core.results import render
from core.store import Store
from dashboard.serving import HOSTS_ENV, TOKEN_ENV

DEFAULT_PORT = 8501


def app_path(name: str = "server.py") -> Path:
    """dashboard/server.py (the guarded server; `name` another file) of this installation (it
    ships beside the `core` package)."""
    return Path(dashboard.__file__).resolve().parent / name


def serve_command(port: int, db: Path | None = None) -> list[str]:
    """The `streamlit run` command serving the dashboard of store `db` (default: the default
    store) on 127.0.0.1:`port`, behind its guard (dashboard/server.py)."""
    return [sys.executable, "-m", "streamlit", "run", str(app_path()),
            "--server.address", "127.0.0.1", "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", *(["--", "--db", str(db)] if db else [])]


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1-65535")
    return port


def serve(port: int, store: Store, token: bool = True, hosts: list[str] | None = None) -> int:
    """Become the dashboard server of `store` (until Ctrl-C), asking for a fresh token unless
    `token` is False and answering the loopback names and `hosts`. The process is replaced by
    `streamlit run` rather than waiting on it, so a signal sent to this process reaches the
    server itself and never leaves an orphaned server behind. The ended children of this process
    (`up`'s training jobs) are reaped first: the server would never wait on them, and they would
    stay "defunct" under it until it stops."""
    for path in (app_path(), app_path("app.py")):
        if not path.exists():
            raise UserError(f"{path} is missing; reinstall w2stree (pip install -e .)")
    # a token given in the environment (scripts, tests) is kept; else a fresh one per start
    secret = (os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)) if token else ""
    url = f"http://127.0.0.1:{port}/" + (f"?token={secret}" if secret else "")
    print(f"w2stree dashboard: {url}  (store {store.path}; Ctrl-C stops it)", flush=True)
    cmd = serve_command(port, store.path)
    env = {**os.environ, TOKEN_ENV: secret, HOSTS_ENV: ",".join(hosts or [])}
    reap_ended_children()
    os.execve(cmd[0], cmd, env)
    return 0  # not reached


def cmd_dashboard(args: argparse.Namespace) -> int:
    # Opened here (created and migrated) so that a bad path fails as one line, not in the browser.
    return serve(args.port, open_store(args), token=not args.no_token, hosts=args.allow_host)


def results_text(store: Store) -> str:
    """The results table of the store's latest experiment, as `w2stree results` prints it."""
    return render(store) if not store.results().empty else "no results yet"


def cmd_up(args: argparse.Namespace) -> int:
    store = open_store(args)
    if store.results().empty:
        print(f"w2stree up: {store.path} has no results yet; running the embedded default "
              f"(the tinyshop world, shop?{TINY_WORLD}; {args.scale} scale; its duration is predicted from this "
              "machine once the first training steps run, and the live line counts it down; `w2stree jobs list` "
              "shows its training jobs)",
              flush=True)

        run_pipeline(env="shop", scale=args.scale, store=store)
    else:
        print(f"w2stree up: {store.path} already has results; serving them", flush=True)
    print(results_text(store), flush=True)
    print("the README's tour runs on this store: `w2stree stats`, `w2stree tree --env tinyshop --model sft-weak`, ...",
          flush=True)
    if args.no_serve:
        return 0
    return serve(args.port, store, token=not args.no_token, hosts=args.allow_host)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `dashboard` and `up` verbs."""
    for name, func, text in (
        ("dashboard", cmd_dashboard, "serve the dashboard on http://127.0.0.1:PORT"),
        ("up", cmd_up, "fill the embedded default if the store has no results, then serve the dashboard"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        add_db_argument(p, dest="app_db")
        p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
        p.add_argument("--no-token", action="store_true",
                       help="serve without a token (any page of this machine may then use the dashboard)")
        p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="also answer requests naming this host (a reverse proxy's name; repeatable)")
        if name == "up":
            p.add_argument("--no-serve", action="store_true",
                           help="only fill the store; do not start the dashboard")
            p.add_argument("--scale", choices=("tiny", "quick"), default="tiny",
                           help="pipeline scale: tiny (the experiment, default) or quick (a smoke-test "
                                "size that fills every page in a few minutes)")
            add_renamed_flag(p, "--preset", "--scale")
        p.set_defaults(func=func)
