"""Scale-out figures (issue 23): env workers on Ray with a heavy env, and store ingest.

  * ScienceWorld steps/s, expert actions through the episode runner (`run_episodes`, the policy
    in this process), one env per worker: 1 in-process env, 1 Ray actor, W Ray actors, and W
    worker processes as a control (the same parallelism without Ray). Target:
    W actors >= 0.8 x W x one actor's steps/s. Steady state: every slot's env has started and
    the expert's plans are computed before the clock starts (the JVMs' start is not timed).
  * ingest: the trajectories of that run written to a fresh DuckDB store (`Store.add_trajectories`,
    one write per `--ingest-batch` trajectories, as collect's flush), trajectories/s and steps/s,
    against the W-actor rollout step rate. Target >= 10x.

The machine's load average is printed with the figures: on shared cores the ratios understate
what free cores give. So CPU seconds per step are measured too, in the driver (policy, runner,
Ray client) and in the actors with their JVMs, and the W-actor ratio is projected for W free
cores: a lockstep round costs the driver W x d and the actors e in parallel, so W actors give
W / (W d_W + e_W) steps/s against one actor's 1 / (d_1 + e_1), each with its own run's CPU per
step (Ray latency not counted).

    python bench/scale.py [--workers 2] [--episodes 40] [--warm 10] [--max-steps 8] [--ingest-batch 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ENV = "sciworld"


def rollout(pool, tasks: list[str], episodes: int, max_steps: int, policy,
            warm: int) -> tuple[float, float, float, list]:
    """(steps/s, driver CPU s per step, env CPU s per step, the finished episodes) of `episodes`
    expert episodes, one env per worker, after `warm` untimed episodes per worker. Env CPU: the
    actors with their JVMs (Ray), else this process's children (JVMs, worker processes)."""
    from core.agents.base import Sampling
    from core.episodes import Episode, reset_starter, run_episodes
    from core.ray_slots import RaySlots, process_tree_usage
    from core.slot_pools import open_slots

    slots = open_slots(ENV, {}, pool)
    width = pool.workers

    def env_cpu() -> float:
        if isinstance(slots, RaySlots):
            return sum(cpu for _, cpu in slots.usage())
        return process_tree_usage()[1] - time.process_time()

    try:
        def play(n: int, first: int) -> list:
            ended: list = []
            eps = [Episode(tasks[(first + i) % len(tasks)], Sampling(), 0, first + i) for i in range(n)]
            run_episodes(policy, ENV, eps, slots, width, start=reset_starter(ENV, slots, max_steps),
                         on_end=ended.append)
            return ended

        play(warm * width, 0)  # every slot's JVM up, its tasks loaded and its JIT warm
        env0, cpu0, t0 = env_cpu(), time.process_time(), time.perf_counter()
        ended = play(episodes, warm * width)
        wall, cpu, env = time.perf_counter() - t0, time.process_time() - cpu0, env_cpu() - env0
    finally:
        slots.close()
    steps = sum(len(ep.steps) for ep in ended)
    return steps / wall, cpu / steps, env / steps, ended


def ingest(episodes: list, batch: int) -> tuple[float, float]:
    """(trajectories/s, steps/s) writing `episodes` as trajectories to a fresh store."""
    from core.store import Store

    trajs = [ep.trajectory(ENV, run_id="run-bench", source="collect", model="expert", policy="expert",
                           env_kwargs={}) for ep in episodes]
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "bench.duckdb")
        t0 = time.perf_counter()
        for i in range(0, len(trajs), batch):
            store.add_trajectories(trajs[i:i + batch])
        wall = time.perf_counter() - t0
        del store
    return len(trajs) / wall, sum(len(t.steps) for t in trajs) / wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2, help="W, the Ray actors of the scaled run (default 2)")
    p.add_argument("--episodes", type=int, default=40, help="timed episodes per configuration (default 40)")
    p.add_argument("--warm", type=int, default=10,
                   help="untimed episodes per worker first: each JVM compiles its hot code itself (default 10)")
    p.add_argument("--max-steps", type=int, default=8, help="steps per episode at most (default 8)")
    p.add_argument("--ingest-batch", type=int, default=32, help="trajectories per store write (default 32)")
    args = p.parse_args()
    try:
        import ray
    except ImportError:
        sys.exit("bench/scale.py needs Ray: pip install 'w2stree[ray]'")
    from core.agents.scripted import ExpertPolicy
    from core.env_slots import LocalSlots, Pool

    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    index = LocalSlots(ENV, {})
    tasks = list(index.task_index())[:30]  # variations of one task: another task's first load takes seconds
    index.close()
    policy = ExpertPolicy(ENV)
    for t in tasks:  # the plans, before any clock starts
        policy.plan(t)
    w = args.workers
    rates, cpus, played = {}, {}, {}
    try:
        # the pools without Ray first: Ray's own daemons are children of this process too
        for label, pool in (("1 in-process env", Pool()), (f"{w} processes", Pool(w, "process")),
                            ("1 Ray actor", Pool(1, "ray")), (f"{w} Ray actors", Pool(w, "ray"))):
            if pool.kind == "ray" and not ray.is_initialized():
                ray.init(num_cpus=max(2, w), include_dashboard=False, configure_logging=False)
            rates[label], d, e, played[label] = rollout(pool, tasks, args.episodes, args.max_steps, policy, args.warm)
            cpus[label] = d, e
            print(f"  {label:20s} {rates[label]:8.1f} steps/s   CPU per step: driver {d * 1e3:5.1f} ms, "
                  f"envs {e * 1e3:5.1f} ms", flush=True)
    finally:
        ray.shutdown()
        policy.close()
    one, many = rates["1 Ray actor"], rates[f"{w} Ray actors"]
    (d1, e1), (dw, ew) = cpus["1 Ray actor"], cpus[f"{w} Ray actors"]
    print(f"{w} actors / (W x 1 actor): {many / (w * one):.2f} measured (target >= 0.80); projected for {w} free "
          f"cores from CPU per step: {(d1 + e1) / (w * dw + ew):.2f}; 1 actor / in-process: "
          f"{one / rates['1 in-process env']:.2f}; {w} processes / (W x in-process): "
          f"{rates[f'{w} processes'] / (w * rates['1 in-process env']):.2f}")
    ended = played[f"{w} Ray actors"]
    traj_s, steps_s = ingest(ended * max(1, 2000 // len(ended)), args.ingest_batch)
    print(f"ingest: {traj_s:,.0f} trajectories/s, {steps_s:,.0f} steps/s, in writes of {args.ingest_batch}: "
          f"{steps_s / many:.0f}x the {w}-actor rollout step rate (target >= 10x)")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
