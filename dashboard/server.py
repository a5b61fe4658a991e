"""The dashboard behind its guard: `streamlit run dashboard/server.py [-- --db PATH]` (what
`w2stree dashboard` runs) serves dashboard/app.py with `dashboard.serving.Guard` in front of
every request (loopback Host only, websockets from pages of this machine only, the token)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # started by file name from a plain checkout
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from dashboard.serving import Guard  # noqa: E402

app = st.App(str(Path(__file__).with_name("app.py")), middleware=[Middleware(Guard)])
