"""Helpers for the env-pool tests (`core.env_slots`, `core.ray_slots`): what a run played, a few
shop episodes run in given slots, and the shop expert that kills a worker mid-run."""

from __future__ import annotations

from collections.abc import Callable

from core.agents.base import Request, Sampling
from core.agents.scripted import ExpertPolicy
from core.env_slots import EnvSlots
from core.episodes import Episode, reset_starter, run_episodes
from core.trajectory import Trajectory

TASKS = [f"train_{i}" for i in range(8)]


def steps(trajs: list[Trajectory]) -> list[tuple]:
    """What a run played, by its place in the run: task, sampling, every step, reward."""
    return sorted((t.meta["seq"], t.task_id, t.meta["sampling"], t.reward,
                   tuple((s.thought, s.action, s.observation, s.reward) for s in t.steps)) for t in trajs)


class KillingExpert(ExpertPolicy):
    """The shop expert that calls `kill` (which ends a worker) while it answers call `at`: the
    episodes live on that worker are mid-way."""

    def __init__(self, kill: Callable[[], None], at: int) -> None:
        super().__init__("shop")
        self.kill, self.at, self.calls = kill, at, 0

    def act(self, requests: list[Request]) -> list[str]:
        self.calls += 1
        if self.calls == self.at:
            self.kill()
        return super().act(requests)


def run_shop(slots: EnvSlots, policy: ExpertPolicy, n: int) -> list[Episode]:
    """`n` shop episodes (tasks `TASKS` in turn, seq 0..n-1), four at once in `slots`: the ended ones."""
    ended: list[Episode] = []
    episodes = [Episode(TASKS[i % len(TASKS)], Sampling(), i, i) for i in range(n)]
    run_episodes(policy, "shop", episodes, slots, 4, start=reset_starter("shop", slots), on_end=ended.append)
    return ended


def played(episodes: list[Episode]) -> list[tuple]:
    """What episodes played, by seq: task, every step."""
    return sorted((ep.seq, ep.task_id, tuple((s.action, s.observation, s.reward) for s in ep.steps))
                  for ep in episodes)
