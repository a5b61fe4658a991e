"""Pairs: the TreeDPO preference pairs, filtered; for one pair the shared prefix as a conversation,
then chosen and rejected side by side with their values and outcomes.

Deep link: `?tree=<tree id>&node=<node id>` shows the pairs cut at that node.
"""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from core.agents.prompt import parse_reply
from core.console import plural
from dashboard import conversations, data, shaping, ui

TABLE_KEY = "pairs_table"
ALL = "(all)"


def on_table_select() -> None:
    """A row picked in the table becomes the pair shown below."""
    rows = ((st.session_state.get(TABLE_KEY) or {}).get("selection") or {}).get("rows") or []
    ids = st.session_state.get("_pairs_ids") or []
    if rows and rows[0] < len(ids):
        st.session_state["pairs_pick"] = ids[rows[0]]


def first_action(msgs: list[dict[str, str]]) -> str:
    """The action of the first assistant turn of a continuation."""
    for m in msgs:
        if m["role"] == "assistant":
            return parse_reply(m["content"])[1] or m["content"]
    return ""


def filters(pairs: pd.DataFrame) -> pd.DataFrame:
    """Env, task, granularity, margin and branch-node filters; returns the matching pairs."""
    if ui.sync_query("pairs", {"tree": ("_pairs_tree", str), "node": ("pairs_node", int)}):
        hit = pairs[pairs["tree_id"] == st.session_state.get("_pairs_tree")]
        if not hit.empty:
            st.session_state["pairs_env"] = hit["env"].iloc[0]
            st.session_state["pairs_task"] = hit["task_id"].iloc[0]
    c = st.columns([1, 2, 1, 1, 1])
    envs = sorted(pairs["env"].unique())
    ui.keep_choice("pairs_env", envs)
    env = c[0].selectbox("Environment", envs, key="pairs_env")
    df = pairs[pairs["env"] == env]
    tasks = [ALL, *sorted(df["task_id"].unique())]
    ui.keep_choice("pairs_task", tasks)
    task = c[1].selectbox("Task (type to search)", tasks, key="pairs_task")
    grans = [ALL, *sorted(df["granularity"].unique())]
    ui.keep_choice("pairs_gran", grans)
    gran = c[2].selectbox("Granularity", grans, key="pairs_gran")
    # Success-based pairs can have a negative margin (the successful side has the lower mean):
    # the slider reaches them, but starts at 0, where the chosen side is the better one.
    lo = min(float(df["margin"].min()), 0.0) if not df.empty else 0.0
    hi = max(float(df["margin"].max()), 1.0) if not df.empty else 1.0
    lo = math.floor(lo * 100) / 100  # round down so the smallest margin stays in range
    margin = c[3].slider("Min margin", lo, hi, 0.0, step=0.01, key="pairs_margin",
                         help="chosen value minus rejected value; below 0 also shows pairs whose "
                              "successful side has the lower mean value")
    if task != ALL:
        df = df[df["task_id"] == task]
    nodes = [ALL, *sorted(int(n) for n in df["node_id"].unique())]
    ui.keep_choice("pairs_node", nodes)
    node = c[4].selectbox("Branch node", nodes, key="pairs_node", disabled=task == ALL)
    if gran != ALL:
        df = df[df["granularity"] == gran]
    df = df[df["margin"] >= margin - 1e-12]
    if task != ALL and node != ALL:
        df = df[df["node_id"] == node]
    return df


def show_pair(row: dict) -> None:
    """One pair: header numbers, link to its node, the prefix, then both continuations."""
    v = conversations.pair_view(row)
    m = st.columns([1, 1, 1, 2])
    m[0].metric("Chosen value", shaping.fmt(v.chosen_value, 3),
                help="success" if v.chosen_success else "no success")
    m[1].metric("Rejected value", shaping.fmt(v.rejected_value, 3),
                help="success" if v.rejected_success else "no success")
    m[2].metric("Margin", shaping.fmt(float(row["margin"]), 3))
    with m[3]:
        where = conversations.pair_scope(int(row["node_id"]), len(v.prompt))
        st.caption(ui.plain(f"{row['granularity']} pair · values from {row['value_kind']} statistics · {where}"))
        if row.get("tree_id") and int(row["node_id"]) >= 0:
            st.page_link("views/trees.py", label=f"Open node {int(row['node_id'])} in Trees",
                         icon=":material/account_tree:",
                         query_params={"tree": row["tree_id"], "node": str(int(row["node_id"]))})
    st.subheader(f"Shared prefix ({plural(len(v.prompt), 'turn')})")
    shown = v.prompt if len(v.prompt) <= 8 else v.prompt[-6:]
    if len(shown) < len(v.prompt):
        with st.expander(f"{plural(len(v.prompt) - len(shown), 'earlier turn')}"):
            ui.conversation(v.prompt[: len(v.prompt) - len(shown)])
    ui.conversation(shown)
    left, right = st.columns(2, gap="medium")
    for col, title, msgs, ok in ((left, "Chosen", v.chosen, v.chosen_success),
                                 (right, "Rejected", v.rejected, v.rejected_success)):
        with col:
            outcome = ":green[success]" if ok else ":red[failure]"
            st.markdown(f"#### {title} · {outcome}")
            ui.conversation(msgs, mark=v.diverge)


def main() -> None:
    st.title("Pairs")
    path, changes = data.key()
    pairs = conversations.tree_pairs_first(data.pairs(path, changes))  # opens on a TreeDPO pair
    if pairs.empty:
        ui.empty("No preference pairs yet. Cut them from the trees with `w2stree pairs` "
                 "(or fill the embedded default from the Overview page).")
        return
    df = filters(pairs)
    st.caption(f"{len(df)} of {plural(len(pairs), 'pair')} match")
    if df.empty:
        ui.empty("No pair matches these filters: lower the margin or pick another task.")
        return
    ids = df["pair_id"].tolist()
    st.session_state["_pairs_ids"] = ids
    table = pd.DataFrame({
        "task": df["task_id"], "node": df["node_id"], "granularity": df["granularity"],
        "chosen": [first_action(conversations.messages(c)) for c in df["chosen"]],
        "rejected": [first_action(conversations.messages(r)) for r in df["rejected"]],
        "chosen value": df["chosen_value"].round(3), "rejected value": df["rejected_value"].round(3),
        "margin": df["margin"].round(3),
    })
    st.dataframe(table, hide_index=True, key=TABLE_KEY, on_select=on_table_select,
                 selection_mode="single-row", height=min(38 + 35 * len(table), 300))
    ui.keep_choice("pairs_pick", ids)
    labels = {r["pair_id"]: conversations.pair_label(r) for r in df.to_dict("records")}
    pick = st.selectbox("Pair (or click a row above)", ids, format_func=labels.__getitem__,
                        key="pairs_pick")
    show_pair(df[df["pair_id"] == pick].iloc[0].to_dict())


main()
