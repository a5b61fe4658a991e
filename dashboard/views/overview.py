"""Overview: what the store holds (environments, tasks, trajectories, trees, pairs, models, jobs)
and the results table of the last pipeline run; on an empty store, one button fills the
embedded default (a `fill` job, core.fill_job, followed live)."""

from __future__ import annotations

import streamlit as st

from core import fill_job
from core.errors import UserError
from core.jobs import ACTIVE, active_jobs, current
from dashboard import data, result_figures, result_tables, shaping, ui

REFRESH_S = 1.0


def fill_default_button() -> None:
    """Explain the empty store and offer to fill it with the embedded default (a job: the page
    follows it, and a reload finds it again)."""
    ui.empty(
        "This store is empty. w2stree fills it in stages: an environment's tasks, expert "
        "demonstrations, a weak model's exploration (successful and failed trajectories), "
        "trajectory trees merging them, MCTS statistics over each tree, and TreeDPO pairs cut "
        "at the branching points. The embedded default does all of this offline in a few "
        "minutes with the built-in shop environment and tiny local models."
    )
    job = followed_fill()
    if job:
        fill_live(job)
    elif st.button("Fill the embedded default", type="primary", icon=":material/play_arrow:"):
        st.session_state["fill_job"] = fill_job.start_job(data.store())
        st.rerun()


def followed_fill() -> str | None:
    """The fill job this page follows: the one started here, else (a reload, a second tab) a
    running one."""
    if not st.session_state.get("fill_job"):
        running = active_jobs(data.store(), fill_job.JOB_KIND)
        st.session_state["fill_job"] = running[0].job_id if running else None
    return st.session_state["fill_job"]


@st.fragment(run_every=REFRESH_S)
def fill_live(job: str) -> None:
    """The fill job's progress; the whole page reruns once it ends (to show the filled store)."""
    try:
        read = current(job)
    except UserError:  # its folder was deleted
        st.session_state.pop("fill_job", None)
        return
    if read.status in ACTIVE:
        st.progress(read.progress, text=ui.plain(str(read.record.get("message") or "starting"))[:120])
        return
    st.session_state.pop("fill_job", None)
    if read.error:
        ui.error(f"filling the store failed: {read.error.splitlines()[-1][:500]}")
        return
    st.rerun()


def sources_section(path: str, changes: int) -> None:
    """Success rate per source and evaluation per model, never one mixed figure, and the health
    of each env's exploration."""
    by_source = data.by_source(path, changes)
    if by_source.empty:
        return
    st.subheader("Success rate by source")
    st.caption("Evaluation episodes have one row per model: a rate over several models would mean nothing.")
    st.dataframe(shaping.source_table(by_source), hide_index=True, column_config={
        "success rate": st.column_config.ProgressColumn("success rate", min_value=0, max_value=1,
                                                        format="percent"),
        "mean reward": st.column_config.NumberColumn("mean reward", format="%.3f"),
        "mean length": st.column_config.NumberColumn("mean length (steps)", format="%.1f")})
    outcomes = data.tree_outcomes(path, changes)
    envs = by_source[by_source["source"] == "exploration"]["env"].unique().tolist()
    for env in envs:
        h = shaping.exploration_health(by_source, outcomes, env)
        st.subheader(f"Exploration health · {ui.plain(env)}")
        cols = st.columns(4)
        cols[0].metric("Valid-action rate", shaping.percent(h["valid_action_rate"]),
                       help="share of exploration actions the environment accepted (collected episodes)")
        cols[1].metric("Mean episode length", shaping.fmt(h["mean_length"], 1), help="steps per episode")
        cols[2].metric("Explorer success rate", shaping.percent(h["success_rate"]),
                       help=f"over {h['episodes']} exploration episodes")
        cols[3].metric("Trees with both outcomes", f"{h['both_outcomes']} / {h['trees']}",
                       help="trees holding a success and a failure: only these yield pairs")


def main() -> None:
    st.title("Overview")
    path, changes = data.key()
    summary = data.summary(path, changes)
    if summary.empty or (summary[["tasks", "trajectories", "trees"]].sum().sum() == 0) or followed_fill():
        fill_default_button()
        return

    models = data.models(path, changes)
    jobs = data.jobs()
    cols = st.columns(6)
    cols[0].metric("Environments", len(summary))
    cols[1].metric("Tasks", int(summary["tasks"].sum()))
    cols[2].metric("Trajectories", int(summary["trajectories"].sum()), help="collected and imported (not evaluation)")
    cols[3].metric("Trees", int(summary["trees"].sum()))
    cols[4].metric("Pairs", int(summary["pairs"].sum()))
    cols[5].metric("Models", len(models))

    st.subheader("Per environment")
    st.dataframe(summary, hide_index=True)
    sources_section(path, changes)

    results = data.results(path, changes)
    st.subheader("Results of the last pipeline run")
    exp = result_tables.latest_experiment(results)
    if exp is None:
        ui.empty("No results yet: `w2stree pipeline` (or `w2stree up`) trains and evaluates the methods.")
    else:
        st.caption(f"experiment {ui.plain(exp)}")
        st.dataframe(result_figures.method_stat_cells(results[results["experiment_id"] == exp]))

    st.subheader("Jobs")
    if jobs.empty:
        ui.empty("No training jobs yet: start one on the Train page or with `w2stree train`.")
    else:
        show = [c for c in ("job_id", "kind", "status", "step", "max_steps", "created_at", "error")
                if c in jobs.columns]
        st.dataframe(jobs[show], hide_index=True)

    left, right = st.columns(2)
    with left:
        st.subheader("Runs")
        runs = data.runs(path, changes)
        if runs.empty:
            ui.empty("No collect or eval runs recorded.")
        else:
            st.dataframe(runs, hide_index=True)
    with right:
        st.subheader("Models")
        if models.empty:
            ui.empty("No models registered: `w2stree models build` makes the tiny local ones.")
        else:
            st.dataframe(models[["name", "role", "base", "params", "data", "path"]], hide_index=True)


main()
