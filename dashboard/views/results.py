"""Results: the method table (average reward and success rate per method and env, mean ± std over
seeds or "1 seed"), the paired comparisons with both intervals, performance versus the number of
trajectories per task (the paper's Figure 4) and the score per time step of evaluation episodes
(Figure 3). What an experiment did not produce is explained, with the command that fills it."""

from __future__ import annotations

import streamlit as st

from core.results import METRICS, NO_DATA, k_table
from dashboard import data, figures, result_figures, result_tables, ui


def method_section(results) -> str:
    """The chosen experiment's method table; returns the experiment id."""
    st.subheader("Methods")
    experiments = results.sort_values("created_at")["experiment_id"].unique().tolist()[::-1]
    exp = st.selectbox("Experiment (latest first)", experiments, key="results_exp")
    part = results[results["experiment_id"] == exp]
    st.dataframe(result_figures.method_stat_cells(part))
    seeds = part["seed"].nunique()
    if seeds == 1:
        st.caption("One seed, so no spread over seeds (each cell says \"1 seed\"; the comparisons' t-intervals "
                   "need two or more). Three seeds, as a new experiment:")
        st.code(result_figures.experiment_command(exp, part["env"].iloc[0], "--seeds 0 1 2"), language="bash")
    else:
        st.caption(f"Mean ± sample standard deviation over {seeds} seeds.")
    untrained = result_tables.untrained_methods(part)
    if untrained:
        why = result_tables.no_data_reasons(untrained) or "e.g. 0 pairs"
        st.caption(f"{ui.plain(', '.join(untrained))}: {NO_DATA}: no training examples in this experiment "
                   f"({ui.plain(why)}), so there is no model of their own to evaluate.")
    with st.expander("All rows of this experiment"):
        st.dataframe(part, hide_index=True)
    return exp


def comparison_section(path: str, changes: int, exp: str, metric: str) -> None:
    st.subheader("Paired comparisons")
    cmp = data.comparisons(path, changes, exp)
    if cmp.empty or cmp["diff"].isna().all():
        ui.empty("No paired comparison in this experiment: it needs evaluation episodes of both methods "
                 "on the same tasks (the pipeline stores them with each result row).")
        return
    st.caption("a − b, per-task differences within each seed. Two 95% intervals: a bootstrap that "
               "resamples seeds, then tasks, and the t-interval over the seeds' mean differences "
               "(none with one seed).")
    st.dataframe(result_figures.comparison_cells(cmp), hide_index=True)
    st.plotly_chart(result_figures.comparison_figure(cmp, metric), key="results_comparisons")


def trajectories_section(part, metric: str) -> None:
    st.subheader("Performance versus trajectories per task")
    table = k_table(part)
    if table.empty:
        ui.empty(f"This experiment ran one number of trajectories per task (K = "
                 f"{', '.join(map(str, sorted(part['trajs_per_task'].dropna().unique())))}); a K sweep fills "
                 "this figure (the paper's Figure 4), as a new experiment:")
        st.code(result_figures.experiment_command(str(part["experiment_id"].iloc[0]), part["env"].iloc[0],
                                                  "--trajs-per-task 1 2 4 6"), language="bash")
        return
    st.caption("Mean over seeds; error bars: 95% t-interval over seeds (none where a point has one seed).")
    st.plotly_chart(result_figures.k_figure(table, metric), key="results_k")


SCORED_EVAL = "w2stree eval --model expert --env sciworld --tasks 10"  # any model: --model NAME


def score_section(path: str, changes: int, index) -> None:
    st.subheader("Score per time step")
    envs = sorted(index["env"].unique()) if not index.empty else []
    if not envs:
        ui.empty("No evaluation episodes yet; per-step scores come from ScienceWorld's episodes:")
        st.code(SCORED_EVAL, language="bash")
        return
    default = envs.index("sciworld") if "sciworld" in envs else 0
    env = st.selectbox("Environment", envs, index=default, key="results_env")
    curves = result_tables.score_curves(data.eval_scores(path, changes, env))
    if curves.empty:
        ui.empty(f"The {ui.plain(env)} evaluation episodes carry no per-step scores: this env rewards only "
                 "the episode's end (the shop: at Buy Now). ScienceWorld scores every step (0-100 progress); "
                 "its expert's curve, for example (needs Java 17):")
        st.code(SCORED_EVAL, language="bash")
        return
    st.plotly_chart(figures.line_figure(curves, "step", "score", "model", y_title="mean score",
                                        x_title="time step"), key="results_scores")


def main() -> None:
    st.title("Results")
    path, changes = data.key()
    results = data.results(path, changes)
    if results.empty:
        ui.empty("No results yet. `w2stree pipeline` (or `w2stree up`) trains and evaluates "
                 "SFT-weak, SFT-strong, TreeDPO and MCTS and writes the method table here.")
    else:
        exp = method_section(results)
        metric = st.radio("Metric of the comparisons and the figure", list(METRICS), horizontal=True,
                          key="results_metric")
        comparison_section(path, changes, exp, metric)
        trajectories_section(results[results["experiment_id"] == exp], metric)
    score_section(path, changes, data.eval_index(path, changes))


main()
