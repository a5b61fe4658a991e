"""The policy interface: a policy answers many episodes' prompts in one call (batched), and a
policy that can also answer one request on its own (a model server) says so (`independent`), so
that the episode runner lets its episodes advance independently (`core.episodes`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from core.errors import UserError
from core.trajectory import Step


@dataclass(frozen=True)
class Sampling:
    """One decoding setting. temperature 0 means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    label: str = ""

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def name(self) -> str:
        return self.label or ("greedy" if self.greedy else f"t{self.temperature:g}-p{self.top_p:g}")


#: The reference's exploration schedule: greedy, then (T, top-p) = (0.7, 0.9), (1.0, 0.8), (1.0, 0.9).
#: The released reference config forgets top-p; here both are always set.
PAPER_SCHEDULE: tuple[Sampling, ...] = (
    Sampling(0.0, 1.0, "greedy"),
    Sampling(0.7, 0.9),
    Sampling(1.0, 0.8),
    Sampling(1.0, 0.9),
)


def sampling_schedule(k: int, base: Sequence[Sampling] = PAPER_SCHEDULE) -> tuple[Sampling, ...]:
    """K decoding settings from `base` (the one rule of collect, explore and the pipeline): its
    first K as they are; beyond them its sampled settings again (all of them when none samples),
    round r under the label `<name>-r`, so that every label draws its own samples and the first K
    of a larger K are the K of a smaller one (the pipeline's K sweep takes them by label)."""
    if k < 1:
        raise UserError(f"trajectories per task must be at least 1 (got {k})")
    if not base:
        raise UserError("a sampling schedule needs at least one setting")
    out = list(base[:k])
    again = [s for s in base if not s.greedy] or list(base)
    for i in range(k - len(out)):
        s = again[i % len(again)]
        out.append(Sampling(s.temperature, s.top_p, f"{s.name()}-{i // len(again) + 2}"))
    return tuple(out)


@dataclass
class Request:
    """One live episode asking for its next turn."""

    env: str
    task_id: str
    instruction: str
    messages: list[dict[str, str]]  # the full chat so far (prefix + task + turns)
    history: list[Step] = field(default_factory=list)
    valid_actions: list[str] | None = None
    sampling: Sampling = Sampling()
    seed: int = 0


class Policy(ABC):
    """Answers a batch of requests with one reply each (`Thought: ...\\nAction: ...`)."""

    name: str = "policy"
    #: Whether answering many requests in one call is faster than one at a time (batched
    #: generation). A policy that is not (the scripted ones) explores an env whose instances are
    #: processes one episode at a time (`core.episodes.episode_slots`).
    batched: bool = True
    #: Whether `submit` answers one request on its own, so that each episode advances as soon as
    #: its own reply is in instead of waiting for a whole batch (a policy on model servers).
    independent: bool = False

    @abstractmethod
    def act(self, requests: list[Request]) -> list[str]:
        """One reply per request, in order."""

    def run_settings(self) -> dict[str, Any]:
        """What a stored run records of where this policy ran (`Run.settings`): nothing by default;
        a server policy its servers."""
        return {}

    def submit(self, request: Request) -> Future[str]:
        """One reply to `request`, as a future that another thread completes (only a policy with
        `independent` True answers this way)."""
        raise NotImplementedError(f"policy {self.name!r} answers batches only (independent is False)")

    def close(self) -> None:
        """Release resources."""
