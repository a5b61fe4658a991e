"""Trees: one task's trajectory tree, drawn top-down, with data or MCTS statistics; click a node
(or pick it in the list) for its actions, thoughts, observations, statistics and pairs.

Deep link: `?tree=<tree id>&node=<node id>` (the Pairs page links here this way).
"""

from __future__ import annotations

import hashlib

import streamlit as st

from core.console import plural
from dashboard import conversations, data, explore_panel, layout, shaping, ui

CHART_KEY = "trees_chart"
ICICLE_KEY = "trees_icicle"


def on_select(key: str) -> None:
    """A click on the tree figure or the icicle selects that node in the node picker (the single
    source of truth); a click on a folded group explains it."""
    node = shaping.selected_node(st.session_state.get(key))
    if node is None:
        return
    if node >= 0:
        st.session_state["trees_node"] = node
        st.session_state.pop("trees_folded", None)
    else:
        st.session_state["trees_folded"] = node


def go_to(g) -> None:
    """The node-id box selects that node (when the tree has it)."""
    node = st.session_state.get("trees_goto")
    if node is not None and int(node) in g:
        st.session_state["trees_node"] = int(node)


def pick_tree(trees, roots) -> str:
    """Env, sort order and the searchable task picker; returns the chosen tree id."""
    envs = sorted(trees["env"].unique())
    env_of = dict(zip(trees["tree_id"], trees["env"], strict=True))
    linked = ui.sync_query("trees", {"tree": ("trees_tree", str), "node": ("trees_node", int)})
    if linked and st.session_state.get("trees_tree") in env_of:
        st.session_state["trees_env"] = env_of[st.session_state["trees_tree"]]
        st.session_state["_trees_prev"] = st.session_state["trees_tree"]  # keep the linked node
    c_env, c_sort, c_task = st.columns([1, 1, 4])
    ui.keep_choice("trees_env", envs)
    env = c_env.selectbox("Environment", envs, key="trees_env")
    sort = c_sort.selectbox("Sort tasks by", list(shaping.TASK_SORTS), key="trees_sort",
                            help="both outcomes first: trees holding a success and a failure (they yield "
                                 "the pairs), the bigger first")
    both_only = c_sort.toggle("Both outcomes only", key="trees_both",
                              help="only trees holding a success and a failure")
    table = shaping.task_table(trees[trees["env"] == env], roots, sort, both_only)
    if table.empty:  # no tree of this env holds both outcomes: show them all, saying so
        c_sort.caption("No tree here holds both outcomes.")
        table = shaping.task_table(trees[trees["env"] == env], roots, sort)
    labels = {r["tree_id"]: shaping.task_label(r) for r in table.to_dict("records")}
    ids = list(labels)
    order = (sort, both_only)
    if st.session_state.get("_trees_order", order) != order and not linked:
        st.session_state["trees_tree"] = ids[0]  # a new order opens on its first task
    st.session_state["_trees_order"] = order
    ui.keep_choice("trees_tree", ids)
    st.session_state.setdefault("trees_tree", ids[0])
    # "trees_tree" holds the choice; the widget's key changes with its lines: a browser keeps showing
    # the old line of a kept widget (33 nodes after exploring grew the tree to 36)
    widget = "trees_pick_" + hashlib.sha1("\n".join(labels.values()).encode()).hexdigest()[:10]
    st.session_state[widget] = st.session_state["trees_tree"]
    return c_task.selectbox("Task (type to search)", ids, format_func=labels.__getitem__, key=widget,
                            on_change=lambda: st.session_state.update(trees_tree=st.session_state[widget]))


def node_panel(g, tree_id: str, node: int, path: str, changes: int) -> None:
    """Everything about one node, as text."""
    d = shaping.node_details(g, node)
    st.subheader(f"Node {node}" + (" · root" if node == 0 else ""))
    st.caption(f"depth {d['depth']} · {d['children']} children"
               + (" · on the MCTS best path" if d["on_best_path"] else ""))
    m = st.columns(3)
    m[0].metric("Visits", d["visits"])
    m[1].metric("Mean reward", shaping.fmt(d["value"]))
    m[2].metric("Success / fail", f"{d['successes']} / {d['failures']}")
    m = st.columns(3)
    root_note = shaping.root_mcts_note(g, node)
    m[0].metric("MCTS visits", d["mcts_visits"], help=root_note)
    m[1].metric("MCTS Q", shaping.fmt(d["q"]), help=root_note)
    m[2].metric("Ends here", len(d["terminal_rewards"]),
                help="trajectories that stop at this node; their final rewards: "
                     + ", ".join(f"{r:.2f}" for r in d["terminal_rewards"][:20]))
    if root_note:
        st.caption(root_note)
    if d["true_value"] is not None:
        m = st.columns(3)
        m[0].metric("True value", shaping.fmt(float(d["true_value"])),
                    help="the reward the env's expert reaches from this node's state within the steps left "
                         "(`w2stree oracle`)")
        m[1].metric("Expert steps", "does not finish" if d["true_steps"] is None else int(d["true_steps"]),
                    help="the expert's steps from this node to the end of the episode")
    ui.text("Action", d["action"] or "(root: the task starts here)", code=True)
    for i, t in enumerate(d["thoughts"][:5]):
        ui.text(f"Thought {i + 1} of {len(d['thoughts'])}", t)
    for i, o in enumerate(d["observations"][:3]):
        ui.text(f"Observation {i + 1} of {len(d['observations'])}", o, code=True)
    if d["path"]:
        with st.expander(f"Path from the root ({plural(len(d['path']), 'action')})"):
            st.code("\n".join(f"{i + 1}. {a}" for i, a in enumerate(d["path"])), language=None,
                    wrap_lines=True)
    pairs = data.pairs(path, changes, tree_id=tree_id)
    here = pairs[pairs["node_id"] == node] if not pairs.empty else pairs
    st.markdown(f"**Pairs cut at this node:** {len(here)}")
    if not here.empty:
        rows = []
        for r in here.to_dict("records"):
            v = conversations.pair_view(r)
            rows.append({"granularity": r["granularity"],
                         "chosen": v.chosen[0]["content"] if v.chosen else "",
                         "rejected": v.rejected[0]["content"] if v.rejected else "",
                         "chosen value": round(v.chosen_value, 3),
                         "rejected value": round(v.rejected_value, 3)})
        st.dataframe(rows, hide_index=True)
        st.page_link("views/pairs.py", label="Read these pairs", icon=":material/compare_arrows:",
                     query_params={"tree": tree_id, "node": str(node)})


def main() -> None:
    st.title("Trees")
    path, changes = data.key()
    trees, roots = data.tree_index(path, changes)
    if trees.empty:
        ui.empty("No trajectory trees yet. Collect trajectories and build trees with `w2stree tree` "
                 "(or fill the embedded default from the Overview page).")
        return
    tree_id = pick_tree(trees, roots)
    g = data.tree(path, changes, tree_id)
    head = trees[trees["tree_id"] == tree_id].iloc[0]
    has_mcts = int(head["mcts_iterations"]) > 0
    mcts = (f"MCTS {plural(head['mcts_iterations'], 'iteration')} (c = {float(head['mcts_c']):g})"
            if has_mcts else "no MCTS yet")
    st.caption(f"{plural(g.number_of_nodes(), 'node')} · {plural(head['n_trajectories'], 'trajectory')} · "
               f"{plural(head['n_branching'], 'branching node')} · merge rule {ui.plain(head['merge'])} · {mcts}")
    with st.expander("Instruction", expanded=False):
        st.text(head["instruction"] or "–")

    c_kind, c_depth, c_children = st.columns([2, 1, 1])
    kinds = shaping.stat_kinds(g)
    if st.session_state.get("trees_kind") not in kinds:  # "true" on a tree without oracle values
        st.session_state["trees_kind"] = "data"
    kind = c_kind.segmented_control(
        "Statistics", kinds, default="data", required=True, key="trees_kind",
        format_func=shaping.STAT_KINDS.get,
        help="True value: the reward the env's expert reaches from each node (`w2stree oracle`); offered "
             "where the tree has them",
    )
    if kind == "mcts" and not has_mcts:
        c_kind.caption("No MCTS statistics on this tree yet: run `w2stree mcts`.")
    cap_depth, cap_children = layout.default_caps(g.number_of_nodes())
    max_depth = c_depth.number_input("Depth cap (0 = none)", 0, 500, cap_depth or 0,
                                     key=f"trees_depth_{tree_id}")
    max_children = c_children.number_input("Children cap (0 = none)", 0, 500, cap_children or 0,
                                           key=f"trees_children_{tree_id}")

    if st.session_state.get("_trees_prev") != tree_id:
        if st.session_state.get("_trees_prev") is not None:
            st.session_state["trees_node"] = 0
        st.session_state["_trees_prev"] = tree_id
    ui.keep_choice("trees_node", list(g.nodes), 0)
    node = st.session_state.get("trees_node", 0)

    left, right = st.columns([3, 2], gap="medium")
    with left:
        fig, drawn = data.tree_picture(path, changes, tree_id, kind, max_depth or None,
                                       max_children or None, node, explore_panel.highlight(tree_id))
        if len(drawn) < g.number_of_nodes():
            st.caption(f"Drawing {len(drawn)} of {plural(g.number_of_nodes(), 'node')} (caps); squares fold "
                       "children, hover a node for what its caps hide.")
        if has_mcts and (note := shaping.tie_note(*shaping.best_path_ties(g))):
            st.info(note, icon=":material/balance:")
        st.plotly_chart(fig, key=CHART_KEY, on_select=lambda: on_select(CHART_KEY), selection_mode="points",
                        config={"displaylogo": False, "scrollZoom": True},
                        alt=f"Trajectory tree of {tree_id}")
        if st.session_state.pop("trees_folded", None) is not None:
            st.info("That square folds less-visited children: raise the children cap to draw them.")
        with st.expander("Whole-tree overview (icicle sized by visits; click a cell to select its node)",
                         expanded=g.number_of_nodes() > 300):
            st.plotly_chart(data.icicle_picture(path, changes, tree_id, kind, max_depth or 6),
                            key=ICICLE_KEY, on_select=lambda: on_select(ICICLE_KEY), selection_mode="points",
                            config={"displaylogo": False})
        explore_panel.tree_tools(g, node, max_depth or None, max_children or None)
    with right:
        # Only the drawn nodes (a few hundred under the caps), not every node of a big tree.
        options = shaping.node_options(g, drawn, node)
        if len(options) < g.number_of_nodes():
            st.number_input("Go to node id", 0, max(g.nodes), None, key="trees_goto", on_change=go_to,
                            args=(g,), placeholder=f"any of {plural(g.number_of_nodes(), 'node')}")
        node = st.selectbox(
            "Node (or click one in the tree)", options, key="trees_node",
            format_func=lambda n: f"{n} · depth {g.nodes[n].get('depth', 0)} · "
                                  f"{(g.nodes[n].get('action') or '(root)')[:60]}",
        )
        node_panel(g, tree_id, node, path, changes)
        explore_panel.node_tools(g, node)
    ui.write_query("trees", {"tree": tree_id, "node": node})


main()
