"""`explore` from a node, K = 4 continuations with the expert (issue 13; target on the shop:
under 5 s end to end).

For each env: one failed episode of a task is collected (shop: random; ScienceWorld: the expert
cut after 3 steps), its tree built and scored (200
MCTS iterations), then `w2stree explore --policy expert -k 4` runs from the node at depth 2,
`--repeats` times in a fresh process each (end to end: interpreter start, imports, env build,
prefix replay, 4 continuations, store writes, tree rebuild and MCTS), and `core.explore.explore`
runs in this process (warm imports) for the in-process figure. Medians.

    python bench/explore.py [--envs shop sciworld] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TASKS = {"shop": "train_0", "sciworld": "lifespan-longest-lived_1"}


def bench_env(env: str, repeats: int, workdir: Path) -> tuple[float, float]:
    """(median seconds of the CLI in a fresh process, median seconds in this process)."""
    from core.agents.scripted import ExpertPolicy, RandomPolicy
    from core.collect import collect
    from core.explore import ExploreSpec, explore
    from core.mcts import run_mcts
    from core.store import Store
    from core.tree import build_trees

    db = workdir / f"{env}.duckdb"
    store = Store(db)
    task = TASKS[env]
    # ScienceWorld's expert continues its gold path only: its "failed" branch is the expert cut short
    policy = RandomPolicy(1) if env == "shop" else ExpertPolicy(env)
    try:
        collect(store, env, policy, [task], batch_size=1, max_steps=6 if env == "shop" else 3, progress=False)
    finally:
        policy.close()
    graphs = build_trees(store.trajectories(env=env))
    for g in graphs:
        run_mcts(g, iterations=200)
    store.save_trees(graphs)
    cmd = [sys.executable, "-m", "core", "--db", str(db), "explore", "--env", env, "--task", task,
           "--node", "2", "--policy", "expert", "-k", "4"]
    environ = dict(os.environ, PYTHONPATH=str(REPO))
    cli, warm = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=environ, stdout=subprocess.DEVNULL)
        cli.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        explore(store, ExploreSpec(env, task, 2, "expert", k=4))
        warm.append(time.perf_counter() - t0)
    return statistics.median(cli), statistics.median(warm)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["W2STREE_HOME"] = tmp
        for env in args.envs:
            cli, warm = bench_env(env, args.repeats, Path(tmp))
            print(f"explore  {env:9s} K=4 expert from node 2: {cli:.2f} s end to end (CLI, fresh process), "
                  f"{warm:.2f} s in process (medians of {args.repeats})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
