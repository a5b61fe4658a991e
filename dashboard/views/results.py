"""Results: the method table (average reward and success rate per method and env), the score per
time step of evaluation episodes (the paper's Figure 3) and performance versus the number of
trajectories per task (Figure 4)."""

from __future__ import annotations

import streamlit as st

from dashboard import data, figures, shaping, ui


def method_section(results) -> None:
    st.subheader("Methods")
    experiments = results.sort_values("created_at")["experiment_id"].unique().tolist()[::-1]
    exp = st.selectbox("Experiment (latest first)", experiments, key="results_exp")
    part = results[results["experiment_id"] == exp]
    st.dataframe(shaping.method_cells(shaping.method_table(part)))
    untrained = shaping.untrained_methods(part)
    if untrained:
        st.caption(f"{ui.plain(', '.join(untrained))}: {shaping.NO_DATA}: no training examples in this experiment "
                   "(e.g. 0 pairs), so there is no model of their own to evaluate.")
    with st.expander("All rows of this experiment"):
        st.dataframe(part, hide_index=True)


def score_section(path: str, changes: int, index) -> None:
    st.subheader("Score per time step")
    envs = sorted(index["env"].unique()) if not index.empty else []
    if not envs:
        ui.empty("No evaluation episodes yet: run `w2stree eval` to see scores per step.")
        return
    default = envs.index("sciworld") if "sciworld" in envs else 0
    env = st.selectbox("Environment", envs, index=default, key="results_env")
    curves = shaping.score_curves(data.eval_scores(path, changes, env))
    if curves.empty:
        ui.empty(f"The {env} evaluation episodes carry no per-step scores (ScienceWorld's 0-100 "
                 "progress does; run `w2stree eval --env sciworld`).")
        return
    st.plotly_chart(figures.line_figure(curves, "step", "score", "model", y_title="mean score",
                                        x_title="time step"), key="results_scores")


def trajectories_section(results) -> None:
    st.subheader("Performance versus trajectories per task")
    curves = shaping.trajectory_curves(results)
    if curves.empty:
        ui.empty("No method was run at two or more numbers of trajectories per task yet "
                 "(the pipeline's trajectories-per-task sweep fills this).")
        return
    for env, part in curves.groupby("env"):
        st.plotly_chart(figures.line_figure(part, "trajs_per_task", "avg_reward", "method",
                                            title=str(env), y_title="average reward",
                                            x_title="trajectories per task"),
                        key=f"results_trajs_{env}")


def main() -> None:
    st.title("Results")
    path, changes = data.key()
    results = data.results(path, changes)
    if results.empty:
        ui.empty("No results yet. `w2stree pipeline` (or `w2stree up`) trains and evaluates "
                 "SFT-weak, SFT-strong, TreeDPO and MCTS and writes the method table here.")
    else:
        method_section(results)
    score_section(path, changes, data.eval_index(path, changes))
    if not results.empty:
        trajectories_section(results)


main()
