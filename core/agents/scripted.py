"""Scripted policies: the expert (replays an env's gold demonstration), a random baseline, and a
noisy expert (a stand-in weak explorer that needs no training)."""

from __future__ import annotations

import random
import re
import zlib
from typing import Any

from core.agents.base import Policy, Request
from core.agents.prompt import format_assistant
from core.envs.base import Env, ExpertStep, make_env
from core.errors import UserError

_TEMPLATE_RE = re.compile(r"^(\w+)\[\.\.\.\]$")  # "search[...]": an action with a free argument
_WORD_RE = re.compile(r"[a-z0-9]+")


class ExpertPolicy(Policy):
    """Plays `env.expert(task_id)` step by step: turn k of an episode gets the k-th gold step.

    For environments whose expert is a fixed action sequence per task (shop, ScienceWorld's
    gold paths). The env instance here only answers `expert()`; it is built on first use.
    """

    name = "expert"
    batched = False

    def __init__(self, env_name: str, **env_kwargs: Any) -> None:
        self.env_name = env_name
        self.env_kwargs = env_kwargs
        self._env: Env | None = None
        self._plans: dict[str, list[ExpertStep]] = {}

    def plan(self, task_id: str) -> list[ExpertStep]:
        """The gold steps of a task (cached)."""
        if task_id not in self._plans:
            if self._env is None:
                self._env = make_env(self.env_name, **self.env_kwargs)
            plan = self._env.expert(task_id)
            if plan is None:
                raise UserError(f"env {self.env_name!r} has no expert demonstration for task {task_id!r}; "
                                "use --policy random or a model")
            self._plans[task_id] = plan
        return self._plans[task_id]

    def act(self, requests: list[Request]) -> list[str]:
        out = []
        for req in requests:
            plan = self.plan(req.task_id)
            k = len(req.history)
            if k < len(plan):
                out.append(format_assistant(plan[k].thought, plan[k].action))
            else:  # the env did not end where the demonstration does: say so, act invalidly
                out.append("Thought: the demonstration is over.\nAction: ")
        return out

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


class RandomPolicy(Policy):
    """Uniform over the valid actions; a template such as `search[...]` gets 1-4 random words of
    the instruction. Without valid actions it clicks a random word of the last observation.

    Each reply depends only on (seed, episode seed, task, step), not on how requests are batched.
    """

    name = "random"
    batched = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def act(self, requests: list[Request]) -> list[str]:
        return [self._one(req) for req in requests]

    def _one(self, req: Request) -> str:
        rng = random.Random(f"random-policy/{self.seed}/{req.seed}/{req.task_id}/{len(req.history)}")
        words = _WORD_RE.findall(req.instruction.lower()) or ["item"]
        if req.valid_actions:
            action = rng.choice(req.valid_actions)
            m = _TEMPLATE_RE.match(action)
            if m:
                action = f"{m.group(1)}[{' '.join(rng.sample(words, min(len(words), rng.randint(1, 4))))}]"
        else:
            last = req.history[-1].observation if req.history else ""
            action = f"click[{rng.choice(_WORD_RE.findall(last.lower()) or words)}]"
        return format_assistant("I will try something at random.", action)


class NoisyExpertPolicy(Policy):
    """A stand-in weak explorer without any training: the expert's step, replaced by a random
    valid action with probability `noise x temperature` (greedy episodes are pure expert). It
    yields the mix of successes and failures that makes trees branch, in seconds."""

    name = "noisy-expert"
    batched = False

    def __init__(self, env: str, noise: float = 0.25, seed: int = 0, **env_kwargs: Any) -> None:
        self.expert, self.random = ExpertPolicy(env, **env_kwargs), RandomPolicy(seed)
        self.noise, self.seed = noise, seed

    def act(self, requests: list[Request]) -> list[str]:
        expert, rand = self.expert.act(requests), self.random.act(requests)
        out = []
        for r, e, x in zip(requests, expert, rand, strict=True):
            draw = zlib.crc32(f"{self.seed}/{r.seed}/{r.task_id}/{len(r.history)}".encode()) / 2**32
            out.append(x if draw < self.noise * r.sampling.temperature else e)
        return out

    def close(self) -> None:
        self.expert.close()
