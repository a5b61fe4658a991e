"""The real WebShop text environment (`web_agent_site`, Yao et al. 2022), for users who have it.

WebShop is not on PyPI: clone princeton-nlp/WebShop, `pip install -e .` it and run its `setup.sh`
(product and goal files under its `data/`). It cannot run offline here; the built-in `shop` env
mirrors its pages, actions and reward, so prompts, trees and the dashboard are the same.

Task ids are WebShop's goal indices as ETO writes them: `fixed_<n>`, over the human-instruction goals
(`human_goals=True`, WebShop's fixed shuffle). Splits follow WebShop's own baselines: `test` = goals
0-499, `dev` = 500-1499, `train` = the rest. Observations are WebShop's `text` mode (`[SEP]`-joined
page text). Reward is WebShop's, paid on `click[buy now]`; success = reward 1. Step limit 15.
An action that is neither `search[...]` on a page with the search bar nor `click[...]` of a clickable
on the page is a no-op that says so (WebShop itself silently ignores it).
"""

from __future__ import annotations

import re
from typing import Any

from core.envs.base import Env, StepResult, UnknownEnvError, register_env
from core.errors import UserError
from core.trajectory import Task

MAX_STEPS = 10  # as the paper's release runs WebShop
SPLIT_RANGES = {"test": (0, 500), "dev": (500, 1500), "train": (1500, None)}
_ACTION_RE = re.compile(r"^(search|click)\[(.*)\]$", re.IGNORECASE | re.DOTALL)

SYSTEM_PROMPT = (
    "You are web shopping. I will give you instructions about what to do. You have to follow the "
    "instructions. Every round I will give you an observation and a list of available actions; you "
    "have to respond with one thought and one action in the format\nThought: <your reasoning>\n"
    "Action: <one action>\nActions are search[keywords] (only where a search bar is) and "
    "click[value] (value must be one of the clickables on the page)."
)


def _text_env_class() -> Any:
    """WebShop's `WebAgentTextEnv`, imported on first use."""
    try:
        from web_agent_site.envs.web_agent_text_env import WebAgentTextEnv
    except ImportError as exc:
        raise UserError("the webshop env needs WebShop's web_agent_site: clone princeton-nlp/WebShop, "
                        "pip install -e it and run its setup.sh (or use the built-in env: --env shop)") from exc
    return WebAgentTextEnv


def parse_task_id(task_id: str) -> int:
    """`fixed_12` → 12."""
    m = re.fullmatch(r"fixed_(\d+)", task_id)
    if not m:
        raise UnknownEnvError(f"unknown webshop task id {task_id!r}: expected fixed_<goal index>")
    return int(m.group(1))


@register_env("webshop")
class WebShopEnv(Env):
    """WebShop's text environment; see the module docstring."""

    name = "webshop"
    system_prompt = SYSTEM_PROMPT

    def __init__(self, num_products: int | None = None, **webshop_kwargs: Any) -> None:
        """`num_products` (None = WebShop's full catalogue) and other `WebAgentTextEnv` keyword
        arguments pass through. Fails with a one-line UserError when WebShop or its data is missing."""
        cls = _text_env_class()
        try:
            self._env = cls(observation_mode="text", human_goals=True, num_products=num_products,
                            **webshop_kwargs)
        except FileNotFoundError as exc:
            raise UserError(f"WebShop's data is missing ({exc.filename}); run WebShop's setup.sh") from exc
        self._goal: int | None = None
        self._done = False
        self._reward = 0.0

    @property
    def num_goals(self) -> int:
        return len(self._env.server.goals)

    def splits(self) -> list[str]:
        return list(SPLIT_RANGES)

    def tasks(self, split: str = "train") -> list[Task]:
        if split not in SPLIT_RANGES:
            raise UserError(f"unknown webshop split {split!r}; use one of {', '.join(SPLIT_RANGES)}")
        lo, hi = SPLIT_RANGES[split]
        goals = self._env.server.goals
        return [Task(self.name, f"fixed_{i}", split, str(goals[i]["instruction_text"]))
                for i in range(lo, min(hi or len(goals), len(goals)))]

    def max_steps(self, task_id: str | None = None) -> int:
        return MAX_STEPS

    def reset(self, task_id: str) -> tuple[str, str]:
        goal = parse_task_id(task_id)
        if goal >= self.num_goals:
            raise UnknownEnvError(f"webshop has goals fixed_0-fixed_{self.num_goals - 1}, not {task_id!r}")
        obs, _ = self._env.reset(session=goal)
        self._goal, self._done, self._reward = goal, False, 0.0
        return str(obs), str(self._env.instruction_text)

    def _invalid(self, action: str) -> str | None:
        """Why WebShop would ignore this action on the current page, or None if it is valid."""
        m = _ACTION_RE.match(action)
        if not m:
            return "Invalid action: use search[keywords] or click[value]."
        kind, arg = m.group(1).lower(), m.group(2).strip().lower()
        page = self._env.get_available_actions()
        if kind == "search":
            if not page["has_search_bar"]:
                return "Invalid action: there is no search bar on this page."
            if not arg:
                return "Invalid action: search for some keywords."
        elif arg not in page["clickables"] or arg == "search":
            return f"Invalid action: {arg!r} is not clickable on this page."
        return None

    def step(self, action: str) -> StepResult:
        if self._goal is None:
            raise UserError("webshop: call reset(task_id) before step()")
        action = str(action).strip()
        if self._done:
            return StepResult("The episode has ended; reset to start a new one.", self._reward, True,
                              {"invalid": True, "success": self._reward >= 1.0})
        why = self._invalid(action)
        if why is not None:
            return StepResult(why, 0.0, False, {"invalid": True, "success": False})
        obs, reward, done, _ = self._env.step(action)
        self._done = bool(done)
        self._reward = float(reward or 0.0)
        return StepResult(str(obs), self._reward, self._done,
                          {"invalid": False, "success": self._done and self._reward >= 1.0})

    def valid_actions(self) -> list[str] | None:
        if self._goal is None or self._done:
            return None
        page = self._env.get_available_actions()
        out = ["search[<keywords>]"] if page["has_search_bar"] else []
        return out + [f"click[{c}]" for c in page["clickables"] if c != "search"]

    def close(self) -> None:
        self._env.close()
