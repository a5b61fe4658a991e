"""`w2stree stats [--env ENV] [--task ID] [--all]`: what the store holds, compact by default.

The default is a summary per environment and per source; the table per task (thousands of
lines on a pipeline's store) appears when `--env` or `--task` narrows it, or with `--all`.
Evaluation episodes never enter the totals or the per-task rates (as on the dashboard's
Overview): they are reported per model, since a success rate over several models means nothing.
"""

from __future__ import annotations

import argparse
import shlex

import pandas as pd

from core.cli.context import open_store
from core.console import plural
from core.errors import UserError
from core.store import Store

# Columns printed with fixed digits (a dash where there is no value).
DIGITS = {"success_rate": 2, "mean_reward": 2, "mean_length": 1}
# The totals line: column of Store.task_stats -> its noun.
COUNTED = (("trajectories", "trajectory"), ("trees", "tree"), ("nodes", "node"), ("pairs", "pair"))


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `stats` verb."""
    p = sub.add_parser(
        "stats", help="what the store holds: per env and source (evaluation per model); per task with a filter",
        description="Summarise the store: per environment, per source (expert demonstrations, exploration, "
                    "and evaluation one row per model), and the totals without evaluation episodes. "
                    "--env / --task narrow it and add the table per task; --all adds that table for "
                    "the whole store.")
    p.add_argument("--env", help="only this environment (and its table per task)")
    p.add_argument("--task", help="only this task id (and its row per task)")
    p.add_argument("--all", action="store_true", help="the table per task of the whole store")
    p.set_defaults(func=cmd_stats)


def _text(df: pd.DataFrame) -> str:
    """`df` as an aligned table: rates with fixed digits, a dash for a missing one."""
    df = df.copy()
    for col, digits in DIGITS.items():
        if col in df:
            df[col] = df[col].map(lambda v, d=digits: "-" if pd.isna(v) else f"{v:.{d}f}")
    return df.to_string(index=False)


def _check_scope(store: Store, env: str | None, task: str | None, tasks: pd.DataFrame,
                 sources: pd.DataFrame) -> None:
    """Refuse an --env / --task that matches nothing stored, naming what there is."""
    if env is not None and env not in set(store.env_summary()["env"]):
        held = ", ".join(shlex.quote(e) for e in store.env_summary()["env"]) or "nothing"
        raise UserError(f"no environment {env!r} in the store (it holds: {held})")
    if task is not None and tasks.empty and sources.empty:
        where = f" of environment {env!r}" if env else ""
        listing = f"w2stree stats --env {shlex.quote(env)}" if env else "w2stree stats --all"
        raise UserError(f"nothing stored for task {task!r}{where}; `{listing}` lists the tasks")


def cmd_stats(args: argparse.Namespace) -> int:
    store = open_store(args)
    envs = store.env_summary()
    if envs.empty:
        print("the store is empty; run `w2stree import` or `w2stree collect` first")
        return 0
    tasks = store.task_stats(args.env, args.task)
    sources = store.source_summary(args.env, args.task)
    _check_scope(store, args.env, args.task, tasks, sources)
    if args.task is None:
        shown = envs if args.env is None else envs[envs["env"] == args.env]
        print("per environment (trajectories: collected and imported; evaluation episodes apart)")
        print(_text(shown) + "\n")
    if not sources.empty:
        print("by source (evaluation: one row per model)")
        print(_text(sources[["env", "source", "model", "episodes", *DIGITS]]) + "\n")
    if args.all or args.env is not None or args.task is not None:
        print("per task (without evaluation episodes)")
        print(_text(tasks.drop(columns="trees")) + "\n" if not tasks.empty else "no trajectories, trees or pairs\n")
    n_eval = int(sources.loc[sources["source"] == "evaluation", "episodes"].sum())
    evaluation = f"; {plural(n_eval, 'evaluation episode')} apart (per model above)" if n_eval else ""
    total = ", ".join(plural(int(tasks[col].sum()), noun) for col, noun in COUNTED)
    print(f"total: {total}{evaluation}")
    if not (args.all or args.env or args.task):
        print("the table per task: `w2stree stats --env ENV`, `--task ID` or `--all`")
    return 0
