"""Explore from a node (core.explore, `w2stree explore`): the expert from a failed branch adds a
successful branch under that node and the tree's counts add up; a replay that does not reproduce
the stored observations stops with the step; the same through the background job; ScienceWorld's
gold-path continuation."""

from __future__ import annotations

import time

import pytest

from core.agents.scripted import RandomPolicy
from core.cli import main
from core.collect import collect
from core.envs import make_env
from core.mcts import run_mcts
from core.tree import build_trees, path_to

TASK = "train_0"


def _failed_tree(store, env: str = "shop", task: str = TASK) -> None:
    """One random (failed) episode of the task, its tree and MCTS, as `w2stree tree/mcts` leave them."""
    collect(store, env, RandomPolicy(0), [task], progress=False)
    graphs = build_trees(store.trajectories(env=env, task_id=task))
    for g in graphs:
        run_mcts(g, iterations=200)
    store.save_trees(graphs)


def _check_counts(g) -> None:
    """Every node's visits = its children's visits + the trajectories ending there, and the
    success / failure split adds up; MCTS visits of the children add up to the parent's."""
    for n in g:
        d = g.nodes[n]
        kids = sorted(g.successors(n))
        assert d["visits"] == sum(g.nodes[k]["visits"] for k in kids) + len(d["terminal_rewards"])
        assert d["successes"] + d["failures"] == d["visits"] == len(d["traj_ids"])
        if kids and n != 0:
            assert d["mcts_visits"] == sum(g.nodes[k]["mcts_visits"] for k in kids)


def test_expert_from_a_failed_branch_adds_a_successful_branch(store, capsys) -> None:
    _failed_tree(store)
    old = store.load_tree(f"shop/{TASK}").to_networkx()
    assert old.nodes[0]["successes"] == 0
    node = 2  # depth 2 of the failed episode: not its end
    assert old.nodes[node]["depth"] == 2 and sorted(old.successors(node))

    rc = main(["explore", "--env", "shop", "--task", TASK, "--node", str(node), "--policy", "expert", "-k", "4"])
    out = capsys.readouterr().out
    assert rc == 0 and "4 continuations, 4 successful" in out

    g = store.load_tree(f"shop/{TASK}").to_networkx()
    for n in old:  # old nodes keep their ids and actions
        assert g.nodes[n]["action"] == old.nodes[n]["action"]
    assert g.nodes[0]["visits"] == 5 and g.nodes[0]["successes"] == 4
    assert g.nodes[node]["visits"] == 5 and g.nodes[node]["successes"] == 4
    new = sorted(set(g) - set(old))
    assert new and f"new nodes: {' '.join(map(str, new))}" in out
    # the new branch hangs under the node and ends in a success
    leaf = max(new, key=lambda n: g.nodes[n]["depth"])
    assert node in path_to(g, leaf) and g.nodes[leaf]["terminal_rewards"] == [1.0] * 4
    _check_counts(g)
    assert g.graph["mcts_iterations"] == 200 and g.graph["best_path"][-1] == leaf
    # provenance
    explored = store.trajectories(source="explore")
    assert len(explored) == 4 and all(t.success for t in explored)
    meta = explored[0].meta
    assert meta["explore"]["node"] == node and meta["explore"]["tree_id"] == f"shop/{TASK}"
    assert meta["policy"] == "expert" and meta["sampling"].startswith("greedy")
    runs = store.runs(kind="explore")
    assert len(runs) == 1 and runs.iloc[0]["status"] == "finished"
    # the prefix is the stored one
    first = store.trajectories(source="collect")[0]
    assert [s.action for s in explored[0].steps[:2]] == [s.action for s in first.steps[:2]]


def test_paper_schedule_and_step_budget(store, capsys) -> None:
    _failed_tree(store)
    rc = main(["explore", "--env", "shop", "--task", TASK, "--node", "1", "--policy", "random", "-k", "5",
               "--schedule", "paper", "--max-steps", "2"])
    assert rc == 0
    explored = store.trajectories(source="explore")
    assert sorted(t.meta["sampling"] for t in explored) == sorted(
        ["greedy", "t0.7-p0.9", "t1-p0.8", "t1-p0.9", "t0.7-p0.9-2"])
    assert all(len(t.steps) <= 3 for t in explored)  # 1 prefix step + at most 2
    _check_counts(store.load_tree(f"shop/{TASK}").to_networkx())


def test_a_replay_mismatch_names_the_step_and_stores_nothing(store, capsys) -> None:
    _failed_tree(store)
    traj = store.trajectories(env="shop")[0]
    with store.connect() as con:  # as if the env had answered step 2 differently back then
        con.execute("UPDATE steps SET observation = 'something else' WHERE traj_id = ? AND idx = 1",
                    [traj.traj_id])
    before = store.counts()
    rc = main(["explore", "--env", "shop", "--task", TASK, "--node", "3", "--policy", "expert"])
    err = capsys.readouterr().err
    assert rc == 2 and "step 2" in err and "not deterministic" in err and len(err.strip().splitlines()) == 1
    after = store.counts()
    assert after["trajectories"] == before["trajectories"] and after["nodes"] == before["nodes"]


@pytest.mark.parametrize(("args", "needle"), [
    (["--node", "99"], "no node 99"),
    (["--task", "train_7"], "no tree 'shop/train_7'"),
    (["-k", "0"], "0 is outside 1.."),  # argparse's range check, one line
    (["--env", "nope"], "unknown env"),
])
def test_bad_input_is_one_line(store, capsys, args, needle) -> None:
    _failed_tree(store)
    base = {"--env": "shop", "--task": TASK, "--node": "1", "--policy": "expert"}
    flags = dict(base)
    extra = []
    for i in range(0, len(args), 2):
        if args[i] in flags:
            flags[args[i]] = args[i + 1]
        else:
            extra += args[i:i + 2]
    try:
        rc = main(["explore", *[x for kv in flags.items() for x in kv], *extra])
    except SystemExit as exc:  # an argument argparse refuses: its usage line, then one error line
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and sum(": error:" in line for line in err.splitlines()) == 1
    assert "Traceback" not in err


def test_the_end_of_an_episode_cannot_be_explored(store, capsys) -> None:
    _failed_tree(store)
    g = store.load_tree(f"shop/{TASK}").to_networkx()
    leaf = max(g, key=lambda n: g.nodes[n]["depth"])
    rc = main(["explore", "--env", "shop", "--task", TASK, "--node", str(leaf), "--policy", "expert"])
    assert rc == 2 and "ends its episode" in capsys.readouterr().err


def test_shop_expert_replans_from_every_page(store) -> None:
    """The re-planned expert wins from the search page (= the gold plan), a results page, a wrong
    product, a detail page and a half-chosen product."""
    env = make_env("shop")
    gold = env.expert(TASK)
    env.reset(TASK)
    assert [s.action for s in env.replan()] == [s.action for s in gold]
    for detour in (["search[red]"], ["search[red]", "click[next >]"], [gold[0].action, "click[back to search]"],
                   [a.action for a in gold[:2]] + ["click[features]"], [a.action for a in gold[:-1]]):
        env.reset(TASK)
        for a in detour:
            env.step(a)
        res = None
        for _ in range(12):
            plan = env.replan()
            res = env.step(plan[0].action)
            if res.done:
                break
        assert res is not None and res.done and res.reward == 1.0, detour


def test_explore_as_a_background_job(store) -> None:
    from core.explore import ExploreSpec
    from core.explore_job import start_job
    from core.jobs import FINISHED, job_status, list_jobs

    _failed_tree(store)
    job = start_job(ExploreSpec("shop", TASK, 2, "expert", k=2), store)
    deadline = time.monotonic() + 180
    while job_status(job)["status"] not in FINISHED and time.monotonic() < deadline:
        time.sleep(0.5)
    status = job_status(job)
    assert status["status"] == "succeeded", status
    assert status["step"] == 2 and status["new_nodes"] and status["rewards"] == [1.0, 1.0]
    g = store.load_tree(f"shop/{TASK}").to_networkx()
    assert set(status["new_nodes"]) <= set(g) and g.nodes[0]["successes"] == 2
    assert list_jobs(store).set_index("job_id").loc[job, "kind"] == "explore"


@pytest.mark.slow
def test_sciworld_expert_continues_its_gold_path(store, capsys) -> None:
    from core.agents.scripted import ExpertPolicy

    task = "lifespan-longest-lived_1"
    policy = ExpertPolicy("sciworld")
    try:
        collect(store, "sciworld", policy, [task], batch_size=1, max_steps=3, progress=False)  # cut short
    finally:
        policy.close()
    store.save_trees(build_trees(store.trajectories(env="sciworld")))
    # two continuations in one JVM: its second load lists a room's objects in another order
    rc = main(["explore", "--env", "sciworld", "--task", task, "--node", "2", "--policy", "expert", "-k", "2"])
    assert rc == 0 and "2 continuations, 2 successful" in capsys.readouterr().out
    _check_counts(store.load_tree(f"sciworld/{task}").to_networkx())
    # off the gold path (a random step first): the expert cannot plan, and says so in one line
    collect(store, "sciworld", RandomPolicy(3), [task], batch_size=1, max_steps=2, progress=False,
            run_id="run-random")
    store.save_trees(build_trees(store.trajectories(env="sciworld")))
    g = store.load_tree(f"sciworld/{task}").to_networkx()
    off = next(n for n in g if g.nodes[n]["depth"] == 1 and g.nodes[n]["successes"] == 0)
    rc = main(["explore", "--env", "sciworld", "--task", task, "--node", str(off), "--policy", "expert",
               "-k", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "gold path" in err
