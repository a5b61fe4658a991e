"""The w2stree dashboard: `streamlit run dashboard/app.py [-- --db PATH]` or `w2stree dashboard`.

The store comes from `--db` (after `--`), else `W2STREE_DB`, else data/w2stree.duckdb.
The server binds to 127.0.0.1 and gathers no usage statistics (dashboard/.streamlit/config.toml,
read wherever it is started from); a server forced otherwise shows a refusal instead of the store.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run dashboard/app.py` from a plain checkout
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from core.errors import UserError  # noqa: E402
from core.store import StoreBusyError  # noqa: E402
from dashboard import ui  # noqa: E402
from dashboard.serving import TOKEN_ENV, allowed_hosts, exposure_problem, request_problem  # noqa: E402

# Not "pages/": Streamlit would also serve a folder of that name as old-style pages, bypassing
# this script (its navigation and layout) when a fresh server is first opened on a page URL.
PAGES = Path(__file__).parent / "views"


def refuse_if_exposed() -> None:
    """Stop here, before anything of the store is read, on a server reachable from other
    machines or reporting to the internet, and for a session opened by a page of another host
    (DNS rebinding) or without the token (also when started as plain `streamlit run app.py`,
    without dashboard/server.py's guard in front)."""
    problem = exposure_problem({k: st.get_option(k) for k in ("server.address", "browser.gatherUsageStats")})
    headers = {k.lower(): v for k, v in st.context.headers.items()}
    if not problem and headers:  # no headers: an in-process test session, not a browser's
        problem = request_problem(headers, dict(st.context.cookies), "/_stcore/stream", os.environ.get(TOKEN_ENV, ""),
                                  allowed_hosts(os.environ), websocket=True)
    if problem:
        print(f"w2stree dashboard: refusing to serve: {problem}", file=sys.stderr, flush=True)
        ui.error(f"Refusing to serve: {problem}")
        st.stop()


def main() -> None:
    # An emoji favicon is drawn in the browser; a :material/...: one is fetched from Google.
    st.set_page_config(page_title="w2stree", page_icon="🌳", layout="wide")
    refuse_if_exposed()
    nav = st.navigation([
        st.Page(PAGES / "overview.py", title="Overview", icon=":material/home:", default=True),
        st.Page(PAGES / "trees.py", title="Trees", icon=":material/account_tree:", url_path="trees"),
        st.Page(PAGES / "pairs.py", title="Pairs", icon=":material/compare_arrows:", url_path="pairs"),
        st.Page(PAGES / "train.py", title="Train", icon=":material/model_training:", url_path="train"),
        st.Page(PAGES / "compare.py", title="Compare", icon=":material/view_column:", url_path="compare"),
        st.Page(PAGES / "results.py", title="Results", icon=":material/table_chart:", url_path="results"),
    ])
    from dashboard.data import db_path  # plotly, igraph: only after the exposure check passed

    st.sidebar.caption("Store")
    st.sidebar.code(db_path(), language=None, wrap_lines=True)
    try:
        nav.run()
    except (UserError, StoreBusyError) as exc:  # one clear line, not a traceback
        ui.error(exc)


main()
