"""Collection into a real store: expert and random policies, lockstep batching, workers, resume."""

from __future__ import annotations

import json

import pytest

from core.agents.base import PAPER_SCHEDULE, Policy, Request
from core.agents.prompt import env_prefix, step_messages, task_message
from core.agents.scripted import ExpertPolicy, RandomPolicy
from core.cli import main
from core.collect import collect
from core.envs import UnknownEnvError, make_env
from core.errors import UserError
from core.trajectory import Step
from core.tree import build_trees

TASKS = [f"train_{i}" for i in range(12)]


class CountingExpert(ExpertPolicy):
    """The expert, recording the batch size of every call; optionally Ctrl-C on call `stop_at`."""

    def __init__(self, stop_at: int | None = None) -> None:
        super().__init__("shop")
        self.batches: list[int] = []
        self.stop_at = stop_at
        self.requests: list[Request] = []

    def act(self, requests: list[Request]) -> list[str]:
        self.batches.append(len(requests))
        self.requests += requests
        if self.stop_at is not None and len(self.batches) == self.stop_at:
            raise KeyboardInterrupt
        return super().act(requests)


def _episodes(store, run_id: str) -> list[tuple]:
    return sorted((t.task_id, t.meta["sampling"], tuple((s.action, s.observation, s.reward) for s in t.steps),
                   t.reward) for t in store.trajectories(run_id=run_id))


def test_expert_collection_fills_the_store(store) -> None:
    policy = CountingExpert()
    res = collect(store, "shop", policy, TASKS, batch_size=5, progress=False)
    assert (res.n_episodes, res.avg_reward, res.success_rate, res.status) == (12, 1.0, 1.0, "finished")
    # lockstep: one act call per step for all live episodes, never more than the batch size
    assert max(policy.batches) == 5 and sum(policy.batches) == sum(
        len(t.steps) for t in store.trajectories(run_id=res.run_id))
    trajs = store.trajectories(run_id=res.run_id)
    assert sorted(t.traj_id for t in trajs) == sorted(res.traj_ids)
    # the prompt: env prefix (role, "OK", one-shot), the task message, then the turns so far
    prefix = env_prefix("shop")
    first, later = policy.requests[0], next(r for r in policy.requests if len(r.history) == 2)
    assert first.messages == [*prefix, {"role": "user", "content": task_message(
        first.instruction, next(t for t in trajs if t.task_id == first.task_id).meta["initial_observation"])}]
    assert later.messages[len(prefix) + 1:] == step_messages(later.history)
    assert later.valid_actions and all(a.startswith("click[") for a in later.valid_actions)
    env = make_env("shop")
    for t in trajs:
        first_obs, instruction = env.reset(t.task_id)
        assert (t.model, t.source, t.success, t.instruction) == ("expert", "collect", True, instruction)
        assert t.meta["initial_observation"] == first_obs and t.meta["sampling"] == "greedy"
        assert [s.action for s in t.steps] == [s.action for s in env.expert(t.task_id)]
        assert all(s.thought for s in t.steps) and t.steps[-1].reward == 1.0
        assert (t.temperature, t.top_p) == (0.0, 1.0)
    run = store.runs().set_index("run_id").loc[res.run_id]
    assert (run["kind"], run["policy"], run["model"], run["status"]) == ("collect", "expert", "expert", "finished")
    assert json.loads(run["settings"])["batch_size"] == 5
    n_steps = store.query("SELECT count(*) AS n FROM steps")["n"][0]
    assert n_steps == sum(len(t.steps) for t in trajs)
    assert set(store.tasks(env="shop")["task_id"]) == set(TASKS)


def test_random_policy_with_the_paper_schedule(store) -> None:
    res = collect(store, "shop", RandomPolicy(seed=1), TASKS[:5], PAPER_SCHEDULE, max_steps=8,
                  source="eval", model="rand-model", progress=False)
    trajs = store.trajectories(run_id=res.run_id)
    assert res.n_episodes == len(trajs) == 20
    assert {(t.temperature, t.top_p) for t in trajs} == {(0.0, 1.0), (0.7, 0.9), (1.0, 0.8), (1.0, 0.9)}
    assert {t.meta["sampling"] for t in trajs} == {s.name() for s in PAPER_SCHEDULE}
    assert all(len(t.steps) <= 8 and t.model == "rand-model" and t.source == "eval" for t in trajs)
    assert store.runs().set_index("run_id").loc[res.run_id, "kind"] == "eval"
    # episodes of one task differ between settings (each has its own seed), and rewards are the env's
    assert len({tuple(t.actions) for t in trajs if t.task_id == TASKS[0]}) > 1
    assert all(t.reward == t.steps[-1].reward for t in trajs)
    # the random policy does not depend on batching
    again = collect(store, "shop", RandomPolicy(seed=1), TASKS[:5], PAPER_SCHEDULE, max_steps=8,
                    batch_size=3, progress=False)
    assert [e[1:] for e in _episodes(store, again.run_id)] == [e[1:] for e in _episodes(store, res.run_id)]


def test_trajectories_come_back_in_collection_order(store) -> None:
    """Episodes finish in another order, and one flush stores many at one created_at; the store
    still lists a run by task, then schedule order, so the same seed builds the same trees."""
    runs = [collect(store, "shop", RandomPolicy(seed=1), TASKS[:5], PAPER_SCHEDULE, max_steps=8,
                    batch_size=bs, flush_seconds=1e9, progress=False) for bs in (3, 20)]
    expected = [(t, s.name()) for t in TASKS[:5] for s in PAPER_SCHEDULE]
    for res in runs:
        trajs = store.trajectories(run_id=res.run_id)
        assert [(t.task_id, t.meta["sampling"]) for t in trajs] == expected
        assert [t.meta["seq"] for t in trajs] == list(range(len(expected)))
        assert store.trajectory_index(run_id=res.run_id)["traj_id"].tolist() == [t.traj_id for t in trajs]
    a, b = ([t.to_networkx() for t in build_trees(store.trajectories(run_id=res.run_id))] for res in runs)
    assert [[(n, d["action"], d["visits"]) for n, d in g.nodes(data=True)] for g in a] == \
        [[(n, d["action"], d["visits"]) for n, d in g.nodes(data=True)] for g in b]


class Mumbler(Policy):
    name = "mumbler"

    def act(self, requests: list[Request]) -> list[str]:
        return ["I am not sure\nwhat to do here" for _ in requests]


def test_unparsable_replies_become_invalid_steps(store) -> None:
    res = collect(store, "shop", Mumbler(), TASKS[:2], max_steps=3, progress=False)
    for t in store.trajectories(run_id=res.run_id):
        assert len(t.steps) == 3 and t.reward == 0.0 and not t.success
        assert all(s.action == "I am not sure\nwhat to do here" and s.thought == "" for s in t.steps)
        assert all(s.observation.startswith("Invalid action") for s in t.steps)
        assert t.meta["n_invalid"] == 3 and t.meta["truncated"]


def test_interrupt_keeps_finished_episodes_and_resume_skips_them(store) -> None:
    with pytest.raises(KeyboardInterrupt):
        collect(store, "shop", CountingExpert(stop_at=12), TASKS, batch_size=4, run_id="run-x",
                progress=False)
    kept = store.trajectories(run_id="run-x")
    assert 0 < len(kept) < len(TASKS)
    assert store.runs().set_index("run_id").loc["run-x", "status"] == "interrupted"
    with pytest.raises(UserError, match="--resume run-x"):
        collect(store, "shop", CountingExpert(), TASKS, run_id="run-x", progress=False)
    res = collect(store, "shop", CountingExpert(), TASKS, run_id="run-x", resume=True, progress=False)
    assert res.n_episodes == len(TASKS) - len(kept)
    all_trajs = store.trajectories(run_id="run-x")
    assert sorted(t.task_id for t in all_trajs) == sorted(TASKS)  # each task exactly once
    assert store.runs().set_index("run_id").loc["run-x", "status"] == "finished"
    done = collect(store, "shop", CountingExpert(), TASKS, run_id="run-x", resume=True, progress=False)
    assert done.n_episodes == 0


def test_workers_give_the_same_trajectories(store) -> None:
    one = collect(store, "shop", ExpertPolicy("shop"), TASKS[:8], batch_size=4, progress=False)
    two = collect(store, "shop", ExpertPolicy("shop"), TASKS[:8], batch_size=4, workers=2, progress=False)
    assert two.avg_reward == 1.0
    assert _episodes(store, one.run_id) == _episodes(store, two.run_id)


def test_bad_input_is_a_clear_error(store) -> None:
    with pytest.raises(UnknownEnvError, match="has no task.*'nope'"):
        collect(store, "shop", RandomPolicy(), ["nope"], progress=False)
    with pytest.raises(UnknownEnvError, match="available: .*shop"):
        collect(store, "no-such-env", RandomPolicy(), ["x"], progress=False)
    with pytest.raises(UserError, match="no run"):
        collect(store, "shop", RandomPolicy(), TASKS, run_id="run-none", resume=True, progress=False)


def test_cli_collect_and_replay(store, capsys) -> None:
    assert main(["collect", "--env", "shop", "--policy", "expert", "--tasks", "3"]) == 0
    assert main(["collect", "--env", "shop", "--policy", "random", "--split", "test", "--tasks", "2",
                 "--samples", "2", "--temperature", "1", "--top-p", "0.9", "--env-arg", "max_steps=5"]) == 0
    out = capsys.readouterr().out
    assert "3 episodes, average reward 1.000" in out and "4 episodes" in out
    idx = store.trajectory_index()
    assert len(idx) == 7 and set(idx["model"]) == {"expert", "random"}
    assert main(["replay"]) == 0
    assert "replayed 7 trajectories: 0 mismatches" in capsys.readouterr().out
    assert main(["collect", "--env", "shop", "--policy", "expert", "--task-ids", "bogus"]) == 2
    assert "has no task" in capsys.readouterr().err
    assert main(["collect", "--env", "shop", "--policy", "random", "--samples", "3"]) == 2
    assert "--temperature" in capsys.readouterr().err


class Crasher(ExpertPolicy):
    def __init__(self) -> None:
        super().__init__("shop")
        self.calls = 0

    def act(self, requests: list[Request]) -> list[str]:
        self.calls += 1
        if self.calls == 7:
            raise RuntimeError("model fell over")
        return super().act(requests)


def test_a_failing_policy_closes_the_workers_and_marks_the_run(store) -> None:
    import multiprocessing

    with pytest.raises(RuntimeError, match="fell over"):
        collect(store, "shop", Crasher(), TASKS, batch_size=3, workers=2, run_id="run-f", progress=False)
    assert multiprocessing.active_children() == []
    assert store.runs().set_index("run_id").loc["run-f", "status"] == "failed"
    assert len(store.trajectories(run_id="run-f")) >= 3  # the first batch finished before the crash


def test_random_policy_without_valid_actions_clicks_a_word_it_saw() -> None:
    req = Request(env="x", task_id="t", instruction="buy a red hat", messages=[],
                  history=[Step(action="look", observation="You see a door and a lamp.")])
    reply = RandomPolicy(seed=3).act([req])[0]
    assert reply.startswith("Thought: ") and reply.split("Action: ")[1] in {
        f"click[{w}]" for w in ("you", "see", "a", "door", "and", "lamp")}
    templated = Request(env="x", task_id="t", instruction="buy a red hat", messages=[],
                        valid_actions=["search[...]"])
    words = RandomPolicy().act([templated])[0].split("Action: search[")[1].rstrip("]").split()
    assert 1 <= len(words) <= 4 and set(words) <= {"buy", "a", "red", "hat"}


def test_a_pool_that_cannot_run_is_one_line(store, monkeypatch) -> None:
    import sys

    from core.env_slots import Pool
    from core.slot_pools import open_slots

    for pool, says in ((Pool(2, "local"), "--executor local runs one env worker"),
                       (Pool(1, "process", "head:6379"), "--ray-address needs --executor ray"),
                       (Pool(1, "gpu"), "unknown executor 'gpu'"), (Pool(1, recycle=-1), "--recycle must be >= 0")):
        with pytest.raises(UserError, match=says):
            collect(store, "shop", RandomPolicy(), TASKS[:1], pool=pool, progress=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    monkeypatch.delitem(sys.modules, "core.ray_slots", raising=False)
    with pytest.raises(UserError, match=r"^--executor ray needs Ray: pip install 'w2stree\[ray\]'$"):
        open_slots("shop", {}, Pool(2, "ray"))
    assert main(["collect", "--env", "shop", "--policy", "expert", "--tasks", "2", "--workers", "2",
                 "--executor", "ray"]) == 2
    assert store.trajectory_index().empty  # nothing ran, nothing stored


def test_recycling_rebuilds_the_env_and_keeps_the_episodes(store) -> None:
    from core.env_slots import LocalSlots, Pool

    plain = collect(store, "shop", ExpertPolicy("shop"), TASKS, batch_size=2, progress=False)
    recycled = collect(store, "shop", ExpertPolicy("shop"), TASKS, batch_size=2, pool=Pool(recycle=2),
                       progress=False)
    assert _episodes(store, plain.run_id) == _episodes(store, recycled.run_id)
    slots = LocalSlots("shop", {}, recycle=2)
    first = slots.env(0)
    slots.reset([(0, TASKS[0])])
    slots.reset([(0, TASKS[1])])
    assert slots.env(0) is first and slots.envs.rebuilt == 0
    slots.reset([(0, TASKS[2])])  # the third episode of slot 0: a fresh env
    assert slots.env(0) is not first and slots.envs.rebuilt == 1
    slots.close()
