"""The one episode runner (`core.episodes`): the slot rule, lockstep rounds in a few slots,
trajectories that replay to their reward in a fresh env, and an independent policy's episodes
advancing while another's reply is outstanding (also when a slot is lost meanwhile)."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

from core.agents.base import Request, Sampling
from core.agents.scripted import ExpertPolicy
from core.env_slots import LocalSlots, SlotsLost
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


class HeldExpert(ExpertPolicy):
    """The shop's expert answering each request on its own (`independent`): every reply is ready
    at once except the first one asked for task `held`, which arrives only when `release` is set
    (or after 20 s) and then reads `held_reply`."""

    independent = True

    def __init__(self, held: str, held_reply: str | None = None) -> None:
        super().__init__("shop")
        self.held, self.held_reply, self.release = held, held_reply, threading.Event()
        self.held_future: Future | None = None
        self.submitted: list[str] = []
        self._pool = ThreadPoolExecutor(1)

    def submit(self, request: Request) -> Future:
        self.submitted.append(request.task_id)
        reply = self.act([request])[0]
        if request.task_id == self.held and self.held_future is None:
            self.held_future = self._pool.submit(lambda: (self.release.wait(20), self.held_reply or reply)[1])
            return self.held_future
        done: Future = Future()
        done.set_result(reply)
        return done

    def close(self) -> None:
        self.release.set()
        self._pool.shutdown()
        super().close()


def _stored(trajs: list[Trajectory]) -> list[dict]:
    """The trajectories in run order, without their (random) ids."""
    return [{k: v for k, v in t.to_dict().items() if k != "traj_id"} for t in sorted(trajs, key=lambda t: t.meta["seq"])]


def test_an_independent_policys_episodes_advance_while_one_reply_is_held() -> None:
    """Task 0's first reply is held until the other four episodes have ended: they play every
    step meanwhile (two of them in the slots the first ones freed), and what is stored equals the
    lockstep run's."""
    policy = HeldExpert(TASKS[0])
    ended: list[str] = []
    slots = LocalSlots("shop", {})
    try:
        def on_end(ep: Episode) -> None:
            ended.append(ep.task_id)
            trajs.append(ep.trajectory("shop", run_id="r", source="collect", model="m", policy="expert",
                                       env_kwargs={}, seed=3))
            if len(ended) == len(TASKS) - 1:
                policy.release.set()  # before any reply came in for task 0, unless the others waited for it

        trajs: list[Trajectory] = []
        assert run_episodes(policy, "shop", [Episode(t, Sampling(), seed=i, seq=i) for i, t in enumerate(TASKS)],
                            slots, 3, start=reset_starter("shop", slots), on_end=on_end)
    finally:
        slots.close()
        policy.close()
    assert ended == TASKS[1:] + TASKS[:1]  # held task last: the others did not wait for its reply
    assert min(len(t.steps) for t in trajs) >= 3  # ... for several steps each
    assert policy.submitted.count(TASKS[0]) == len(trajs[-1].steps)  # one request per step, no repeat
    lockstep, _ = _run(CountingExpert(), [Episode(t, Sampling(), seed=i, seq=i) for i, t in enumerate(TASKS)], 3)
    assert _stored(trajs) == _stored(lockstep)


class LosingSlots(LocalSlots):
    """Local slots whose first step call reports `also` lost too (as a replaced Ray worker would):
    their envs are reset by the runner and their episodes start over."""

    def __init__(self, also: set[int]) -> None:
        super().__init__("shop", {})
        self.also, self.lost = also, False

    def run(self, ops):
        results = super().run(ops)
        if ops[0][1] == "step" and not self.lost:
            self.lost = True
            raise SlotsLost(self.also, results)
        return results


def test_a_lost_slot_drops_the_reply_its_episode_waits_for() -> None:
    """Slot 0's episode waits for a held reply when its slot is lost: it starts over and asks
    again; the stale reply (an invalid action) is never played, nothing waits for it, and every
    episode ends once, as in lockstep."""
    policy = HeldExpert(TASKS[0], held_reply="Thought: stale.\nAction: click[stale]")
    slots = LosingSlots({0})
    try:
        trajs, done = _run(policy, [Episode(t, Sampling(), seed=i, seq=i) for i, t in enumerate(TASKS[:3])], 2,
                           slots=slots)
        assert done and slots.lost and not policy.held_future.done()  # the run never waited for it
    finally:
        policy.close()
    lockstep, _ = _run(CountingExpert(), [Episode(t, Sampling(), seed=i, seq=i) for i, t in enumerate(TASKS[:3])], 2)
    assert _stored(trajs) == _stored(lockstep)
    first = next(t for t in trajs if t.task_id == TASKS[0])
    assert policy.submitted.count(TASKS[0]) == len(first.steps) + 1  # its first request asked twice
