"""Pure builders of the Results page's honest statistics: the method table with its spread over
seeds, the paired comparisons with both intervals (a table and a forest plot), the paper's Figure 4
(performance against trajectories per task K, mean over seeds with its t-interval), and the
command that fills what an experiment left out. Frames come from core.results
(`paired_comparisons`, `k_table`)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.names import env_option
from core.results import NO_DATA, ONE_SEED, interval_text
from dashboard import result_tables
from dashboard.shaping import escape

BOOTSTRAP = "95% bootstrap (seeds, then tasks)"
T_INTERVAL = "95% t over seeds"
CELL_COLUMNS = ["comparison", "K", "metric", "diff", BOOTSTRAP, T_INTERVAL, "seeds x tasks"]


def comparison_cells(comparisons: pd.DataFrame) -> pd.DataFrame:
    """One display row per comparison: "a − b", K, metric, the difference and both intervals as
    text; "1 seed" where a t-interval over seeds has a single seed, "no data" where the two
    methods share no evaluated task."""
    rows = []
    for r in comparisons.itertuples(index=False):
        has = not pd.isna(r.diff)
        rows.append({
            "comparison": f"{r.a} − {r.b}", "K": int(r.k), "metric": r.metric,
            "diff": f"{r.diff:+.3f}" if has else NO_DATA,
            BOOTSTRAP: interval_text(r.lo, r.hi) if has else "",
            T_INTERVAL: interval_text(r.t_lo, r.t_hi) if has else "",
            "seeds x tasks": f"{r.n_seeds} x {r.n_tasks}",
        })
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


def _error(mean: pd.Series, lo: pd.Series, hi: pd.Series) -> dict:
    """Plotly asymmetric error bars (none where the bound is missing)."""
    return dict(type="data", symmetric=False, array=np.nan_to_num(hi - mean), arrayminus=np.nan_to_num(mean - lo))


def comparison_figure(comparisons: pd.DataFrame, metric: str = "reward") -> go.Figure:
    """A forest plot of one metric's comparisons: per comparison (a row), the difference with the
    bootstrap interval over seeds and tasks, and just below it the t-interval over seeds;
    a dashed line at zero."""
    part = comparisons[(comparisons["metric"] == metric) & comparisons["diff"].notna()].reset_index(drop=True)
    labels = [escape(f"{r.a} − {r.b} (K={r.k})", 60) for r in part.itertuples(index=False)]
    y = np.arange(len(part), dtype=float)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=part["diff"], y=y, mode="markers", name=BOOTSTRAP,
                             error_x=_error(part["diff"], part["lo"], part["hi"])))
    has_t = part["t_lo"].notna()
    fig.add_trace(go.Scatter(x=part.loc[has_t, "diff"], y=y[has_t.to_numpy()] + 0.25, mode="markers",
                             name=T_INTERVAL, marker={"symbol": "diamond"},
                             error_x=_error(part.loc[has_t, "diff"], part.loc[has_t, "t_lo"],
                                            part.loc[has_t, "t_hi"])))
    fig.add_vline(x=0, line_dash="dash", line_color="grey")
    fig.update_layout(height=120 + 40 * len(part), margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      xaxis_title=f"{metric} difference (a − b)",
                      yaxis={"tickmode": "array", "tickvals": y + 0.125, "ticktext": labels, "autorange": "reversed"},
                      legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"})
    return fig


def k_figure(table: pd.DataFrame, metric: str = "reward") -> go.Figure:
    """Figure 4: per method a line of the mean over seeds against K, with the 95 % t-interval
    over seeds as error bars (none where a point has one seed); a method without data at a K
    leaves a gap there, one without data at any K is left out."""
    part = table[table["metric"] == metric]
    fig = go.Figure()
    for method, rows in part.groupby("method", sort=False):
        if rows["mean"].isna().all():
            continue
        rows = rows.sort_values("k")
        fig.add_trace(go.Scatter(x=rows["k"], y=rows["mean"], mode="lines+markers", name=escape(method, 40),
                                 error_y=_error(rows["mean"], rows["t_lo"], rows["t_hi"])))
    fig.update_layout(height=360, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"title": "trajectories per task K", "tickmode": "array",
                             "tickvals": sorted(part["k"].unique())},
                      yaxis_title="average reward" if metric == "reward" else "success rate",
                      legend={"orientation": "h", "y": -0.25})
    return fig


def method_stat_cells(results: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The method table with the statistics `w2stree results` prints: per method (rows) and env
    (columns `<env> reward`, `<env> success`) the mean over seeds ± their sample standard deviation,
    "mean (1 seed)" where one seed ran, "no data" where the method had no training data; the
    largest trajectories-per-task setting of each method and env."""
    if results.empty:
        return pd.DataFrame()
    rows = result_tables.largest_k_rows(results)
    g = rows.groupby(["method", "env"], sort=False)[["avg_reward", "success_rate"]]
    mean, std, seeds = (result_tables.method_wide(rows, agg) for agg in (g.mean(), g.std(), g.count()))

    def cell(m: float, s: float, n: float) -> str:
        if pd.isna(m):
            return NO_DATA
        return f"{m:.{digits}f} ({ONE_SEED})" if n == 1 else f"{m:.{digits}f} ± {s:.{digits}f}"

    return pd.DataFrame([[cell(*v) for v in zip(mean.loc[i], std.loc[i], seeds.loc[i], strict=True)]
                         for i in mean.index], index=mean.index, columns=mean.columns)


def experiment_command(experiment_id: str, env: str, options: str) -> str:
    """`w2stree pipeline` as the experiment ran it (its env, scale and split, read from its id),
    plus `options`: the command that fills what the experiment left out."""
    m = re.search(r"-(tiny|quick|paper)-(dev|test)-\d{8}-", experiment_id)
    scale, split = m.groups() if m else ("tiny", "test")
    return f"w2stree pipeline {env_option(env)} --scale {scale} --split {split} {options}"
