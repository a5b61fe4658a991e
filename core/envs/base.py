"""The environment interface every w2stree environment implements, and the registry by name."""

from __future__ import annotations

import inspect
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import UserError
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


def rule_thought(action: str, rules: Sequence[tuple[re.Pattern[str], str]], fallback: str) -> str:
    """A short thought for an expert action whose env gives none: the template of the first rule
    whose pattern matches (filled with its groups, missing ones empty; the action itself when the
    pattern has none), else `fallback` filled with the action. Capitalised."""
    for pattern, template in rules:
        m = pattern.match(action)
        if m:
            text = template.format(*((g or "" for g in m.groups()) if m.groups() else (action,)))
            break
    else:
        text = fallback.format(action)
    return text[:1].upper() + text[1:]


class Env(ABC):
    """An interactive text environment.

    `reset` starts a task and returns (first observation, instruction); `step` plays one action.
    Invalid or malformed actions are no-ops whose observation says so (info["invalid"] = True);
    they never raise, and they count as a step.
    """

    name: str = ""
    #: one-line description of the ReAct role, used as the first prompt turn
    system_prompt: str = ""
    #: Whether `replan` plans from EVERY state of an episode, so that the expert can judge any
    #: tree node (its true value, `core.oracle`). An env opts in by setting it True.
    has_oracle: bool = False

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

    def same_observation(self, stored: str, replayed: str) -> bool:
        """Whether a replayed observation reproduces a stored one (exact text by default)."""
        return stored == replayed

    def state_key(self) -> str | None:
        """A key of the running episode's state: two episodes of one task whose keys are equal
        after the same number of steps should answer the same actions with the same observations
        and reward (`core.state_merge` replays every path it splices, so a key that is coarser
        somewhere costs merges, never a wrong path), or None where the env does not expose its
        state (its trees cannot be state-merged)."""
        return None

    def replan(self) -> list[ExpertStep] | None:
        """The expert's steps from the CURRENT state of the running episode (what "continue with
        the expert from here" plays), or None where the env cannot plan from an arbitrary state."""
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
_ALIASES: dict[str, str] = {}  # short name -> the env name it stands for (with its parameters)


def register_env(name: str) -> Callable[[Callable[..., Env]], Callable[..., Env]]:
    """Class decorator: make an environment constructible by name."""

    def deco(factory: Callable[..., Env]) -> Callable[..., Env]:
        _REGISTRY[name] = factory
        return factory

    return deco


def register_alias(short: str, name: str) -> None:
    """Let `short` stand for the env name `name` (`tinyshop` for
    `shop?n_products=200&n_categories=10`): it parses, builds and canonicalizes as `name`, with
    parameters given after it (`tinyshop?seed=3`) added; the store keeps the full canonical name."""
    _ALIASES[short] = name


def env_aliases() -> dict[str, str]:
    """The short names of named worlds, and the env names they stand for."""
    _load_builtin()
    return dict(_ALIASES)


def list_envs() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def parse_env_name(name: str) -> tuple[str, dict[str, Any]]:
    """Split an env name into its registry name and parameters: `shop?n_products=200&n_categories=10`
    -> ("shop", {"n_products": 200, "n_categories": 10}). Values are read as int, then float, then
    true/false, else kept as text. A plain name has no parameters; a short name (`register_alias`)
    has those of the name it stands for."""
    base, _, query = name.partition("?")
    params: dict[str, Any] = {}
    if base in env_aliases():  # a short name: its world's parameters, then those given after it
        base, params = parse_env_name(_ALIASES[base])
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise UnknownEnvError(f"env {name!r}: parameter {part!r} is not key=value; "
                                  "write e.g. shop?n_products=200&n_categories=10")
        params[key] = _read_value(value)
    return base, params


def _read_value(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text, text)


def canonical_env_name(name: str, **kwargs: Any) -> str:
    """The one name of the world that `name` plus constructor `kwargs` build: the registry name,
    then `?key=value&...` for every parameter that differs from the constructor's default, in
    the constructor's order (parameters of a `**kwargs` factory after them, alphabetically).
    `shop?n_categories=10&n_products=200`, `shop?n_products=200&n_categories=10&seed=0` and
    `make_env("shop", n_products=200, n_categories=10)` are all `shop?n_products=200&n_categories=10`;
    `shop?n_products=1000` (the default) is `shop`. The store keeps every task, trajectory, run and
    tree under this name. An env this installation does not know keeps its name as given.
    A parameter the env does not take, or a value of the wrong type, is an UnknownEnvError
    (one line naming the parameter and what it takes). `EnvSpec.parse(name, **kwargs).name`."""
    return EnvSpec.parse(name, **kwargs).name


@dataclass(frozen=True)
class EnvSpec:
    """An env name parsed once (`EnvSpec.parse`): the registry name, the typed parameters of its
    canonical name (those that differ from the constructor's defaults), the canonical name, and
    the split whose tasks it runs. `make()` builds the env, `tasks()` selects the split's tasks;
    nothing below parses the name again."""

    base: str
    params: tuple[tuple[str, Any], ...] = ()
    name: str = ""  # the canonical name (`canonical_env_name`); an env unknown here: as given
    split: str = "train"

    @classmethod
    def parse(cls, name: str, split: str = "train", **kwargs: Any) -> EnvSpec:
        """The spec of env name `name` plus constructor `kwargs` (an UnknownEnvError for a
        parameter the env does not take or a value of the wrong type)."""
        base, params = parse_env_name(name)
        params.update(kwargs)
        _load_builtin()
        factory = _REGISTRY.get(base)
        if factory is None:  # not installed here: the name as given (with kwargs: written out)
            return cls(base, tuple(params.items()), base + _query(params) if kwargs else name, split)
        kept = _canonical_params(base, factory, params)
        return cls(base, tuple(kept.items()), base + _query(kept), split)

    @property
    def slug(self) -> str:
        """The canonical name usable in file and model names (`env_slug`)."""
        return env_slug(self.name)

    def make(self) -> Env:
        """The environment (named by its canonical name); UnknownEnvError when not registered."""
        _load_builtin()
        factory = _REGISTRY.get(self.base)
        if factory is None:
            raise UnknownEnvError(f"unknown env {self.base!r}; available: {', '.join(list_envs())}")
        env = factory(**dict(self.params))
        env.name = self.name
        return env

    def tasks(self, tasks: int | None = None, task_ids: Sequence[str] | None = None) -> list[str]:
        """`select_tasks` of this spec's split on its env (opened and closed here)."""
        with self.make() as env:
            return select_tasks(env, self.split, tasks, task_ids)


def _canonical_params(base: str, factory: Callable[..., Env], params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of the canonical name of env `base` built by `factory` with `params`, typed
    as the constructor's defaults (`canonical_env_name`)."""
    signature = inspect.signature(factory).parameters
    named = [p for p in signature.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    open_ended = any(p.kind is p.VAR_KEYWORD for p in signature.values())
    unknown = sorted(set(params) - {p.name for p in named})
    if unknown and not open_ended:
        raise UnknownEnvError(f"env {base!r} has no parameter {unknown[0]!r}; its parameters: "
                              f"{', '.join(p.name for p in named) or 'none'}")
    kept: dict[str, Any] = {}
    for p in named:
        if p.name in params:
            value = _typed(base, p.name, params[p.name], p.default)
            if p.default is p.empty or value != p.default:
                kept[p.name] = value
    kept.update((k, params[k]) for k in unknown)
    return kept


def _typed(env: str, key: str, value: Any, default: Any) -> Any:
    """`value` as the type of the parameter's default (an int default takes whole numbers, a
    float default any number, a bool default true/false, a text default any value as text)."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UnknownEnvError(f"env {env!r}: {key} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UnknownEnvError(f"env {env!r}: {key} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise UnknownEnvError(f"env {env!r}: {key} must be a number, got {value!r}")
    if kind is str:
        return _text(value)
    return value


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _query(params: dict[str, Any]) -> str:
    """`?k=v&...` of parameters (empty for none); a value an env name cannot hold is an error."""
    parts = []
    for key, value in params.items():
        text = _text(value)
        if not isinstance(value, bool | int | float | str) or any(c in text for c in "?&=\n"):
            raise UnknownEnvError(f"env parameter {key}={text!r} cannot be part of an env name; "
                                  "use a number, true/false or text without ?, & and =")
        parts.append(f"{key}={text}")
    return "?" + "&".join(parts) if parts else ""


def env_slug(name: str) -> str:
    """An env name usable in file and model names: `shop?n_products=200&n_categories=10` ->
    `shop-n_products=200-n_categories=10`."""
    return name.replace("?", "-").replace("&", "-")


def env_parameters(name: str) -> tuple[str, ...]:
    """The parameter names an env name may carry (its factory's keyword arguments); () for an
    unknown env."""
    factory = env_class(name)
    if factory is None:
        return ()
    return tuple(p.name for p in inspect.signature(factory).parameters.values()
                 if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def known_env(name: str) -> bool:
    """Whether `name` (with or without parameters) names a registered environment."""
    return parse_env_name(name)[0] in list_envs()


def env_class(name: str) -> Callable[..., Env] | None:
    """The registered factory of an env name (parameters ignored), or None."""
    _load_builtin()
    return _REGISTRY.get(parse_env_name(name)[0])


def make_env(name: str | EnvSpec, **kwargs: Any) -> Env:
    """Build an environment by name: a registry name (`shop`, `sciworld`, `alfworld`, `webshop`),
    optionally with constructor parameters (`shop?n_products=200&n_categories=10`) and keyword
    arguments, or a parsed `EnvSpec`. The env's `name` is its canonical name
    (`canonical_env_name`), so its tasks and trajectories are stored under it."""
    if isinstance(name, EnvSpec):
        if kwargs:
            raise TypeError("make_env takes keyword arguments with an env name, not with an EnvSpec")
        return name.make()
    return EnvSpec.parse(name, **kwargs).make()


def select_tasks(env: Env, split: str = "train", tasks: int | None = None,
                 task_ids: Sequence[str] | None = None) -> list[str]:
    """The task ids to run (the one task selection of collect, evaluate and the pipeline):
    `task_ids` as given (checked against the split), else the first `tasks` of `split` (all
    when None). Bad input is a one-line UserError naming the fix."""
    if split not in env.splits():
        raise UserError(f"env {env.name or '?'!r} has no split {split!r}; splits: {', '.join(env.splits())}")
    known = [t.task_id for t in env.tasks(split)]
    if task_ids is not None:
        ids = list(task_ids)
        missing = sorted(set(ids) - set(known))
        if missing:
            raise UserError(f"task ids {missing[:5]} are not in the {split!r} split of "
                            f"{env.name or 'this env'}; list them with `w2stree stats`")
        return ids
    if not known:
        raise UserError(f"split {split!r} of {env.name or 'this env'} has no tasks; "
                        f"choose one of {env.splits()}")
    if tasks is not None:
        if tasks < 1:
            raise UserError(f"--tasks must be at least 1 (got {tasks})")
        known = known[:tasks]
    return known


def _load_builtin() -> None:
    # Importing the modules registers them; heavy dependencies load lazily inside each env.
    import importlib

    for mod in ("shop", "sciworld", "alfworld", "webshop"):
        try:
            importlib.import_module(f"core.envs.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"core.envs.{mod}":
                raise
