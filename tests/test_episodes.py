"""The one episode runner (`core.episodes`): the slot rule, lockstep rounds in a few slots, and
trajectories that replay to their reward in a fresh env."""

from __future__ import annotations

from core.agents.base import Request, Sampling
from core.agents.scripted import ExpertPolicy
from core.env_slots import LocalSlots
from core.envs import make_env
from core.episodes import Episode, episode_slots, reset_starter, run_episodes
from core.trajectory import Step, Trajectory

TASKS = [f"train_{i}" for i in range(5)]


class CountingExpert(ExpertPolicy):
    """The shop's expert, recording the task ids of every call."""

    def __init__(self) -> None:
        super().__init__("shop")
        self.calls: list[list[str]] = []

    def act(self, requests: list[Request]) -> list[str]:
        self.calls.append([r.task_id for r in requests])
        return super().act(requests)


def _run(policy, episodes: list[Episode], width: int, max_steps: int | None = None, stop_after: int | None = None,
         slots: LocalSlots | None = None, start=None) -> tuple[list[Trajectory], bool]:
    slots = slots or LocalSlots("shop", {})
    ended: list[Trajectory] = []
    try:
        done = run_episodes(
            policy, "shop", episodes, slots, width, start=start or reset_starter("shop", slots, max_steps),
            on_end=lambda ep: ended.append(ep.trajectory("shop", run_id="r", source="collect", model="m",
                                                         policy=policy.name, env_kwargs={}, seed=3)),
            should_stop=None if stop_after is None else lambda: len(policy.calls) >= stop_after)
    finally:
        slots.close()
    return ended, done


def test_the_slot_rule_reads_the_registry_name_of_a_parameterised_env() -> None:
    assert episode_slots("sciworld") == 4
    assert episode_slots("sciworld?reward=best") == 4  # a sciworld with parameters: 4 JVMs, not 32
    assert episode_slots("sciworld?reward=best", workers=3) == 12
    assert episode_slots("alfworld?split=dev", workers=2) == 16
    assert episode_slots("sciworld?reward=best", workers=2, batched=False) == 2  # scripted: one per worker
    assert episode_slots("shop?n_products=300", workers=4) == 32
    assert episode_slots("shop", default=6, batched=False) == 6


def test_episodes_run_in_lockstep_in_their_slots_and_replay_to_their_reward() -> None:
    policy = CountingExpert()
    episodes = [Episode(t, Sampling(), seed=i, seq=i) for i, t in enumerate(TASKS)]
    trajs, done = _run(policy, episodes, width=2)
    assert done and sorted(t.meta["seq"] for t in trajs) == list(range(5))
    assert policy.calls[0] == ["train_0", "train_1"]  # one call answers every live episode
    assert max(len(c) for c in policy.calls) == 2  # never more live episodes than slots
    env = make_env("shop")
    for t in trajs:
        assert t.reward == 1.0 and t.success and not t.meta["truncated"] and t.meta["episode_seed"] == t.meta["seq"]
        obs, _ = env.reset(t.task_id)
        assert obs == t.meta["initial_observation"]
        for s in t.steps:
            res = env.step(s.action)
            assert (res.observation, res.reward) == (s.observation, s.reward)
        assert res.done and res.reward == t.reward  # the replayed episode reaches the stored reward


def test_the_step_cap_truncates_and_a_stop_drops_the_live_episodes() -> None:
    policy = CountingExpert()
    trajs, done = _run(policy, [Episode(t, Sampling(), 0, i) for i, t in enumerate(TASKS[:3])], width=3, max_steps=1)
    assert done and [len(t.steps) for t in trajs] == [1, 1, 1] and len(policy.calls) == 1
    assert all(t.meta["truncated"] and t.meta["step_limit"] == 1 and t.reward < 1.0 for t in trajs)
    policy = CountingExpert()
    trajs, done = _run(policy, [Episode(t, Sampling(), 0, i) for i, t in enumerate(TASKS)], width=5, stop_after=1)
    assert not done and trajs == [] and len(policy.calls) == 1


def test_an_episode_with_no_step_left_ends_without_asking_the_policy() -> None:
    """A prefix that reaches the step limit (explore from a node at the limit): the episode ends
    as its prefix, truncated, and the policy is never asked."""
    expert = make_env("shop").expert(TASKS[0])[:2]
    slots = LocalSlots("shop", {"max_steps": 2})
    prefix = [Step(e.action) for e in expert]

    def start(items: list[tuple[int, Episode]]) -> None:
        for s, ep in items:
            env = slots.env(s)
            obs, instruction = env.reset(ep.task_id)
            for p in prefix:
                p.observation = env.step(p.action).observation
            ep.begin("shop", instruction, obs, env.max_steps(ep.task_id), env.valid_actions(), prefix=prefix)

    policy = CountingExpert()
    trajs, done = _run(policy, [Episode(TASKS[0], Sampling(), 0, 0)], width=1, slots=slots, start=start)
    assert done and policy.calls == []
    assert [s.action for s in trajs[0].steps] == [e.action for e in expert] and trajs[0].meta["truncated"]
