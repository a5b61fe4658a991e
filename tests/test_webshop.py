"""Real-WebShop adapter: the missing-package/data errors, and the adapter logic against a small
fake of WebShop's API (WebShop cannot run offline here). ALFWorld runs for real: test_alfworld.py."""

from __future__ import annotations

import sys
import types

import pytest

from core.envs.base import UnknownEnvError, make_env
from core.errors import UserError

# ---------------------------------------------------------------- a fake WebShop text env


class _FakeWebShop:
    """WebShop's WebAgentTextEnv surface: reset(session=int), step, get_available_actions,
    instruction_text, server.goals. Goal i wants product b00i in red."""

    def __init__(self, observation_mode="html", human_goals=0, num_products=None, **kw) -> None:
        assert observation_mode == "text" and human_goals
        self.server = types.SimpleNamespace(
            goals=[{"instruction_text": f"i need item {i} in red"} for i in range(1600)])
        self.steps: list[str] = []

    def reset(self, session=None):
        self.goal, self.page, self.color = int(session), "search", None
        self.instruction_text = self.server.goals[self.goal]["instruction_text"]
        return f"WebShop [SEP] Instruction: [SEP] {self.instruction_text} [SEP] Search", None

    def get_available_actions(self):
        clickables = {"search": ["search"], "results": ["back to search", "next >", "b001", "b002"],
                      "item": ["back to search", "< prev", "red", "blue", "buy now"]}[self.page]
        return {"has_search_bar": self.page == "search", "clickables": clickables}

    def step(self, action):
        self.steps.append(action)
        arg = action[action.index("[") + 1:-1].lower()  # as WebShop does
        if action.startswith("search"):
            self.page = "results"
        elif arg in ("b001", "b002"):
            self.page, self.product = "item", arg
        elif arg in ("red", "blue"):
            self.color = arg
        elif arg == "buy now":
            reward = (0.5 + 0.5 * (self.color == "red")) if self.product == f"b00{self.goal}" else 0.1
            return "Thank you for shopping with us!", reward, True, None
        return f"page {self.page}", 0.0, False, None

    def close(self):
        pass


def _install_fake_webshop(monkeypatch, cls) -> None:
    mod = types.ModuleType("web_agent_site.envs.web_agent_text_env")
    mod.WebAgentTextEnv = cls
    for name in ("web_agent_site", "web_agent_site.envs"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, mod.__name__, mod)


def test_webshop_missing_package_or_data(monkeypatch):
    monkeypatch.setitem(sys.modules, "web_agent_site", None)
    with pytest.raises(UserError, match="princeton-nlp/WebShop"):
        make_env("webshop")

    class NoData:
        def __init__(self, **kw):
            raise FileNotFoundError(2, "No such file", "data/items_shuffle.json")

    _install_fake_webshop(monkeypatch, NoData)
    with pytest.raises(UserError, match="items_shuffle.json.*setup.sh"):
        make_env("webshop")


def test_webshop_adapter_logic(monkeypatch):
    _install_fake_webshop(monkeypatch, _FakeWebShop)
    env = make_env("webshop")
    assert [len(env.tasks(s)) for s in ("test", "dev", "train")] == [500, 1000, 100]
    assert env.tasks("train")[0].task_id == "fixed_1500"
    assert env.tasks("test")[1].instruction == "i need item 1 in red"
    for bad in ("fixed_1600", "goal_1", "fixed_"):
        with pytest.raises(UnknownEnvError):
            env.reset(bad)

    obs, instruction = env.reset("fixed_1")
    assert instruction == "i need item 1 in red" and "Instruction" in obs
    assert env.valid_actions() == ["search[<keywords>]"]
    for bad in ("click[b001]", "buy it", "search[]", "click[search]"):
        r = env.step(bad)
        assert r.info["invalid"] and r.observation.startswith("Invalid action") and not r.done
    assert env._env.steps == []  # none reached WebShop
    env.step("search[item 1 red]")
    assert "click[b001]" in env.valid_actions() and "search[<keywords>]" not in env.valid_actions()
    assert env.step("search[again]").info["invalid"]  # no search bar on the results page
    env.step("click[b001]")
    env.step("click[blue]")
    r = env.step("click[Buy Now]")  # WebShop lower-cases click arguments
    assert r.done and r.reward == 0.5 and not r.info["success"]
    assert env.step("click[buy now]").info["invalid"]

    env.reset("fixed_1")
    for a in ("search[item 1]", "click[b001]", "click[red]", "click[buy now]"):
        r = env.step(a)
    assert r.reward == 1.0 and r.info["success"]
    assert env.max_steps("fixed_1") == 10 and env.expert("fixed_1") is None
