"""The replay guarantee: stored trajectories reach their stored rewards (and scores) again."""

from __future__ import annotations

import shutil

import pytest

from core.agents.base import PAPER_SCHEDULE
from core.agents.scripted import ExpertPolicy, RandomPolicy
from core.cli import main
from core.collect import collect
from core.replay import replay
from core.trajectory import Step, Trajectory

TASKS = [f"test_{i}" for i in range(6)]


@pytest.fixture
def collected(store):
    collect(store, "shop", ExpertPolicy("shop"), TASKS, progress=False)
    collect(store, "shop", RandomPolicy(), TASKS, PAPER_SCHEDULE, progress=False)
    # another catalogue: replay must rebuild the env with the kwargs the run used
    collect(store, "shop", ExpertPolicy("shop", seed=7, n_products=300), TASKS[:2], progress=False,
            env_kwargs={"seed": 7, "n_products": 300})
    return store


def test_collected_trajectories_replay_exactly(collected) -> None:
    report = replay(collected)
    assert (report.checked, report.mismatches, report.skipped) == (6 + 24 + 2, [], [])
    assert report.ok
    assert replay(collected, limit=5).checked == 5


def test_a_tampered_reward_or_score_is_caught(collected) -> None:
    expert = collected.trajectories(model="expert")[0]
    random_traj = next(t for t in collected.trajectories(model="random") if len(t.steps) > 2)
    collected.query("UPDATE trajectories SET reward = 0.25 WHERE traj_id = ?", [expert.traj_id])
    collected.query("UPDATE steps SET score = 50 WHERE traj_id = ? AND idx = 1", [random_traj.traj_id])
    report = replay(collected)
    found = {(m.traj_id, m.step, m.field, m.expected, m.got) for m in report.mismatches}
    assert found == {
        (expert.traj_id, len(expert.steps) - 1, "reward", 0.25, 1.0),
        (random_traj.traj_id, 1, "score", 50.0, None),  # the shop reports no score
    }
    assert main(["replay", "--env", "shop"]) == 1


def test_a_changed_action_is_caught(collected) -> None:
    expert = collected.trajectories(model="expert")[0]
    collected.query("UPDATE steps SET action = 'click[< prev]' WHERE traj_id = ? AND idx = 2",
                    [expert.traj_id])
    [m] = replay(collected).mismatches
    assert (m.traj_id, m.field, m.expected) == (expert.traj_id, "reward", 1.0) and m.got < 1.0


def test_unavailable_envs_and_unknown_tasks_are_skipped(store) -> None:
    store.add_trajectories([
        Trajectory(env="textcraft", task_id="t1", instruction="x", steps=[Step("go")], reward=1.0,
                   source="import", traj_id="a"),
        Trajectory(env="shop", task_id="fixed_9", instruction="x", steps=[Step("click[buy now]")],
                   reward=0.0, source="import", traj_id="b"),
        Trajectory(env="shop", task_id="train_1", instruction="x", steps=[Step("search[x]")],
                   reward=0.0, source="import", meta={"env_kwargs": {"n_categories": 2}}, traj_id="c"),
    ])
    report = replay(store)
    assert report.checked == 0 and report.ok
    reasons = dict(report.skipped)
    assert "'textcraft' is not available" in reasons["a"]
    assert "has no task 'fixed_9'" in reasons["b"]
    assert "cannot be built here" in reasons["c"] and "n_categories" in reasons["c"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="ScienceWorld needs Java 17")
def test_sciworld_expert_trajectories_replay_with_their_scores(store) -> None:
    from core.envs import make_env

    with make_env("sciworld") as env:  # a task with a short gold path (~15 steps)
        task_id = next(t.task_id for t in env.tasks("dev") if t.task_id.startswith("find-animal_"))
    policy = ExpertPolicy("sciworld")
    try:
        res = collect(store, "sciworld", policy, [task_id], progress=False)
    finally:
        policy.close()  # its env holds a JVM
    [traj] = store.trajectories(run_id=res.run_id)
    assert traj.success and all(s.score is not None for s in traj.steps)
    report = replay(store)
    assert report.checked == 1 and report.ok
    store.query("UPDATE steps SET score = score + 1 WHERE traj_id = ? AND idx = 0", [traj.traj_id])
    [m] = replay(store).mismatches
    assert (m.step, m.field) == (0, "score")
