"""Evaluate stored models on the other 100 tasks of a split (`split`[100:200]) and compare them per
task over all 200 with a paired bootstrap 95 % interval: 100 tasks cannot separate differences of a
few points. The split is **dev** by default (`--split`): the comparisons it prints choose settings.
Used for docs/experiments.md run 5, on test (`--split test`), which "Which figures were tuned on
test" there marks.

    W2STREE_HOME=HOME python docs/scripts/second_test_half.py HOME NAME=MODEL_FOLDER:RUN_ID ... [--split dev]

MODEL_FOLDER is under HOME/models; RUN_ID is the stored evaluation run of that model on the
split's first 100 tasks (the results table's run_id); `MODEL_FOLDER:RUN_ID:RUN_ID2` reuses a
stored run on `split`[100:200]. The first NAME is the baseline every other is compared with; the
second, if there are more than two, is a second baseline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from core.envs import make_env
from core.evaluate import evaluate
from core.results import episode_outcomes
from core.stats import bootstrap_mean
from core.store import Store

ENV = "shop?n_products=200&n_categories=10"


def outcomes(store: Store, run_id: str) -> pd.DataFrame:
    """task_id, reward, success of one evaluation run."""
    row = pd.DataFrame({"method": [""], "seed": [0], "trajs_per_task": [0], "run_id": [run_id]})
    return episode_outcomes(store, row)[["task_id", "reward", "success"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("home", type=Path)
    ap.add_argument("models", nargs="+", metavar="NAME=MODEL_FOLDER:RUN_ID[:RUN_ID2]")
    ap.add_argument("--split", default="dev", help="the split evaluated on (default dev; test only for a final run)")
    args = ap.parse_args()
    home = args.home
    store = Store(home / "w2stree.duckdb")
    with make_env(ENV) as e:
        second = [t.task_id for t in e.tasks(args.split)][100:200]
    per_model = {}
    for spec in args.models:
        name, rest = spec.split("=", 1)
        folder, first_run, *stored = rest.split(":")
        second_run = stored[0] if stored else evaluate(
            store, str(home / "models" / folder), ENV, task_ids=second, max_steps=10, batch_size=16,
            label=f"{name}-{args.split}2").run_id
        both = pd.concat([outcomes(store, first_run), outcomes(store, second_run)], ignore_index=True)
        per_model[name] = both.set_index("task_id").sort_index()
        print(f"{name}: 200 tasks: reward {both['reward'].mean():.3f} success {both['success'].mean():.3f} "
              f"(second half run {second_run})", flush=True)
    names = list(per_model)
    bases = names[:2] if len(names) > 2 else names[:1]
    for name in names:
        for base in bases:
            if name == base:
                continue
            a, b = per_model[name].align(per_model[base], join="inner", axis=0)
            d, lo, hi = bootstrap_mean(np.asarray(a["reward"] - b["reward"]))
            s, slo, shi = bootstrap_mean(np.asarray(a["success"] - b["success"]))
            print(f"  {name} - {base} over {len(a)} tasks: reward {d:+.3f} [{lo:+.3f}, {hi:+.3f}], "
                  f"success {s:+.3f} [{slo:+.3f}, {shi:+.3f}]")


if __name__ == "__main__":
    main()
