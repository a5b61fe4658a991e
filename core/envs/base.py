"""The environment interface every w2stree environment implements, and the registry by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.trajectory import Task


class UnknownEnvError(KeyError):
    """An environment or task name that does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it a plain sentence
        return str(self.args[0])


@dataclass
class StepResult:
    """What `Env.step` returns."""

    observation: str
    reward: float
    done: bool
    info: dict[str, Any] = field(default_factory=dict)  # may hold "score", "success", "invalid"


@dataclass
class ExpertStep:
    """One step of an expert (gold) demonstration."""

    thought: str
    action: str


class Env(ABC):
    """An interactive text environment.

    `reset` starts a task and returns (first observation, instruction); `step` plays one action.
    Invalid or malformed actions are no-ops whose observation says so (info["invalid"] = True);
    they never raise, and they count as a step.
    """

    name: str = ""
    #: one-line description of the ReAct role, used as the first prompt turn
    system_prompt: str = ""

    @abstractmethod
    def tasks(self, split: str = "train") -> list[Task]:
        """The tasks of a split (train / dev / test, or env-specific named splits)."""

    @abstractmethod
    def reset(self, task_id: str) -> tuple[str, str]:
        """Start `task_id`; return (first observation, instruction)."""

    @abstractmethod
    def step(self, action: str) -> StepResult:
        """Play one action."""

    def valid_actions(self) -> list[str] | None:
        """The actions valid now, where the environment knows them."""
        return None

    def max_steps(self, task_id: str | None = None) -> int:
        """The step limit of a task."""
        return 30

    def expert(self, task_id: str) -> list[ExpertStep] | None:
        """The gold demonstration of a task, where the environment has one."""
        return None

    def splits(self) -> list[str]:
        return ["train", "test"]

    @staticmethod
    def trajectory_meta(task_id: str) -> dict[str, Any]:
        """Extra `meta` fields every trajectory of a task carries (none by default)."""
        return {}

    def close(self) -> None:
        """Release resources (processes, JVMs)."""

    def __enter__(self) -> Env:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_REGISTRY: dict[str, Callable[..., Env]] = {}


def register_env(name: str) -> Callable[[Callable[..., Env]], Callable[..., Env]]:
    """Class decorator: make an environment constructible by name."""

    def deco(factory: Callable[..., Env]) -> Callable[..., Env]:
        _REGISTRY[name] = factory
        return factory

    return deco


def list_envs() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def make_env(name: str, **kwargs: Any) -> Env:
    """Build an environment by registry name (`shop`, `sciworld`, `alfworld`, `webshop`)."""
    _load_builtin()
    if name not in _REGISTRY:
        raise UnknownEnvError(f"unknown env {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


def _load_builtin() -> None:
    # Importing the modules registers them; heavy dependencies load lazily inside each env.
    import importlib

    for mod in ("shop", "sciworld", "alfworld", "webshop"):
        try:
            importlib.import_module(f"core.envs.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"core.envs.{mod}":
                raise
