"""The data types every part of w2stree passes around."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any


def new_id(prefix: str = "") -> str:
    """A short random id, optionally prefixed (`run-1a2b3c4d5e6f`)."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def tree_id(env: str, task_id: str) -> str:
    """The id of the tree of task `task_id` of env `env` (its canonical name): `<env>/<task id>`,
    the one way a tree id is made. Nothing parses one back: a tree, its nodes and its pairs carry
    `env` and `task_id` beside it."""
    return f"{env}/{task_id}"


@dataclass
class Task:
    """One task of an environment."""

    env: str
    task_id: str
    split: str
    instruction: str


@dataclass
class Step:
    """One agent turn: what it thought and did, and what the environment answered."""

    action: str
    observation: str = ""
    thought: str = ""
    reward: float = 0.0
    score: float | None = None  # ScienceWorld's 0-100 progress after the step


@dataclass
class Trajectory:
    """One episode of one task, successful or failed."""

    env: str
    task_id: str
    instruction: str
    steps: list[Step]
    reward: float
    success: bool | None = None
    source: str = "collect"  # collect / import / eval
    run_id: str = ""
    model: str = ""
    temperature: float | None = None
    top_p: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    traj_id: str = field(default_factory=lambda: new_id("t-"))

    def __post_init__(self) -> None:
        if self.success is None:
            self.success = self.reward >= 1.0

    @property
    def actions(self) -> list[str]:
        return [s.action for s in self.steps]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        d = dict(d)
        d["steps"] = [s if isinstance(s, Step) else Step(**s) for s in d.get("steps", [])]
        return cls(**d)


@dataclass
class Run:
    """One collect / eval / import invocation."""

    run_id: str
    kind: str  # collect / eval / import
    env: str
    policy: str
    model: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Pair:
    """A TreeDPO preference pair cut at a branching node (or an ETO-style whole-trajectory pair).

    `prompt` is the shared conversation up to the branch (task message first, then alternating
    assistant `Thought/Action` and user `Observation` turns); `chosen` and `rejected` are the
    continuations, each starting with an assistant turn. The ReAct system prompt and one-shot
    example are not stored: training and export prepend them (core.agents.prompt).
    """

    env: str
    task_id: str
    prompt: list[dict[str, str]]
    chosen: list[dict[str, str]]
    rejected: list[dict[str, str]]
    chosen_value: float
    rejected_value: float
    granularity: str = "step"  # step / continuation / trajectory
    value_kind: str = "data"  # data / mcts / reward
    tree_id: str = ""
    node_id: int = -1
    chosen_node: int = -1
    rejected_node: int = -1
    chosen_success: bool = False
    rejected_success: bool = False
    pair_id: str = field(default_factory=lambda: new_id("p-"))

    @property
    def margin(self) -> float:
        return self.chosen_value - self.rejected_value
