"""Environment and collection throughput (issue 3; shop target: >= 2,000 steps/s, one process).

Medians over repeats, ratios against a baseline measured in the same run:

  * shop steps/s, one process: the expert's actions (plans computed before timing) and the
    random policy (RandomPolicy.act on one request per step, so policy overhead is included);
  * collection throughput (episodes/s, expert on shop, into a temporary store) with 1 and 2
    env worker processes: the ratio is 2 workers / 1 worker;
  * ScienceWorld steps/s with `fast_step=True` against `fast_step=False` on the same gold
    actions, and expert collection with 1 vs 2 workers (one JVM per episode slot); skipped
    with a message when core.envs.sciworld or Java is missing.

  * ALFWorld (real games: $ALFWORLD_DATA / data/alfworld, else the bundled few unpacked into a
    temporary folder): game load time (first reset), reset of the loaded game, steps/s on the
    expert's actions, and expert collection with 1 vs 2 worker processes; skipped with a message
    when ALFWorld is not installed.

    python bench/envs.py [--repeats 5] [--tasks 200] [--sciworld-steps 60] [--sciworld-tasks 4]
                         [--no-sciworld] [--alfworld-tasks 4] [--no-alfworld]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# core is imported inside the functions: spawned env workers re-import this file as their main
# module, and should not pay for DuckDB/pandas.


def median_rate(fn: Callable[[], int], repeats: int) -> float:
    """Median over repeats of (units done by fn) / seconds."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench_shop(repeats: int, n_tasks: int) -> None:
    from core.agents.base import Request
    from core.agents.scripted import RandomPolicy
    from core.envs import make_env
    from core.trajectory import Step

    env = make_env("shop")
    task_ids = [t.task_id for t in env.tasks("train")[:n_tasks]]
    plans = {t: [s.action for s in env.expert(t)] for t in task_ids}

    def expert_run() -> int:
        n = 0
        for t in task_ids:
            env.reset(t)
            for a in plans[t]:
                env.step(a)
                n += 1
        return n

    policy = RandomPolicy(seed=0)

    def random_run() -> int:
        n = 0
        for t in task_ids:
            _, instruction = env.reset(t)
            history: list[Step] = []
            done = False
            while not done:
                req = Request(env="shop", task_id=t, instruction=instruction, messages=[], history=history,
                              valid_actions=env.valid_actions())
                action = policy.act([req])[0].split("Action: ", 1)[1]
                res = env.step(action)
                history.append(Step(action=action, observation=res.observation))
                done = res.done
                n += 1
        return n

    expert_rate = median_rate(expert_run, repeats)
    random_rate = median_rate(random_run, repeats)
    print(f"shop, one process ({len(task_ids)} tasks, median of {repeats}):")
    print(f"  expert actions        {expert_rate:10,.0f} steps/s   (target >= 2,000: "
          f"{'met' if expert_rate >= 2000 else 'MISSED'})")
    print(f"  random policy + env   {random_rate:10,.0f} steps/s   (target >= 2,000: "
          f"{'met' if random_rate >= 2000 else 'MISSED'}; ratio to expert {random_rate / expert_rate:.2f})")


def bench_collect(repeats: int, n_tasks: int) -> None:
    from core.agents.scripted import ExpertPolicy
    from core.collect import collect
    from core.envs import shop
    from core.store import Store

    task_ids = [f"train_{i}" for i in range(n_tasks)]
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        rates = {}
        for label, workers, cold in (("1 warm", 1, False), ("1 cold", 1, True), ("2", 2, False)):
            def run(workers: int = workers, cold: bool = cold) -> int:
                if cold:  # what a fresh process pays: catalogue, index and search cache built in the run
                    shop._catalog.cache_clear()
                    shop._task_set.cache_clear()
                return collect(store, "shop", ExpertPolicy("shop"), task_ids, workers=workers,
                               progress=False).n_episodes
            rates[label] = median_rate(run, repeats)
    print(f"collection, expert on shop ({n_tasks} episodes, batch 32, store writes included, "
          f"median of {repeats}):")
    print(f"  workers=1, warm       {rates['1 warm']:10,.1f} episodes/s   (catalogue and search cache reused)")
    print(f"  workers=1, cold       {rates['1 cold']:10,.1f} episodes/s   (catalogue built in the run)")
    print(f"  workers=2             {rates['2']:10,.1f} episodes/s   (ratio to workers=1 cold: "
          f"{rates['2'] / rates['1 cold']:.2f}; spawning and a catalogue per worker included)")


def bench_sciworld(repeats: int, n_steps: int) -> None:
    if importlib.util.find_spec("core.envs.sciworld") is None:
        print("sciworld: skipped (core.envs.sciworld is not installed)")
        return
    if shutil.which("java") is None:
        print("sciworld: skipped (no java on PATH; ScienceWorld needs Java 17)")
        return
    from core.envs import make_env

    rates = {}
    for fast in (True, False):
        with make_env("sciworld", fast_step=fast) as env:
            task_id = env.tasks("train")[0].task_id
            actions = [s.action for s in env.expert(task_id)][:n_steps]

            def run(env=env, task_id=task_id, actions=actions) -> int:
                env.reset(task_id)
                for a in actions:
                    env.step(a)
                return len(actions)

            run()  # warm the JVM
            rates[fast] = median_rate(run, repeats)
    print(f"sciworld, one env ({task_id}, {len(actions)} gold steps, median of {repeats}):")
    print(f"  fast_step=False       {rates[False]:10,.1f} steps/s")
    print(f"  fast_step=True        {rates[True]:10,.1f} steps/s   (ratio fast/full: "
          f"{rates[True] / rates[False]:.2f})")


def bench_sciworld_collect(n_tasks: int) -> None:
    """Expert collection of `n_tasks` ScienceWorld `boil` tasks with two episode slots (two JVMs)
    in 1 vs 2 worker processes; gold plans are computed before timing."""
    from core.agents.scripted import ExpertPolicy
    from core.collect import collect
    from core.envs import make_env
    from core.store import Store

    with make_env("sciworld") as env:
        task_ids = [t.task_id for t in env.tasks("dev") if t.task_id.startswith("boil_")][:n_tasks]
    policy = ExpertPolicy("sciworld")
    try:
        steps = sum(len(policy.plan(t)) for t in task_ids)
        rates = {}
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp) / "bench.duckdb")
            for workers in (1, 2):
                t0 = time.perf_counter()
                collect(store, "sciworld", policy, task_ids, workers=workers, batch_size=2, progress=False)
                rates[workers] = len(task_ids) / (time.perf_counter() - t0)
    finally:
        policy.close()
    print(f"sciworld collection, expert ({len(task_ids)} episodes, {steps} steps, 2 slots = 2 JVMs, "
          "JVM start-up included, one run each):")
    print(f"  workers=1             {rates[1]:10,.2f} episodes/s")
    print(f"  workers=2             {rates[2]:10,.2f} episodes/s   (ratio 2/1: {rates[2] / rates[1]:.2f})")


def bench_alfworld(n_tasks: int) -> None:
    """ALFWorld load/reset/step times on real games, and expert collection with 1 vs 2 workers."""
    if importlib.util.find_spec("alfworld") is None:
        print("alfworld: skipped (pip install 'w2stree[alfworld]')")
        return
    import os

    from core.envs import alfworld_data

    with tempfile.TemporaryDirectory() as tmp:
        try:
            alfworld_data.checked_root()
            where = str(alfworld_data.data_root())
        except Exception:  # no data set up: the bundled games
            os.environ["ALFWORLD_DATA"] = str(alfworld_data.unpack("bundled", Path(tmp) / "alfworld"))
            where = "the bundled games"
        _bench_alfworld(n_tasks, where, Path(tmp))


def _bench_alfworld(n_tasks: int, where: str, tmp: Path) -> None:
    from core.agents.scripted import ExpertPolicy
    from core.collect import collect
    from core.envs import make_env
    from core.store import Store

    def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
        """fn's result, wall seconds, CPU seconds of this process (the machine may be shared)."""
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        return out, time.perf_counter() - w0, time.process_time() - c0

    with make_env("alfworld") as env:
        task_ids = [t.task_id for t in env.tasks("eto-unseen")][:n_tasks]
        _, load, load_cpu = timed(lambda: env.reset(task_ids[0]))
        _, again, again_cpu = timed(lambda: env.reset(task_ids[0]))
        plans, expert_s, expert_cpu = timed(lambda: {t: env.expert_actions(t) for t in task_ids})
        env.close()  # every reset below loads its game
        _, load_s, load_s_cpu = timed(lambda: [env.reset(t) for t in task_ids])
        env.close()
        steps = sum(len(plans[t]) for t in task_ids)
        # the same loads again, now with the expert's actions played: the difference is stepping
        _, play_s, play_cpu = timed(lambda: [env.step(a) for t in task_ids for a in (env.reset(t), *plans[t])[1:]])
        play_s, play_cpu = play_s - load_s, play_cpu - load_s_cpu
    n = len(task_ids)
    print(f"alfworld ({where}; {n} eto-unseen games, {steps} expert steps, one run; wall / CPU s):")
    print(f"  game load (reset)     {load_s / n:8.2f} / {load_s_cpu / n:.2f} s per game "
          f"(first ever: {load:.2f} / {load_cpu:.2f})")
    print(f"  reset, game loaded    {again:8.2f} / {again_cpu:.2f} s")
    print(f"  expert plan           {expert_s / n:8.2f} / {expert_cpu / n:.2f} s per game (own game instance)")
    print(f"  steps                 {steps / play_s:8.1f} / {steps / play_cpu:.1f} steps/s (loads taken out)")
    policy = ExpertPolicy("alfworld")
    try:
        for t in task_ids:  # plans first: collection then times only the env side
            policy.plan(t)
        store = Store(tmp / "bench.duckdb")
        rates = {}
        for workers in (1, 2):
            t0 = time.perf_counter()
            collect(store, "alfworld", policy, task_ids, workers=workers, progress=False)
            rates[workers] = len(task_ids) / (time.perf_counter() - t0)
    finally:
        policy.close()
    print(f"alfworld collection, expert ({len(task_ids)} episodes, plans computed before, one run each):")
    print(f"  workers=1             {rates[1]:10,.3f} episodes/s")
    print(f"  workers=2             {rates[2]:10,.3f} episodes/s   (ratio 2/1: {rates[2] / rates[1]:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tasks", type=int, default=200, help="shop tasks per measurement")
    ap.add_argument("--sciworld-steps", type=int, default=60)
    ap.add_argument("--sciworld-tasks", type=int, default=2, help="episodes of the sciworld collection run")
    ap.add_argument("--no-sciworld", action="store_true")
    ap.add_argument("--alfworld-tasks", type=int, default=4, help="ALFWorld games of the alfworld runs")
    ap.add_argument("--no-alfworld", action="store_true")
    ap.add_argument("--only-alfworld", action="store_true")
    args = ap.parse_args()
    if args.only_alfworld:
        bench_alfworld(args.alfworld_tasks)
        return
    bench_shop(args.repeats, args.tasks)
    bench_collect(max(1, args.repeats // 2), args.tasks)
    if not args.no_sciworld:
        bench_sciworld(max(1, args.repeats // 2), args.sciworld_steps)
        if importlib.util.find_spec("core.envs.sciworld") is not None and shutil.which("java"):
            bench_sciworld_collect(args.sciworld_tasks)
    if not args.no_alfworld:
        bench_alfworld(args.alfworld_tasks)


if __name__ == "__main__":
    main()
