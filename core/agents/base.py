"""The policy interface: a policy answers many episodes' prompts in one call (batched)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

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

    @abstractmethod
    def act(self, requests: list[Request]) -> list[str]:
        """One reply per request, in order."""

    def close(self) -> None:
        """Release resources."""
