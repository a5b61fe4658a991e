"""ALFWorld and real-WebShop adapters: the missing-package/data errors, and the adapter logic
against small fakes of the packages' APIs (neither package nor its data is on these machines)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from core.envs.base import UnknownEnvError, make_env
from core.errors import UserError

# ---------------------------------------------------------------- a fake TextWorld + ALFWorld


class _FakeGame:
    """A TextWorld-like game: `solution` commands in order win; other admissible commands only talk."""

    def __init__(self, path: str, infos: dict, expert: bool) -> None:
        self.spec = json.loads(Path(path).read_text())
        self.infos, self.expert, self.closed = infos, expert, False

    def _state(self, feedback: str) -> dict:
        sol = self.spec["solution"]
        state = {"feedback": feedback, "won": self.progress == len(sol),
                 "admissible_commands": ["look", "inventory", *sorted(set(sol))]}
        if self.expert:
            state["extra.expert_plan"] = sol[self.progress:self.progress + 1]
        return state

    def reset(self) -> dict:
        self.progress = 0
        return self._state(f"-= Welcome to TextWorld, ALFRED! =-\n\n{self.spec['room']}\n\n"
                           f"Your task is to: {self.spec['goal']}")

    def step(self, command: str) -> tuple[dict, float, bool]:
        sol = self.spec["solution"]
        if command == sol[self.progress]:
            self.progress += 1
            fb = f"You {command}."
        elif command in sol or command in ("look", "inventory"):
            fb = "You see nothing new."
        else:
            fb = "Nothing happens."
        state = self._state(fb)
        return state, float(state["won"]), state["won"]

    def close(self) -> None:
        self.closed = True


def _install_fake_alfworld(monkeypatch) -> list[_FakeGame]:
    started: list[_FakeGame] = []
    tw = types.ModuleType("textworld")
    tw.EnvInfos = lambda **kw: dict(kw)

    def start(path, infos, wrappers=()):
        names = [getattr(w, "__name__", type(w).__name__) for w in wrappers]
        assert names[:2] == ["AlfredDemangler", "AlfredInfos"]  # ALFWorld's wrappers, in its order
        game = _FakeGame(path, infos, expert="AlfredExpert" in names)
        started.append(game)
        return game

    tw.start = start
    alfred = types.ModuleType("alfworld.agents.environment.alfred_tw_env")
    alfred.AlfredDemangler = type("AlfredDemangler", (), {"__init__": lambda self, shuffle=False: None})
    alfred.AlfredInfos = type("AlfredInfos", (), {})
    alfred.AlfredExpert = type("AlfredExpert", (), {"__init__": lambda self, expert_type="handcoded": None})
    pkgs = {n: types.ModuleType(n) for n in ("alfworld", "alfworld.agents", "alfworld.agents.environment")}
    pkgs["alfworld.agents.environment"].alfred_tw_env = alfred
    for name, mod in {**pkgs, "textworld": tw, alfred.__name__: alfred}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return started


def _write_games(root, monkeypatch) -> None:
    games = {
        "train/pick_and_place_simple-Book-None-Desk-1/trial_1": ["go to desk 1", "take book 1 from desk 1"],
        "train/pick_and_place_simple-Book-None-Desk-1/trial_2": ["go to shelf 1"],
        "train/pick_and_place_with_movable_recep-Apple-Bowl-Shelf-2/trial_1": ["go to shelf 1"],  # skipped
        "valid_seen/pick_clean_then_place_in_recep-Cup-None-Sink-3/trial_1": [
            "go to sinkbasin 1", "clean cup 1 with sinkbasin 1", "move cup 1 to cabinet 1"],
        "valid_unseen/look_at_obj_in_light-Pen-None-Lamp-4/trial_1": ["use desklamp 1"],
    }
    for rel, sol in games.items():
        d = root / "json_2.1.1" / rel
        d.mkdir(parents=True)
        (d / "game.tw-pddl").write_text(json.dumps({
            "room": "You are in the middle of a room. Looking quickly around you, you see a desk 1.",
            "goal": "put some book on desk.", "solution": sol}))
    monkeypatch.setenv("ALFWORLD_DATA", str(root))


def test_alfworld_missing_package_or_data(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "textworld", None)  # import fails as if not installed
    with pytest.raises(UserError, match="pip install"):
        make_env("alfworld")
    _install_fake_alfworld(monkeypatch)
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    with pytest.raises(UserError, match="ALFWORLD_DATA"):
        make_env("alfworld")
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    with pytest.raises(UserError, match="json_2.1.1"):
        make_env("alfworld")


def test_alfworld_adapter_logic(monkeypatch, tmp_path):
    started = _install_fake_alfworld(monkeypatch)
    _write_games(tmp_path, monkeypatch)
    env = make_env("alfworld")
    train = [t.task_id for t in env.tasks("train")]
    assert train == ["train/pick_and_place_simple-Book-None-Desk-1/trial_1",
                     "train/pick_and_place_simple-Book-None-Desk-1/trial_2"]
    assert len(env.tasks("dev")) == len(env.tasks("test")) == 1
    assert env.max_steps(train[0]) == 40
    with pytest.raises(UserError):
        env.tasks("valid_seen")
    with pytest.raises(UnknownEnvError):
        env.reset("train/nope/trial_9")
    with pytest.raises(UnknownEnvError):
        env.reset("../outside")

    task = env.tasks("dev")[0].task_id
    gold = env.expert(task)
    assert [s.action for s in gold] == ["go to sinkbasin 1", "clean cup 1 with sinkbasin 1", "move cup 1 to cabinet 1"]
    assert started[-1].closed  # the expert's own game instance is closed

    obs, instruction = env.reset(task)
    assert instruction == "Your task is to: put some book on desk."
    assert obs.startswith("You are in the middle of a room") and "Welcome" not in obs
    assert "look" in env.valid_actions()
    r = env.step("dance")
    assert r.observation == "Nothing happens." and r.info["invalid"] and r.reward == 0 and not r.done
    assert env.step("").info["invalid"]
    results = [env.step(s.action) for s in gold]
    assert [x.reward for x in results] == [0.0, 0.0, 1.0] and results[-1].done and results[-1].info["success"]
    assert env.step("look").info["invalid"] and env.valid_actions() is None
    env.close()
    assert started[-1].closed


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
    assert env.max_steps("fixed_1") == 15 and env.expert("fixed_1") is None
