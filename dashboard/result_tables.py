"""The Results page's tables from the store's results frame: the latest experiment, the methods
that had no training data and why, the rows of the largest K, the method table and the score per
step (Figure 3). Plain functions, no Streamlit.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from core import methods
from core.results import has_training_data, own_numbers


def latest_experiment(results: pd.DataFrame) -> str | None:
    """The experiment id of the most recent results row."""
    if results.empty:
        return None
    return str(results.sort_values("created_at")["experiment_id"].iloc[-1])


def untrained_methods(results: pd.DataFrame) -> list[str]:
    """Methods (first-appearance order) none of whose rows had training data."""
    if results.empty:
        return []
    trained = has_training_data(results).groupby(results["method"], sort=False).any()
    return trained[~trained].index.tolist()


def no_data_reasons(untrained: Sequence[str]) -> str:
    """What the untrained methods were missing, where the method table says it (core.methods):
    "no tree pairs, no best paths"; "" for methods it does not know."""
    found = (methods.find(m) for m in untrained)
    return ", ".join(dict.fromkeys(m.no_data for m in found if m is not None and m.no_data))


def largest_k_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of the largest trajectories-per-task setting of each method and env, with the
    numbers of a method without training data there set to NaN."""
    df = results.copy()
    df["trajs_per_task"] = df["trajs_per_task"].fillna(-1)
    top = df.groupby(["method", "env"])["trajs_per_task"].transform("max")
    return own_numbers(df[df["trajs_per_task"] == top])


def method_wide(rows: pd.DataFrame, agg: pd.DataFrame) -> pd.DataFrame:
    """Per-(method, env) values `agg` (columns avg_reward, success_rate) as the method table:
    methods in the first-appearance order of `rows`, columns `<env> reward`, `<env> success`."""
    wide = agg.unstack("env")
    wide.columns = [f"{env} {'reward' if col == 'avg_reward' else 'success'}" for col, env in wide.columns]
    order = list(dict.fromkeys(rows["method"]))
    envs = list(dict.fromkeys(rows["env"]))
    cols = [f"{e} {k}" for e in envs for k in ("reward", "success")]
    return wide.reindex(index=order, columns=cols)


def score_curves(steps: pd.DataFrame) -> pd.DataFrame:
    """Mean score per time step and model (the paper's Figure 3). `steps` has columns
    model, traj_id, idx, score; an episode that ended keeps its last score for later steps.
    Returns columns model, step (1-based), score."""
    if steps.empty:
        return pd.DataFrame(columns=["model", "step", "score"])
    s = steps.dropna(subset=["score"])
    if s.empty:
        return pd.DataFrame(columns=["model", "step", "score"])
    wide = s.pivot_table(index="traj_id", columns="idx", values="score", aggfunc="last")
    wide = wide.reindex(columns=range(int(s["idx"].max()) + 1)).ffill(axis=1)
    model = s.drop_duplicates("traj_id").set_index("traj_id")["model"]
    wide["model"] = model.reindex(wide.index)
    long = wide.groupby("model").mean().stack().rename("score").reset_index()
    long.columns = ["model", "step", "score"]
    long["step"] = long["step"].astype(int) + 1
    return long
