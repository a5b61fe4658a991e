"""Compare: one task, up to four models' evaluation episodes side by side, step-aligned, with
the first step where they diverge marked and final rewards on top (the paper's Figure 5)."""

from __future__ import annotations

import streamlit as st

from core.console import plural
from core.results import NO_DATA
from core.trajectory import tree_id
from dashboard import conversations, data, result_tables, ui

MAX_MODELS = 4
MAX_STEPS = 60


def pick(index) -> tuple[str, str, list[str]]:
    """Env, task and models to compare."""
    c = st.columns([1, 2, 3])
    # Environments and tasks that the most models were evaluated on come first.
    envs = index.groupby("env")["model"].nunique().sort_values(ascending=False, kind="stable").index.tolist()
    ui.keep_choice("compare_env", envs)
    env = c[0].selectbox("Environment", envs, key="compare_env")
    part = index[index["env"] == env]
    per_task = part.groupby("task_id")["model"].nunique().sort_values(ascending=False, kind="stable")
    tasks = per_task.index.tolist()
    ui.keep_choice("compare_task", tasks)
    task = c[1].selectbox("Task (type to search)", tasks, key="compare_task",
                          format_func=lambda t: f"{t} · {plural(per_task[t], 'model')}")
    # Every model evaluated in this environment is offered; one without an episode of this task
    # says so in its column.
    on_task = set(part[part["task_id"] == task]["model"])
    offered = sorted(part["model"].unique())
    path, changes = data.key()
    default = conversations.default_compare_models(sorted(on_task), data.results(path, changes))
    chosen = [m for m in st.session_state.get("compare_models", default) if m in offered]
    st.session_state["compare_models"] = chosen or default
    models = c[2].multiselect("Models (up to four)", offered, key="compare_models", max_selections=MAX_MODELS,
                              format_func=lambda m: m if m in on_task else f"{m} (not on this task)")
    return env, task, models


def untrained_note() -> None:
    """Methods of the latest experiment that had no training data: they have no episodes."""
    path, changes = data.key()
    results = data.results(path, changes)
    exp = result_tables.latest_experiment(results)
    untrained = result_tables.untrained_methods(results[results["experiment_id"] == exp]) if exp else []
    if untrained:
        why = result_tables.no_data_reasons(untrained)
        st.caption(f"{ui.plain(', '.join(untrained))}: {NO_DATA} in experiment {ui.plain(exp)} (no training examples"
                   f"{ui.plain(': ' + why) if why else ''}, so no model of their own was evaluated).")


def main() -> None:
    st.title("Compare")
    if from_tree():
        return
    path, changes = data.key()
    index = data.eval_index(path, changes)
    if index.empty:
        ui.empty("No evaluation episodes yet. `w2stree eval` (or the pipeline) stores each model's "
                 "test episodes; they appear here side by side.")
        return
    env, task, chosen = pick(index)
    untrained_note()
    part = index[(index["env"] == env) & (index["task_id"] == task)]
    # The latest episode of each model on this task.
    latest = part.sort_values("created_at").groupby("model").tail(1).set_index("model")
    models = [m for m in chosen if m in latest.index]
    missing = [m for m in chosen if m not in latest.index]
    if missing:
        st.caption(f"No episode of {ui.plain(', '.join(missing))} on this task.")
    if not models:
        ui.empty("Pick at least one model evaluated on this task.")
        return
    episodes = data.episodes(path, changes, tuple(latest.loc[m, "traj_id"] for m in models))
    by_id = {e.traj_id: e for e in episodes}
    show(models, [by_id[latest.loc[m, "traj_id"]] for m in models])


def show(labels: list[str], episodes: list) -> None:
    """Episodes side by side, step-aligned, the first divergence marked, final rewards on top."""
    st.text(episodes[0].instruction)
    cols = st.columns(len(labels))
    for col, label, ep in zip(cols, labels, episodes, strict=True):
        col.text(label)  # a name from the store: plain text, not a markdown label
        col.metric("final reward", f"{ep.reward:.2f}", delta="success" if ep.success else "failure",
                   delta_color="normal" if ep.success else "inverse", delta_arrow="off",
                   help=f"after {plural(len(ep.steps), 'step')}")
    diverge = conversations.first_divergence([e.actions for e in episodes])
    if len(labels) > 1:
        st.caption("The episodes take the same actions throughout." if diverge is None
                   else f"The episodes first diverge at step {diverge + 1} (marked ▶ below).")
    rows = conversations.compare_rows(episodes)
    if len(rows) > MAX_STEPS:
        st.caption(f"Showing the first {MAX_STEPS} of {plural(len(rows), 'step')}.")
    for i, row in enumerate(rows[:MAX_STEPS]):
        if i == diverge:
            st.markdown(f":orange[**▶ step {i + 1}: first divergence**]")
        cols = st.columns(len(labels))
        for col, step in zip(cols, row, strict=True):
            with col.container(border=True):
                if step is None:
                    st.caption(f"step {i + 1}: episode over")
                    continue
                st.caption(f"step {i + 1} · reward {step['reward']}")
                if step["thought"]:
                    st.text(step["thought"])
                st.code(step["action"] or " ", language=None, wrap_lines=True)
                with st.expander("observation", expanded=i == diverge):
                    st.text(step["observation"])


def from_tree() -> bool:
    """`?trajs=ID,ID&nodes=N,N` (the Trees page's "compare leaves"): those trajectories
    side by side. Returns whether the link was there."""
    ids = [t for t in (st.query_params.get("trajs") or "").split(",") if t][:MAX_MODELS]
    if not ids:
        return False
    nodes = (st.query_params.get("nodes") or "").split(",")
    path, changes = data.key()
    by_id = {e.traj_id: e for e in data.episodes(path, changes, tuple(ids))}
    found = [t for t in ids if t in by_id]
    if not found:
        ui.empty("None of the linked trajectories is in the store any more.")
        return True
    labels = [f"leaf {nodes[i]} · {by_id[t].source} · {by_id[t].model or '-'}" if i < len(nodes) and nodes[i]
              else f"{by_id[t].source} · {by_id[t].model or '-'}" for i, t in enumerate(ids) if t in by_id]
    c = st.columns([4, 1])
    c[0].caption(f"Leaves of tree {tree_id(by_id[found[0]].env, by_id[found[0]].task_id)}, from the Trees page.")
    if c[1].button("Compare models instead", key="compare_models_back"):
        st.query_params.clear()
        st.rerun()
    show(labels, [by_id[t] for t in found])
    return True

main()
