"""Train: start TreeDPO / MCTS / SFT jobs and follow them (built on core.train.jobs)."""

from __future__ import annotations

import streamlit as st

from dashboard import ui

st.title("Train")
ui.empty("The training page arrives with the jobs API (core.train.jobs).")
