"""The experiment's results: the method table, the rows scripts read, and paired comparisons.

One stored row per (method, seed, K) of an experiment (`Store.add_results`). A method that got no
training data (no pairs, no successes, no tree with a success) has a row with `avg_reward` and
`success_rate` NULL and `n_examples` 0: the table says "no data", never another method's numbers.

Paired comparison: every method is evaluated greedily on the same test tasks, so the per-task
reward differences of two methods (averaged over the seeds both have) measure their gap with the
task-to-task variation removed; the 95 % interval is a percentile bootstrap over tasks.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from core.errors import UserError
from core.store import Store

#: Methods in table order: (method, eval label).
METHODS: tuple[tuple[str, str], ...] = (
    ("SFT-weak", "sft-weak"),
    ("SFT-strong", "sft-strong"),
    ("SFT-continued", "sft-continued"),  # compute-matched control: SFT-strong + the DPO stage's steps on expert rows
    ("W2S-SFT", "w2s-sft"),
    ("ETO-DPO", "eto-dpo"),
    ("TreeDPO", "treedpo"),
    ("MCTS", "mcts"),
)
#: The methods that train the strong SFT model on the weak model's exploration, in table order.
STRONG_METHODS: tuple[str, ...] = ("W2S-SFT", "ETO-DPO", "TreeDPO", "MCTS")
#: The comparisons the paper's claim is about: (method, baseline).
CLAIMS: tuple[tuple[str, str], ...] = (
    ("TreeDPO", "SFT-weak"), ("TreeDPO", "SFT-strong"), ("MCTS", "SFT-weak"), ("MCTS", "SFT-strong"),
)
FORMATS = ("table", "json", "csv")
NO_DATA = "no data"


def _order(df: pd.DataFrame) -> pd.Series:
    rank = {m: i for i, (m, _) in enumerate(METHODS)}
    return df["method"].map(lambda m: rank.get(m, len(rank)))


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample standard deviation over seeds per (K, method), in table order. Rows of a
    method without training data are left out of its means; a method with none at all keeps NaN."""
    if df.empty:
        return df
    df = df.copy()
    untrained = df["n_examples"].fillna(-1) == 0  # no training data: its numbers are not its own
    df.loc[untrained, ["avg_reward", "success_rate"]] = float("nan")
    g = df.groupby(["trajs_per_task", "method"], sort=False)
    out = g.agg(avg_reward=("avg_reward", "mean"), avg_reward_std=("avg_reward", "std"),
                success_rate=("success_rate", "mean"), success_rate_std=("success_rate", "std"),
                n_examples=("n_examples", "mean"), seeds=("seed", "nunique"),
                seeds_with_data=("avg_reward", "count")).reset_index()
    out["_o"] = _order(out)
    out = out.sort_values(["trajs_per_task", "_o"]).drop(columns="_o")
    has = out["seeds_with_data"] > 0
    for col in ("avg_reward_std", "success_rate_std"):
        out.loc[has, col] = out.loc[has, col].fillna(0.0)
    return out.reset_index(drop=True)


def _cell(mean: float, std: float) -> str:
    return f"{NO_DATA:>17}" if pd.isna(mean) else f"{mean:>8.3f} ± {std:<6.3f}"


def format_table(df: pd.DataFrame, comparisons: pd.DataFrame | None = None) -> str:
    """The results table as text: method, avg reward, success rate (mean ± std over seeds),
    #training examples, per K; then the paired comparisons when given."""
    s = summarize(df)
    lines = []
    n_test = int(df["n_episodes"].max()) if "n_episodes" in df and df["n_episodes"].notna().any() else None
    for k, part in s.groupby("trajs_per_task", sort=False):
        head = f"trajectories per task: {k}  (seeds: {int(part['seeds'].max())}"
        lines.append(head + (f", test tasks: {n_test})" if n_test else ")"))
        lines.append(f"{'method':<12} {'avg reward':>17} {'success rate':>17} {'#train ex.':>10}")
        for r in part.itertuples(index=False):
            lines.append(f"{r.method:<12} {_cell(r.avg_reward, r.avg_reward_std)} "
                         f"{_cell(r.success_rate, r.success_rate_std)} {r.n_examples:>10.0f}")
    if comparisons is not None and not comparisons.empty:
        lines.append("paired per-task reward difference (method - baseline), bootstrap 95% interval:")
        for r in comparisons.itertuples(index=False):
            if pd.isna(r.diff):
                lines.append(f"  {r.method:<8} vs {r.baseline:<10} K={r.trajs_per_task}: {NO_DATA}")
                continue
            lines.append(f"  {r.method:<8} vs {r.baseline:<10} K={r.trajs_per_task}: {r.diff:+.3f} "
                         f"[{r.lo:+.3f}, {r.hi:+.3f}] over {r.n_tasks} tasks; success {r.success_diff:+.3f} "
                         f"[{r.success_lo:+.3f}, {r.success_hi:+.3f}]")
    return "\n".join(lines)


def bootstrap_mean(diffs: np.ndarray, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5th, 97.5th percentile) of the mean of `diffs` under resampling with replacement."""
    diffs = np.asarray(diffs, dtype=float)
    if diffs.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, diffs.size, size=(n_boot, diffs.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(diffs.mean()), float(lo), float(hi)


def episode_outcomes(store: Store, df: pd.DataFrame) -> pd.DataFrame:
    """Per-task outcomes of the result rows' evaluation runs: method, seed, K, task_id, reward,
    success (rows without an eval run, i.e. without data, contribute nothing)."""
    rows = df[df["run_id"].notna()] if "run_id" in df else df.iloc[0:0]
    parts = []
    for r in rows.itertuples(index=False):
        idx = store.trajectory_index(run_id=r.run_id)
        if idx.empty:
            continue
        parts.append(pd.DataFrame({"method": r.method, "seed": r.seed, "trajs_per_task": r.trajs_per_task,
                                   "task_id": idx["task_id"], "reward": idx["reward"].astype(float),
                                   "success": idx["success"].fillna(False).astype(float)}))
    cols = ["method", "seed", "trajs_per_task", "task_id", "reward", "success"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def paired_comparisons(outcomes: pd.DataFrame, claims: tuple[tuple[str, str], ...] = CLAIMS,
                       n_boot: int = 10_000) -> pd.DataFrame:
    """For each (method, baseline) and K: the mean per-task difference in reward and in success
    (each task's difference averaged over the seeds both were run with), with bootstrap 95 % intervals."""
    out = []
    for k in sorted(outcomes["trajs_per_task"].unique()) if not outcomes.empty else []:
        part = outcomes[outcomes["trajs_per_task"] == k]
        for method, base in claims:
            a, b = part[part["method"] == method], part[part["method"] == base]
            m = a.merge(b, on=["seed", "task_id"], suffixes=("", "_b"))
            per_task = m.assign(d=m["reward"] - m["reward_b"], s=m["success"] - m["success_b"]) \
                .groupby("task_id")[["d", "s"]].mean()
            diff, lo, hi = bootstrap_mean(per_task["d"].to_numpy(), n_boot)
            sdiff, slo, shi = bootstrap_mean(per_task["s"].to_numpy(), n_boot)
            out.append(dict(method=method, baseline=base, trajs_per_task=int(k), n_tasks=len(per_task),
                            n_seeds=int(m["seed"].nunique()), diff=diff, lo=lo, hi=hi, success_diff=sdiff,
                            success_lo=slo, success_hi=shi))
    return pd.DataFrame(out)


def result_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows for scripts: method, seed, k, env, avg_reward, success_rate, n_test,
    n_train_examples (one per method x seed x K, table order; NaN rewards mean no data)."""
    if df.empty:
        return pd.DataFrame(columns=["method", "seed", "k", "env", "avg_reward", "success_rate", "n_test",
                                     "n_train_examples"])
    out = pd.DataFrame({
        "method": df["method"], "seed": df["seed"].astype(int), "k": df["trajs_per_task"].astype(int),
        "env": df["env"], "avg_reward": df["avg_reward"], "success_rate": df["success_rate"],
        "n_test": df["n_episodes"].fillna(0).astype(int), "n_train_examples": df["n_examples"].fillna(0).astype(int),
    })
    out["_o"] = _order(out)
    return out.sort_values(["k", "seed", "_o"]).drop(columns="_o").reset_index(drop=True)


def experiment_results(store: Store, experiment_id: str | None = None) -> tuple[str, pd.DataFrame]:
    """(experiment id, its stored rows); the latest experiment when none is named."""
    all_rows = store.results()
    if all_rows.empty:
        raise UserError("no results stored yet; run `w2stree pipeline` (or `w2stree up`) first")
    if experiment_id is None:
        experiment_id = str(all_rows.sort_values("created_at")["experiment_id"].iloc[-1])
    rows = all_rows[all_rows["experiment_id"] == experiment_id]
    if rows.empty:
        known = ", ".join(all_rows["experiment_id"].unique()[-5:])
        raise UserError(f"no experiment {experiment_id!r} in the store; recent ones: {known}")
    return experiment_id, rows.reset_index(drop=True)


def render(store: Store, experiment_id: str | None = None, fmt: str = "table") -> str:
    """What `w2stree results` prints, in `fmt` (table, json or csv)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown results format {fmt!r}; use {', '.join(FORMATS)}")
    exp, rows = experiment_results(store, experiment_id)
    if fmt == "json":
        return result_rows(rows).to_json(orient="records", indent=1)
    if fmt == "csv":
        return result_rows(rows).to_csv(index=False).rstrip("\n")
    return f"results of experiment {exp}:\n" + format_table(rows, paired_comparisons(episode_outcomes(store, rows)))
