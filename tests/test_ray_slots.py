"""Env slots in Ray actors (`--executor ray`, core.ray_slots): the same trajectories as in-process
envs (collect and explore), an actor killed mid-episode is replaced and its episodes run again
(each trajectory once), and recycling keeps ScienceWorld workers' memory flat.

One Ray per module (`ray.init(num_cpus=2)`: 12-17 s and ~700 MB on the 2-core CI machine);
skipped only where Ray is not installed (`pip install 'w2stree[ray]'`).
"""

from __future__ import annotations

import json
import time

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'w2stree[ray]'")

from slot_runs import TASKS, KillingExpert, played, run_shop, steps  # noqa: E402

from core.agents.base import PAPER_SCHEDULE, Sampling  # noqa: E402
from core.agents.scripted import ExpertPolicy, RandomPolicy  # noqa: E402
from core.collect import collect  # noqa: E402
from core.env_slots import LocalSlots, Pool  # noqa: E402
from core.episodes import Episode, reset_starter, run_episodes  # noqa: E402
from core.explore import ExploreSpec, explore  # noqa: E402
from core.ray_slots import RaySlots  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One local Ray for the module's tests (RaySlots joins it and leaves it running)."""
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_pool_collects_what_the_local_pool_collects(store) -> None:
    runs = {}
    for name, pool in (("local", Pool()), ("ray", Pool(2, "ray"))):
        for policy, schedule in ((ExpertPolicy("shop"), [Sampling()]), (RandomPolicy(3), PAPER_SCHEDULE)):
            res = collect(store, "shop", policy, TASKS, schedule, pool=pool, batch_size=6, max_steps=8,
                          progress=False)
            runs[name, policy.name] = steps(store.trajectories(run_id=res.run_id))
            assert json.loads(store.run_record(res.run_id)["settings"])["executor"] == name
    for policy in ("expert", "random"):
        assert runs["local", policy] == runs["ray", policy]
    assert len(runs["ray", "random"]) == len(TASKS) * len(PAPER_SCHEDULE)
    assert {r[3] for r in runs["ray", "expert"]} == {1.0}


def test_a_killed_actor_is_replaced_and_its_episodes_run_again() -> None:
    local = LocalSlots("shop", {})
    try:
        expected = played(run_shop(local, ExpertPolicy("shop"), 10))
    finally:
        local.close()
    slots = RaySlots("shop", {}, 2)
    try:
        old = list(slots.actors)
        ended = run_shop(slots, KillingExpert(lambda: ray.kill(slots.actors[1]), at=3), 10)
        assert slots.replaced == 1 and slots.actors[0] is old[0] and slots.actors[1] is not old[1]
        assert sorted(ep.seq for ep in ended) == list(range(10))  # every episode once, none lost
        assert played(ended) == expected  # the lost ones ran again from their start
        assert all(ep.success for ep in ended)
    finally:
        slots.close()
    assert ray.is_initialized()  # the module's Ray: RaySlots did not start it, so it leaves it


def test_explore_on_ray_equals_explore_in_process(store) -> None:
    """The node's prefix is replayed in the actors and the expert re-plans there (ops replay, replan)."""
    from core.mcts import run_mcts
    from core.tree import build_trees

    collect(store, "shop", RandomPolicy(0), ["train_0"], progress=False)
    graphs = build_trees(store.trajectories(env="shop", task_id="train_0"))
    for g in graphs:
        run_mcts(g, iterations=50)
    store.save_trees(graphs)
    played = {}
    for name, pool in (("local", Pool()), ("ray", Pool(2, "ray"))):
        res = explore(store, ExploreSpec("shop", "train_0", 2, "expert", k=4, pool=pool))
        assert res.status == "finished" and res.rewards == [1.0] * 4
        played[name] = steps(store.trajectories(run_id=res.run_id))
    assert played["local"] == played["ray"]


def test_recycled_sciworld_workers_keep_their_memory_flat() -> None:
    """300 short ScienceWorld episodes (5 steps, 30 variations of one task: another task's first
    load takes seconds) on 2 actors, one env each, rebuilt every 50 episodes: the actors' memory
    (with their JVMs) stays within 25% of what it was after the first 50."""
    slots = RaySlots("sciworld", {}, 2, recycle=50)
    try:
        tasks = list(slots.task_index())[:30]
        policy = ExpertPolicy("sciworld")
        episodes = [Episode(tasks[i % len(tasks)], Sampling(), 0, i) for i in range(300)]
        rss: list[int] = []
        ended = []

        def on_end(ep: Episode) -> None:
            ended.append(ep)
            if len(ended) % 50 == 0:
                rss.append(sum(r for r, _ in slots.usage()))

        t0 = time.monotonic()
        run_episodes(policy, "sciworld", episodes, slots, 2, start=reset_starter("sciworld", slots, 5),
                     on_end=on_end)
        policy.close()
        assert len(ended) == 300 and slots.rebuilt() >= 4
        print(f"300 episodes in {time.monotonic() - t0:.0f}s; actors' RSS every 50: "
              f"{[f'{r / 2**20:.0f} MB' for r in rss]}")
        assert max(rss[1:]) <= 1.25 * rss[0]
    finally:
        slots.close()


def test_cli_collect_on_ray(store, capsys) -> None:
    from core.cli import main

    assert main(["collect", "--env", "shop", "--policy", "expert", "--tasks", "4", "--workers", "2",
                 "--executor", "ray", "--recycle", "1"]) == 0
    assert "4 episodes, average reward 1.000" in capsys.readouterr().out
    run = store.runs().iloc[0]
    assert json.loads(run["settings"])["executor"] == "ray" and run["status"] == "finished"
    assert main(["collect", "--env", "shop", "--policy", "expert", "--tasks", "2", "--workers", "3",
                 "--executor", "ray"]) == 2  # the module's Ray has 2 CPUs, one per actor
    assert "--workers 3: the Ray cluster has 2 CPUs" in capsys.readouterr().err
