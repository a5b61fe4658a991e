"""The experiment's results: the method table, the rows scripts read, and paired comparisons.

One stored row per (method, seed, K) of an experiment (`Store.add_results`). A method that got no
training data (no pairs, no successes, no tree with a success) has a row with `avg_reward` and
`success_rate` NULL and `n_examples` 0: the table says "no data", never another method's numbers.

Paired comparison: every method is evaluated greedily on the same test tasks, so within a seed
the per-task differences of two methods measure their gap with the task-to-task variation
removed. A comparison's table is seeds x tasks of those differences (the seeds both methods
have, the tasks evaluated in every one of them); its `diff` is the table's mean, with two 95 %
intervals (core.stats): a hierarchical bootstrap that resamples seeds, then tasks (`lo`, `hi`),
and the t-interval over the per-seed mean differences (`t_lo`, `t_hi`; none with one seed).

Figure 4 of the paper (performance against trajectories per task K): `k_table`, the mean over
seeds per (method, K) with its t-interval, when an experiment has several K.
"""

from __future__ import annotations

import json

import pandas as pd

from core import methods
from core.errors import UserError
from core.stats import hierarchical_bootstrap, t_interval
from core.store import Store

#: Methods in table order: (method, eval label); views of the method table (core.methods).
METHODS: tuple[tuple[str, str], ...] = tuple((m.name, m.label) for m in methods.METHODS)
#: The methods that train the strong SFT model on the weak model's exploration, in table order.
STRONG_METHODS: tuple[str, ...] = tuple(m.name for m in methods.STRONG)
#: The comparisons reported: (method, baseline), the paper's claims, then the compute-matched control.
CLAIMS: tuple[tuple[str, str], ...] = methods.comparisons()
METRICS = {"reward": "avg_reward", "success": "success_rate"}  # comparison metric -> results column
FORMATS = ("table", "json", "csv")
NO_DATA = "no data"
ONE_SEED = "1 seed"
COMPARISON_COLUMNS = ["a", "b", "k", "metric", "diff", "lo", "hi", "resampled", "t_lo", "t_hi", "n_seeds",
                      "n_tasks"]
K_COLUMNS = ["method", "k", "metric", "mean", "t_lo", "t_hi", "n_seeds"]


def _order(df: pd.DataFrame) -> pd.Series:
    rank = {m: i for i, (m, _) in enumerate(METHODS)}
    return df["method"].map(lambda m: rank.get(m, len(rank)))


def has_training_data(df: pd.DataFrame) -> pd.Series:
    """Per results row: did its method have training examples? A method with none (0 pairs, no
    successes) is stored with the unchanged starting model's numbers, which are not its own. An
    unrecorded count (no `n_examples` column, or NA) counts as trained."""
    if "n_examples" not in df:
        return pd.Series(True, index=df.index)
    n = pd.to_numeric(df["n_examples"], errors="coerce").astype("float64")  # NA -> NaN
    return n.fillna(-1) != 0


def own_numbers(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with the numbers of a method without training data (`has_training_data`) set to
    NaN: they are the unchanged starting model's, not its own."""
    df = df.copy()
    df.loc[~has_training_data(df), ["avg_reward", "success_rate"]] = float("nan")
    return df


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample standard deviation over seeds per (K, method), in table order. Rows of a
    method without training data are left out of its means; a method with none at all keeps NaN."""
    if df.empty:
        return df
    g = own_numbers(df).groupby(["trajs_per_task", "method"], sort=False)
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


def k_table(df: pd.DataFrame) -> pd.DataFrame:
    """The paper's Figure 4 as a table: per (method, K) and metric ("reward", "success"), the
    mean over the seeds with data and its 95 % t-interval over them (`t_lo`, `t_hi`; NaN with one
    seed), in table order. Empty unless the experiment has two or more K."""
    if df.empty or df["trajs_per_task"].nunique() < 2:
        return pd.DataFrame(columns=K_COLUMNS)
    out = []
    for (k, method), g in own_numbers(df).groupby(["trajs_per_task", "method"]):
        for metric, col in METRICS.items():
            values = g[col].dropna().to_numpy(dtype=float)
            mean, lo, hi = t_interval(values)
            out.append(dict(method=method, k=int(k), metric=metric, mean=mean, t_lo=lo, t_hi=hi,
                            n_seeds=len(values)))
    table = pd.DataFrame(out, columns=K_COLUMNS)
    table["_o"] = _order(table)
    return table.sort_values(["_o", "k", "metric"]).drop(columns="_o").reset_index(drop=True)


def _cell(mean: float, std: float, seeds: int) -> str:
    if pd.isna(mean):
        return f"{NO_DATA:>17}"
    return f"{mean:>8.3f} {f'({ONE_SEED})':<8}" if seeds == 1 else f"{mean:>8.3f} ± {std:<6.3f}"


def interval_text(lo: float, hi: float) -> str:
    """An interval of differences as `[+lo, +hi]`, or "1 seed" where it has no bounds (the
    t-interval over seeds of a single seed)."""
    return ONE_SEED if pd.isna(lo) else f"[{lo:+.3f}, {hi:+.3f}]"


def _k_cell(r: pd.Series) -> str:
    if pd.isna(r["mean"]):
        return NO_DATA
    return f"{r['mean']:.3f} " + (f"({ONE_SEED})" if pd.isna(r["t_lo"]) else f"[{r['t_lo']:.3f}, {r['t_hi']:.3f}]")


def _k_lines(table: pd.DataFrame) -> list[str]:
    ks = sorted(table["k"].unique())
    lines = ["performance against trajectories per task K (mean over seeds, 95% t-interval over seeds):"]
    for metric, part in table.groupby("metric", sort=False):
        lines.append(f"  {metric:<13} " + " ".join(f"{f'K={k}':>22}" for k in ks))
        for method, rows in part.groupby("method", sort=False):
            by_k = rows.set_index("k")
            cells = [_k_cell(by_k.loc[k]) if k in by_k.index else NO_DATA for k in ks]
            lines.append(f"  {method:<13} " + " ".join(f"{c:>22}" for c in cells))
    return lines


def _comparison_lines(comparisons: pd.DataFrame) -> list[str]:
    lines = ["paired comparisons (a - b, per-task differences within each seed);",
             "95% intervals: bootstrap resampling seeds, then tasks | t-interval over the seeds' mean differences:"]
    for r in comparisons.itertuples(index=False):
        head = f"  {r.a:<8} - {r.b:<13} K={r.k} {r.metric:<7}"
        if pd.isna(r.diff):
            lines.append(f"{head} {NO_DATA}")
            continue
        seeds = f"{r.n_seeds} seed{'s' if r.n_seeds != 1 else ''}"
        lines.append(f"{head} {r.diff:+.3f} {interval_text(r.lo, r.hi)} | t {interval_text(r.t_lo, r.t_hi)}"
                     f"  ({seeds} x {r.n_tasks} tasks)")
    return lines


def format_table(df: pd.DataFrame, comparisons: pd.DataFrame | None = None) -> str:
    """The results table as text: method, avg reward, success rate (mean ± std over seeds, or
    "1 seed"), #training examples, per K; then performance against K (`k_table`) when the
    experiment has several K, and the paired comparisons when given."""
    s = summarize(df)
    lines = []
    n_test = int(df["n_episodes"].max()) if "n_episodes" in df and df["n_episodes"].notna().any() else None
    for k, part in s.groupby("trajs_per_task", sort=False):
        head = f"trajectories per task: {k}  (seeds: {int(part['seeds'].max())}"
        lines.append(head + (f", evaluation tasks: {n_test})" if n_test else ")"))
        lines.append(f"{'method':<13} {'avg reward':>17} {'success rate':>17} {'#train ex.':>10}")
        for r in part.itertuples(index=False):
            lines.append(f"{r.method:<13} {_cell(r.avg_reward, r.avg_reward_std, r.seeds_with_data)} "
                         f"{_cell(r.success_rate, r.success_rate_std, r.seeds_with_data)} {r.n_examples:>10.0f}")
    by_k = k_table(df)
    if not by_k.empty:
        lines += _k_lines(by_k)
    if comparisons is not None and not comparisons.empty:
        lines += _comparison_lines(comparisons)
    return "\n".join(lines)


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


def paired_differences(outcomes: pd.DataFrame, a: str, b: str, metric: str) -> pd.DataFrame:
    """Seeds x tasks of a's `metric` ("reward" or "success") minus b's on the same task and seed:
    the seeds both methods were run with, the tasks evaluated for both in every one of them."""
    x, y = outcomes[outcomes["method"] == a], outcomes[outcomes["method"] == b]
    m = x.merge(y, on=["seed", "task_id"], suffixes=("", "_b"))
    d = (m[metric] - m[f"{metric}_b"]).groupby([m["seed"], m["task_id"]]).mean()
    table = d.unstack("task_id").dropna(axis=1) if len(d) else pd.DataFrame()
    return table if table.shape[1] else pd.DataFrame()


def paired_comparisons(outcomes: pd.DataFrame, claims: tuple[tuple[str, str], ...] = CLAIMS,
                       n_boot: int = 10_000) -> pd.DataFrame:
    """For each K, (a, b) of `claims` and metric: the mean paired difference (`paired_differences`)
    with the hierarchical bootstrap interval (`lo`, `hi`, resampled "seeds+tasks") and the
    t-interval over the per-seed means (`t_lo`, `t_hi`, NaN with one seed). Columns
    `COMPARISON_COLUMNS`; a pair with no common task gets NaN and zero counts."""
    out = []
    for k in sorted(outcomes["trajs_per_task"].unique()) if not outcomes.empty else []:
        part = outcomes[outcomes["trajs_per_task"] == k]
        for a, b in claims:
            for metric in METRICS:
                d = paired_differences(part, a, b, metric)
                diff, lo, hi = hierarchical_bootstrap(d.to_numpy(), n_boot)
                _, t_lo, t_hi = t_interval(d.mean(axis=1).to_numpy())
                out.append(dict(a=a, b=b, k=int(k), metric=metric, diff=diff, lo=lo, hi=hi, resampled="seeds+tasks",
                                t_lo=t_lo, t_hi=t_hi, n_seeds=d.shape[0], n_tasks=d.shape[1]))
    return pd.DataFrame(out, columns=COMPARISON_COLUMNS)


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
    if fmt == "csv":
        return result_rows(rows).to_csv(index=False).rstrip("\n")
    comparisons = paired_comparisons(episode_outcomes(store, rows))
    if fmt == "json":
        return json.dumps({"rows": _records(result_rows(rows)), "comparisons": _records(comparisons)}, indent=1)
    return f"results of experiment {exp}:\n" + format_table(rows, comparisons)


def _records(df: pd.DataFrame) -> list[dict]:
    """A frame as JSON-ready records, NaN as None (pandas' JSON writer does the conversion)."""
    return json.loads(df.to_json(orient="records"))
