"""The Trees page's interactive parts: explore from the selected node (a background job, followed
live, re-attached after a reload; its new nodes highlighted when it ends), play from it by hand,
replay how the tree grew and how its MCTS statistics converged, pick leaves to compare, and grow
every tree of the env where a rule says (a `grow` job, core.grow_job).

Exploration runs as a job of kind `explore` (core.explore_job.start_job: own process, progress,
stop); the page reads it through core.jobs only. A play session (core.play) holds an env in this server
process, kept in the browser session's state; it is closed on save, discard, a change of node, or
by core.play's idle reaper.
"""

from __future__ import annotations

import networkx as nx
import streamlit as st

from core.agents.registry import SCRIPTED
from core.console import plural
from core.errors import UserError
from core.explore import JOB_KIND, ExploreSpec
from core.explore_job import start_job
from core.grow_job import start_job as start_grow
from core.jobs import ACTIVE, JobStatus, active_jobs, current, job_log_tail, stop_job
from core.play import PlaySession
from core.settings import ExploreSettings, GrowSettings
from dashboard import data, figures, growth, shaping, train_shaping, ui
from dashboard.layout import layout_tree
from dashboard.settings_form import setting_input

REFRESH_S = 1.0
MAX_COMPARE = 4


def highlight(tree_id: str) -> tuple[int, ...]:
    """The nodes the last finished exploration of this tree added (this session)."""
    return tuple(st.session_state.get("explore_new", {}).get(tree_id, ()))


# -- explore from here ------------------------------------------------------------------------------

def explore_form(g: nx.DiGraph, node: int) -> None:
    """Policy, K, sampling and step budget -> a background exploration job from `node` (the inputs
    of the settings are generated from `core.settings.ExploreSettings`)."""
    env, task = g.graph["env"], g.graph["task_id"]
    path, changes = data.key()
    models = data.models(path, changes)
    policies = list(SCRIPTED) + sorted(models["name"].tolist() if not models.empty else [])
    with st.form("explore_form", border=False):
        c = st.columns([2, 2, 1])
        policy = c[0].selectbox("Policy", policies, key="explore_policy",
                                help="expert re-plans from this node's state; noisy-expert adds random "
                                     "steps at temperature > 0; or a registered model")
        server = c[1].text_input("Model server (optional)", key="explore_server",
                                 placeholder="http://127.0.0.1:8000",
                                 help="run the model on OpenAI-compatible completions servers (vLLM, SGLang, "
                                      "`w2stree serve`): URL[,URL...]; empty runs it in the job's process")
        k = setting_input(c[2], ExploreSettings, "k", "explore_k", max_value=64)
        sampling = st.radio("Sampling", ["paper schedule", "temperature / top-p"], horizontal=True,
                            key="explore_sampling")
        c = st.columns(3)
        temperature = setting_input(c[0], ExploreSettings, "temperature", "explore_t", min_value=0.0, max_value=2.0,
                                    step=0.1)
        top_p = setting_input(c[1], ExploreSettings, "top_p", "explore_p", min_value=0.05, max_value=1.0, step=0.05)
        max_steps = setting_input(c[2], ExploreSettings, "max_steps", "explore_steps", value=0, min_value=0,
                                  max_value=500, label="Max steps after the node (0 = env's limit)")
        go = st.form_submit_button("Explore from here", type="primary", icon=":material/call_split:")
    if not go:
        return
    spec = ExploreSpec(env, task, int(node), policy, k=k, schedule="paper" if sampling == "paper schedule" else None,
                       temperature=temperature, top_p=top_p, max_steps=max_steps or None,
                       server=server.strip() or None)
    try:
        with st.spinner("starting the exploration job"):
            job_id = start_job(spec, data.store())
    except UserError as exc:
        ui.error(exc)
        return
    st.session_state["explore_job"] = job_id
    st.toast(ui.plain(f"started {job_id}"))


def _attach(tree_id: str) -> str | None:
    """The exploration job this page follows: the one started here, else (a reload, a second
    tab) the newest running one of this tree."""
    job = st.session_state.get("explore_job")
    if job:
        return job
    mine = [j for j in active_jobs(data.store(), JOB_KIND) if j.lineage.get("tree_id") == tree_id]
    if not mine:
        return None
    st.session_state["explore_job"] = mine[0].job_id
    return st.session_state["explore_job"]


def follow(job: str, key: str) -> JobStatus | None:
    """A followed job's progress; while it runs its Stop button and log tail (None), once it has
    ended its error or summary and its status. `key` is the session key that holds the job."""
    try:
        read = current(job)
    except UserError:  # its folder was deleted
        st.session_state.pop(key, None)
        return None
    # full width, the buttons below it: beside it in this narrow column "Stop" was cut to "S…"
    st.progress(read.progress, text=ui.plain(f"{job} · " + train_shaping.progress_text(read.as_dict())))
    if read.status in ACTIVE:
        st.button("Stop", icon=":material/stop:", key=f"{key}_stop", on_click=stop_job,
                  args=(job, data.store(), 30.0))
        st.code(job_log_tail(job, 6) or "(starting)", language=None)
        return None
    if read.error:
        ui.error(read.error.splitlines()[-1][:500])
    elif read.record.get("summary"):
        st.success(ui.plain(str(read.record["summary"])), icon=":material/call_split:")
    return read


@st.fragment(run_every=REFRESH_S)
def explore_live(tree_id: str) -> None:
    """The followed exploration job: progress, stop, log; when it ends, its new nodes are
    highlighted and the whole page reruns once to draw the grown tree."""
    job = _attach(tree_id)
    read = follow(job, "explore_job") if job else None
    if read is None:
        return
    if st.session_state.get("explore_seen") != job:  # once per job: redraw the grown tree
        st.session_state["explore_seen"] = job
        st.session_state.setdefault("explore_new", {})[str(read.lineage.get("tree_id"))] = [
            int(n) for n in read.record.get("new_nodes") or []]
        st.rerun()
    st.button("Dismiss", key="explore_dismiss", on_click=lambda: st.session_state.pop("explore_job", None))


# -- play from here -----------------------------------------------------------------------------------

def play_console(g: nx.DiGraph, node: int) -> None:
    """A live env at `node`: observation, valid actions, an action box; save as a branch or discard."""
    env, task, tree_id = g.graph["env"], g.graph["task_id"], g.graph["tree_id"]
    session: PlaySession | None = st.session_state.get("play")
    if session is not None and (session.closed or (session.env_name, session.task_id, session.node)
                                != (env, task, node)):
        session.close()  # another node or tree: its env goes now, not at the reaper's next round
        session = st.session_state["play"] = None
    if session is None:
        st.caption("Continue this branch by hand in a live env. Nothing is stored until you save.")
        if st.button("Start playing here", icon=":material/sports_esports:", key="play_start"):
            try:
                with st.spinner("replaying the path to this node"):
                    st.session_state["play"] = PlaySession(data.store(), env, task, node)
            except UserError as exc:
                ui.error(exc)
                return
            st.rerun()
        return
    st.caption(f"{plural(len(session.played), 'step')} played after node {node} · step "
               f"{len(session.steps)} of at most {session.limit}"
               + (f" · episode over, reward {session.steps[-1].reward:.2f}" if session.done else ""))
    ui.text("Observation", session.observation, code=True)
    if not session.done:
        if session.valid:
            st.selectbox("Valid actions (pick one to fill the box)", [""] + session.valid, key="play_pick",
                         on_change=lambda: st.session_state.update(play_action=st.session_state["play_pick"]))
        with st.form("play_form", clear_on_submit=True, border=False):
            action = st.text_input("Action", key="play_action", placeholder="e.g. click[buy now]")
            thought = st.text_input("Thought (optional)", key="play_thought")
            if st.form_submit_button("Step", icon=":material/play_arrow:"):
                try:
                    session.step(action, thought)
                except UserError as exc:
                    ui.error(exc)
                st.rerun()
    c = st.columns(2)
    if c[0].button("Save as a branch", type="primary", key="play_save", disabled=not session.played):
        try:
            traj_id, new = session.save(data.store())
        except UserError as exc:
            ui.error(exc)
            return
        st.session_state["play"] = None
        st.session_state.setdefault("explore_new", {})[tree_id] = new
        st.toast(ui.plain(f"saved {traj_id}: {len(new)} new nodes"))
        st.rerun()
    if c[1].button("Discard", key="play_discard"):
        session.discard()
        st.session_state["play"] = None
        st.rerun()


# -- growth, MCTS, compare ----------------------------------------------------------------------------

def growth_replay(g: nx.DiGraph, max_depth: int | None, max_children: int | None) -> None:
    """A slider over the tree's trajectories in insertion (collection) order, drawing the tree
    after each."""
    path, changes = data.key()
    ids = tuple(g.nodes[0].get("traj_ids") or ())
    if len(ids) < 2:
        st.caption("The tree holds one trajectory: nothing to replay.")
        return
    trajs = data.episodes(path, changes, ids)
    order = {t: i for i, t in enumerate(ids)}
    trajs = sorted(trajs, key=lambda t: order[t.traj_id])
    n = st.slider("Trajectories inserted", 1, len(trajs), len(trajs), key=f"growth_{g.graph['tree_id']}")
    h = growth.tree_after(g, trajs, n)
    last = trajs[n - 1]
    st.caption(f"after trajectory {n} of {len(trajs)}: {ui.plain(last.source)} · {ui.plain(last.model or '-')} · "
               f"reward {last.reward:.2f} · {plural(h.number_of_nodes(), 'node')}")
    new_path = [v for v in h if last.traj_id in (h.nodes[v].get("traj_ids") or ())]
    view = layout_tree(h, max_depth, max_children, new_path[-1:])
    st.plotly_chart(figures.tree_figure(h, view, "data", highlight=new_path), key="growth_chart",
                    config={"displaylogo": False})


def mcts_replay(g: nx.DiGraph, node: int, max_depth: int | None, max_children: int | None) -> None:
    """The MCTS statistics every N iterations: a slider drawing the tree at that iteration, and
    the visits and Q of the selected node's children over the iterations."""
    total = int(g.graph.get("mcts_iterations") or 0)
    if not total:
        st.caption("No MCTS on this tree yet: run `w2stree mcts`.")
        return
    c = st.columns(2)
    every = c[0].number_input("Every N iterations", 1, total, max(1, total // 20), key="mcts_every")
    at = c[1].slider("Iteration", 0, total, total, int(every), key=f"mcts_at_{g.graph['tree_id']}")
    h = growth.mcts_after(g, at)
    view = layout_tree(h, max_depth, max_children, [int(x) for x in h.graph.get("best_path") or []][-1:])
    st.plotly_chart(figures.tree_figure(h, view, "mcts", node), key="mcts_chart", config={"displaylogo": False})
    if g.out_degree(node) > 1:
        series = growth.mcts_series(g, node, int(every), total)
        st.plotly_chart(figures.line_figure(series.dropna(), "iteration", "q", "child",
                                            title=f"MCTS Q of node {node}'s children", y_title="Q"),
                        key="mcts_series", config={"displaylogo": False})
    else:
        st.caption("Select a branching node to see its children's Q over the iterations.")


def compare_picker(g: nx.DiGraph) -> None:
    """Pick 2-4 leaves; a link opens their trajectories step-aligned on the Compare page."""
    leaves = growth.leaf_options(g)
    picked = st.multiselect("Leaves (2 to 4)", leaves, key=f"compare_leaves_{g.graph['tree_id']}",
                            max_selections=MAX_COMPARE,
                            format_func=lambda n: f"{n} · {shaping.leaf_outcome(g, n) or '-'} · depth "
                                                  f"{g.nodes[n].get('depth', 0)}")
    if len(picked) < 2:
        st.caption("Pick at least two leaves.")
        return
    trajs = growth.leaf_trajectories(g, picked)
    st.page_link("views/compare.py", label="Compare these leaves step by step", icon=":material/view_column:",
                 query_params={"trajs": ",".join(trajs), "nodes": ",".join(map(str, picked))})


def node_tools(g: nx.DiGraph, node: int) -> None:
    """The right column's tools for the selected node."""
    explore_tab, play_tab = st.tabs(["Explore from here", "Play from here"])
    with explore_tab:
        explore_form(g, node)
        explore_live(g.graph["tree_id"])
    with play_tab:
        play_console(g, node)


# -- targeted growth over every tree of the env ------------------------------------------------------------

def grow_form(env: str) -> None:
    """Rule, budget, K, policy and its optional model servers -> a background growth job over the env's
    stored trees (the inputs of the settings generated from `core.settings.GrowSettings`)."""
    path, changes = data.key()
    models = data.models(path, changes)
    policies = sorted(models["name"].tolist() if not models.empty else []) + list(SCRIPTED)
    with st.form("grow_form", border=False):
        c = st.columns([2, 2, 2])
        policy = c[0].selectbox("Explorer", policies, key="grow_policy",
                                help="the weak model keeps the method weak-to-strong; or a scripted policy")
        server = c[1].text_input("Model server (optional)", key="grow_server", placeholder="http://127.0.0.1:8000",
                                 help="run the model on OpenAI-compatible completions servers (vLLM, SGLang, "
                                      "`w2stree serve`): URL[,URL...]; empty runs it in the job's process")
        rule = setting_input(c[2], GrowSettings, "rule", "grow_rule")
        c = st.columns(3)
        budget = setting_input(c[0], GrowSettings, "budget", "grow_budget", value=40, max_value=100_000)
        k = setting_input(c[1], GrowSettings, "k", "grow_k", max_value=64)
        cap = setting_input(c[2], GrowSettings, "max_steps", "grow_cap", max_value=500)
        go = st.form_submit_button("Grow where the rule says", icon=":material/account_tree:")
    if go:
        try:
            with st.spinner("starting the growth job"):
                st.session_state["grow_job"] = start_grow(data.store(), env, policy, GrowSettings(
                    budget=budget, rule=rule, k=k, max_steps=cap), server=server.strip() or None)
        except UserError as exc:
            ui.error(exc)
            return
        st.toast(ui.plain(f"started {st.session_state['grow_job']}"))
    grow_live()


@st.fragment(run_every=REFRESH_S)
def grow_live() -> None:
    """The followed growth job; when it ends the page reruns once to draw the grown trees."""
    job = st.session_state.get("grow_job")
    read = follow(job, "grow_job") if job else None
    if read is not None and st.session_state.get("grow_seen") != job:
        st.session_state["grow_seen"] = job
        st.rerun()


def tree_tools(g: nx.DiGraph, node: int, max_depth: int | None, max_children: int | None) -> None:
    """The left column's expanders: growth replay, MCTS replay, compare leaves, targeted growth."""
    with st.expander("Growth replay (the tree after each trajectory)"):
        growth_replay(g, max_depth, max_children)
    with st.expander("MCTS replay (statistics every N iterations)"):
        mcts_replay(g, node, max_depth, max_children)
    with st.expander("Compare leaves"):
        compare_picker(g)
    with st.expander("Grow every tree where a rule says (targeted growth)"):
        grow_form(g.graph["env"])
