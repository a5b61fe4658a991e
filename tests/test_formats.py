"""Formats: project JSONL and ETO/TraTree import (real fixtures), malformed files, exports."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from core.agents.prompt import env_prefix
from core.errors import UserError
from core.formats import FormatError
from core.formats.eto import find_task_start, parse_conversation, read_eto_explore_file, read_eto_sft
from core.formats.export import (
    best_path_messages,
    best_path_trajectory,
    best_paths_eto,
    best_paths_trl,
    pairs_eto,
    pairs_trl,
    tree_json,
)
from core.formats.importer import import_paths
from core.formats.jsonl import read_jsonl, write_jsonl
from core.mcts import run_mcts
from core.store import Store
from core.train.data import best_path_rows, build_rows
from core.trajectory import Pair, Step, Trajectory
from core.tree import build_tree
from core.tree_data import Tree

ENV = "toy"  # not registered: env_prefix gives the default role prompt and "OK"


def _trajs() -> list[Trajectory]:
    return [
        Trajectory(env=ENV, task_id="t1", instruction="find the key", reward=1.0, model="weak",
                   run_id="r1", meta={"initial_observation": "You are in a hall."},
                   steps=[Step("go north", "A kitchen.", "North looks promising.", 0.0, 10.0),
                          Step("take key", "Taken.", "", 1.0, 100.0)]),
        Trajectory(env=ENV, task_id="t1", instruction="find the key", reward=0.25, success=False,
                   steps=[Step("go south", "A wall \u2014 \"no\" way.\nSecond line.", "hmm", 0.25)]),
    ]


# -- project JSONL ---------------------------------------------------------------------------
def test_jsonl_round_trip(tmp_path):
    src = _trajs()
    buf = io.StringIO()
    assert write_jsonl(src, buf) == 2
    path = tmp_path / "t.jsonl"
    path.write_text(buf.getvalue() + "\n")  # a trailing blank line is allowed
    back = read_jsonl(path)
    for a, b in zip(src, back, strict=True):
        assert (b.env, b.task_id, b.instruction, b.reward, b.success, b.model, b.run_id) == \
               (a.env, a.task_id, a.instruction, a.reward, a.success, a.model, a.run_id)
        assert b.steps == a.steps
        assert b.source == "import" and b.meta["source"] == "collect" and b.meta["traj_id"] == a.traj_id
    assert back[0].meta["initial_observation"] == "You are in a hall."


def test_jsonl_defaults(tmp_path):
    path = tmp_path / "min.jsonl"
    path.write_text(json.dumps({"env": "shop", "task_id": 7, "instruction": "buy", "reward": 1,
                                "steps": [{"action": "click[buy now]"},
                                          {"action": "x", "reward": 1, "score": 50}]}) + "\n")
    (t,) = read_jsonl(path)
    assert t.task_id == "7" and t.success is True
    assert t.steps == [Step("click[buy now]"), Step("x", reward=1.0, score=50.0)]
    assert isinstance(t.steps[1].score, float)
    assert t.model == "" and t.meta == {}


def test_import_jsonl_into_store(store: Store, tmp_path):
    path = tmp_path / "t.jsonl"
    with path.open("w") as fh:
        write_jsonl(_trajs(), fh)
    s = import_paths(store, "jsonl", [path], progress=False)
    assert (s.files, s.trajectories, s.errors) == (1, 2, [])
    back = store.trajectories(env=ENV)
    assert [t.steps for t in back] == [t.steps for t in _trajs()]  # file order kept
    assert {t.source for t in back} == {"import"}
    assert back[1].run_id == "import:t.jsonl"  # no run in the record: the file's import run
    assert set(store.runs()["run_id"]) == {"r1", "import:t.jsonl"}
    assert store.tasks(env=ENV)["instruction"].tolist() == ["find the key"]
    # importing the same file again replaces, never duplicates
    import_paths(store, "jsonl", [path], progress=False)
    assert store.counts()["trajectories"] == 2 and store.counts()["steps"] == 3


# -- ETO / TraTree -------------------------------------------------------------------------
def test_eto_sft_fixture(fixtures: Path, store: Store):
    trajs = read_eto_sft(fixtures / "eto-sft.json", "sciworld")
    # conversations of 51, 27 and 39 turns: role prompt, OK, task, then (gpt, observation) pairs
    assert [(t.task_id, len(t.steps)) for t in trajs] == [
        ("freeze_1", 24), ("find-animal_1", 12), ("test-conductivity_1", 18)]
    t = trajs[0]
    assert t.model == "expert" and t.source == "import" and t.reward == 1.0 and t.success
    assert t.instruction.startswith("Your task is to freeze water.")  # "Task Description:" dropped
    assert t.steps[0] == Step("open door to hallway", "The door is now open.", "I will open door to hallway.")
    assert t.steps[-1].observation == "You decide to wait for 10 iterations."
    s = import_paths(store, "eto-sft", [fixtures / "eto-sft.json"], progress=False)
    assert (s.files, s.trajectories) == (1, 3)
    assert store.trajectory_index(model="expert")["n_steps"].tolist() == [24, 12, 18]


def test_eto_explore_fixture(fixtures: Path, store: Store):
    fx = fixtures
    expected = json.loads((fx / "eto-explore-expected.json").read_text())
    s = import_paths(store, "eto-explore", [fx / "eto-explore"], env="sciworld", progress=False)
    assert (s.files, s.trajectories, s.errors) == (12, 12, [])
    got: dict[str, list[dict]] = {}
    for t in store.trajectories(env="sciworld"):
        got.setdefault(t.task_id, []).append({"run": t.model, "reward": t.reward, "steps": len(t.steps)})
        assert t.run_id == f"import:{t.model}/sciworld_explore" and t.source == "import"
        assert t.success == (t.reward == 1.0)
    assert {k: sorted(v, key=lambda r: r["run"]) for k, v in got.items()} == \
           {k: sorted(v, key=lambda r: r["run"]) for k, v in expected.items()}
    # the task message, not the one-shot example's ("find a(n) non-living thing")
    (plant,) = store.trajectories(task_id="find-plant_0", model="weak-run2")
    assert plant.instruction.startswith("Your task is to find a(n) plant.")
    assert plant.steps[0].action == "open door to greenhouse"
    assert plant.steps[-1].reward == 0.17 and plant.steps[0].reward == 0.0
    assert len(store.runs(kind="import")) == 4


def _conv(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"from": f, "value": v} for f, v in turns]


def test_task_start_detection():
    role, ok = ("human", "You are an agent."), ("gpt", "OK")
    act = ("gpt", "Thought: t\nAction: a")
    obs = ("human", "Observation: o")
    plain = _conv(role, ok, ("human", "do x"), act, obs)
    one_shot = _conv(role, ok, ("human", "example task"), act, obs, act, obs, ("human", "do x"), act)
    webshop = _conv(role, ok, ("human", "Observation:\nWebShop [SEP] i need shoes"), act, obs)
    webshop_one_shot = _conv(role, ok, ("human", "Observation:\nWebShop [SEP] example"), act, obs,
                             ("human", "Observation:\nWebShop [SEP] i need shoes"), act, obs, act)
    assert find_task_start(_turns(plain)) == 2
    assert find_task_start(_turns(one_shot)) == 7
    assert find_task_start(_turns(webshop)) == 2
    assert find_task_start(_turns(webshop_one_shot)) == 5
    instr, first_obs, steps = parse_conversation(
        _conv(role, ok, ("human", "do x\nObservation: a room"), act, obs, act), "f", "r")
    assert (instr, first_obs, len(steps)) == ("do x", "a room", 2)
    assert steps[1].observation == ""  # the last action's observation is not in the file


def _turns(conv):
    return [("human" if t["from"] == "human" else "gpt", t["value"]) for t in conv]


# -- malformed files -----------------------------------------------------------------------
GOOD = {"env": "shop", "task_id": "1", "instruction": "buy", "reward": 0.5,
        "steps": [{"thought": "t", "action": "search[x]", "observation": "o"}]}


@pytest.mark.parametrize("line2, parts", [
    ("{not json", ["line 2", "not valid JSON"]),
    (json.dumps({k: v for k, v in GOOD.items() if k != "reward"}), ["line 2", "field 'reward'", "missing"]),
    (json.dumps({**GOOD, "reward": "high"}), ["line 2", "field 'reward'", "finite number"]),
    (json.dumps({**GOOD, "reward": 3}), ["line 2", "field 'reward'", "between 0 and 1"]),
    (json.dumps({**GOOD, "sucess": True}), ["line 2", "field 'sucess'", "unknown field"]),
    (json.dumps({**GOOD, "steps": [{"thought": "t"}]}), ["line 2", "field 'steps[0].action'", "missing"]),
    (json.dumps({**GOOD, "steps": [{"action": 5}]}), ["line 2", "field 'steps[0].action'", "must be a string"]),
    (json.dumps({**GOOD, "env": ""}), ["line 2", "field 'env'", "must not be empty"]),
    (json.dumps([1, 2]), ["line 2", "must be a JSON object"]),
])
def test_bad_jsonl(tmp_path, line2, parts):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line2 + "\n")
    with pytest.raises(FormatError) as exc:
        read_jsonl(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    for part in parts:
        assert part in msg


def _sft(conv, **extra) -> list[dict]:
    role, ok = ("human", "role"), ("gpt", "OK")
    good = _conv(role, ok, ("human", "do x"), ("gpt", "Thought: t\nAction: a"), ("human", "Observation: o"))
    return [{"id": "good_1", "conversations": good}, {"id": "bad_2", "conversations": conv, **extra}]


@pytest.mark.parametrize("records, parts", [
    (_sft(_conv(("human", "role"), ("gpt", "OK"), ("human", "do x"), ("gpt", "I will just go north"))),
     ["record 1 (id 'bad_2')", "field 'conversations[3]'", "no 'Action:' line"]),
    (_sft(_conv(("human", "role"), ("gpt", "OK"), ("human", "do x"), ("gpt", "Action: a"), ("gpt", "Action: b"))),
     ["record 1 (id 'bad_2')", "field 'conversations[4]'", "second gpt turn"]),
    (_sft([{"from": "robot", "value": "x"}]), ["record 1 (id 'bad_2')", "field 'conversations[0].from'"]),
    (_sft(_conv(("human", "role"), ("gpt", "OK"), ("human", "do x"), ("gpt", "Action: a")), reward=2),
     ["record 1 (id 'bad_2')", "field 'reward'", "between 0 and 1"]),
    ([{"conversations": []}], ["record 0", "field 'id'", "missing"]),
    ({"id": "x"}, ["file", "must be a JSON list"]),
])
def test_bad_eto_sft(tmp_path, records, parts):
    path = tmp_path / "sft.json"
    path.write_text(json.dumps(records))
    with pytest.raises(FormatError) as exc:
        read_eto_sft(path, "sciworld")
    for part in [str(path), *parts]:
        assert part in str(exc.value)


def test_bad_eto_explore(tmp_path):
    folder = tmp_path / "weak" / "exp"
    folder.mkdir(parents=True)
    path = folder / "melt_0.json"
    conv = _conv(("human", "role"), ("gpt", "OK"), ("human", "do x"), ("gpt", "Action: a"))
    path.write_text(json.dumps({"meta": {"steps": 1}, "conversations": conv}))
    with pytest.raises(FormatError, match=r"melt_0\.json: file: field 'meta\.reward': missing"):
        read_eto_explore_file(path, "sciworld")
    path.write_text('{"meta": ')
    with pytest.raises(FormatError, match=r"melt_0\.json: line 1: not valid JSON"):
        read_eto_explore_file(path, "sciworld")


def test_bad_file_imports_nothing_good_files_do(store: Store, tmp_path):
    good, bad = tmp_path / "a_good.jsonl", tmp_path / "b_bad.jsonl"
    good.write_text(json.dumps(GOOD) + "\n")
    # the bad line comes after good ones: none of them may be stored
    bad.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "steps": 3}) + "\n")
    before = store.counts()
    s = import_paths(store, "jsonl", [bad], progress=False)
    assert store.counts() == before
    assert s.errors == [f"{bad}: line 3: field 'steps': must be a list, got int"]
    s = import_paths(store, "jsonl", [bad, good, tmp_path / "missing.jsonl"], progress=False)
    assert (s.files, s.trajectories, s.skipped) == (1, 1, 2)
    assert s.line() == "imported 1 trajectory from 1 file; skipped 2 files with errors"
    assert f"{tmp_path / 'missing.jsonl'}: no such file or folder" in s.errors
    assert store.counts()["trajectories"] == 1 and store.counts()["steps"] == 1


# -- exports -------------------------------------------------------------------------------
def _walk(tid: str, thought: str, obs: str, last: tuple[str, str, str], reward: float,
          task: str = "t1") -> Trajectory:
    return Trajectory(env=ENV, task_id=task, instruction="find the key", reward=reward, traj_id=tid,
                      meta={"initial_observation": "You are in a hall."},
                      steps=[Step("go north", obs, thought), Step(last[0], last[2], last[1])])


SLEEP = ("sleep", "tired", "Zzz.")


def _best_trajs() -> list[Trajectory]:
    """root -> 1 "go north" -> {2 "sleep" (a, c: 0), 3 "take key" (b 0.5, d 1.0)}. Node 1 holds
    three distinct thoughts for four trajectories."""
    return [_walk("a", "north?", "Kitchen A.", SLEEP, 0.0),
            _walk("b", "go up", "Kitchen B.", ("take key", "grab it", "Taken."), 0.5),
            _walk("c", "north?", "Kitchen C.", SLEEP, 0.0),
            _walk("d", "again", "Kitchen D.", ("take key", "mine", "Got it."), 1.0)]


def _tree() -> Tree:
    g = build_tree(_best_trajs())
    g.best_path = [0, 1, 3]
    return g


def test_best_path_messages_are_the_best_real_trajectory():
    g = _tree()
    assert [g.action[n] for n in (1, 2, 3)] == ["go north", "sleep", "take key"]
    assert best_path_trajectory(g) == "d"  # of b (0.5) and d (1.0) through the path's end
    by_id = {t.traj_id: t for t in _best_trajs()}
    assert best_path_messages(g, by_id) == [
        {"role": "user", "content": "find the key\nObservation: You are in a hall."},
        {"role": "assistant", "content": "Thought: again\nAction: go north"},
        {"role": "user", "content": "Observation: Kitchen D."},
        {"role": "assistant", "content": "Thought: mine\nAction: take key"},
    ]
    assert best_path_messages(g, by_id, final_observation=True)[-1] == \
        {"role": "user", "content": "Observation: Got it."}
    with pytest.raises(UserError, match="trajectory d .* is not stored"):
        best_path_messages(g, {})
    g.best_path = []
    with pytest.raises(UserError, match="no best path; run `w2stree mcts` first"):
        best_path_messages(g, by_id)


def test_best_path_rows_skip_trees_without_success(store: Store, caplog):
    failed = [_walk("x", "hm", "Kitchen.", SLEEP, 0.0, task="t2")]
    graphs = [_tree(), build_tree(failed)]
    run_mcts(graphs[1], iterations=10)
    rows, skipped = best_path_rows(graphs, _best_trajs() + failed)
    assert skipped == 1 and len(rows) == 1
    assert rows[0]["completion"][-1] == {"role": "assistant", "content": "Thought: mine\nAction: take key"}
    # from the store, as `w2stree train mcts --data best-paths:toy` builds it, saying what it skipped
    store.import_trajectories(_best_trajs() + failed)
    store.save_trees(graphs)
    assert build_rows("best-paths:toy", store) == rows
    assert "skipped 1 of 2 trees that hold no success" in caplog.text


def test_best_paths_eto_reimports_as_sft(tmp_path):
    prefix = env_prefix(ENV)
    by_id = {t.traj_id: t for t in _best_trajs()}
    (rec,) = best_paths_eto([_tree()], by_id)
    assert rec["id"] == f"{ENV}/t1"
    assert rec["prompt"] == rec["conversations"][: len(prefix) + 1]
    assert rec["prompt"][0] == {"from": "human", "value": prefix[0]["content"]}
    assert rec["conversations"][-1] == {"from": "human", "value": "Observation: Got it."}
    path = tmp_path / "best.json"
    path.write_text(json.dumps([rec]))
    (t,) = read_eto_sft(path, ENV)  # the export is a valid ETO SFT file
    assert [s.action for s in t.steps] == ["go north", "take key"]
    assert t.instruction == "find the key" and t.meta["initial_observation"] == "You are in a hall."
    (row,) = best_paths_trl([_tree()], by_id)
    assert row["messages"][: len(prefix)] == prefix and row["messages"][-1]["role"] == "assistant"


def test_pair_exports():
    p = Pair(env=ENV, task_id="t1", prompt=[{"role": "user", "content": "find the key"}],
             chosen=[{"role": "assistant", "content": "Action: take key"}],
             rejected=[{"role": "assistant", "content": "Action: sleep"}],
             chosen_value=1.0, rejected_value=0.0)
    prefix = env_prefix(ENV)
    (eto,) = pairs_eto([p])
    assert eto["id"] == p.pair_id
    assert eto["prompt"][-1] == {"from": "human", "value": "find the key"}
    assert len(eto["prompt"]) == len(prefix) + 1 and eto["prompt"][1] == {"from": "gpt", "value": "OK"}
    assert eto["chosen"] == [{"from": "gpt", "value": "Action: take key"}]
    assert eto["rejected"] == [{"from": "gpt", "value": "Action: sleep"}]
    (trl,) = pairs_trl([p])
    assert trl["prompt"] == prefix + p.prompt and trl["chosen"] == p.chosen and trl["rejected"] == p.rejected


def test_tree_json():
    d = tree_json(_tree())
    assert d["env"] == ENV and d["task_id"] == "t1" and d["best_path"] == [0, 1, 3]
    assert d["nodes"][0] == {"id": 0, "parent": None, "depth": 0, "action": "", "visits": 4,
                             "value_sum": 1.5, "successes": 1, "failures": 3, "mcts_visits": 0,
                             "mcts_value_sum": 0.0}
    assert [(n["id"], n["parent"], n["visits"]) for n in d["nodes"][1:]] == [(1, 0, 4), (2, 1, 2), (3, 1, 2)]
    json.dumps(d)  # plain JSON types only


def test_explore_folder_with_one_bad_file(store: Store, fixtures: Path, tmp_path):
    import shutil

    root = tmp_path / "explore"
    shutil.copytree(fixtures / "eto-explore", root)
    bad = root / "weak-run1" / "sciworld_explore" / "melt_0.json"
    data = json.loads(bad.read_text())
    k = next(i for i, t in enumerate(data["conversations"]) if i > 8 and t["from"] == "gpt")
    data["conversations"][k]["value"] = "Thought: I forgot to act."
    bad.write_text(json.dumps(data))
    s = import_paths(store, "eto-explore", [root], progress=False)
    assert (s.files, s.trajectories) == (11, 11)
    assert s.errors == [f"{bad}: file: field 'conversations[{k}]': gpt turn has no 'Action:' line"]
    assert store.trajectory_index(task_id="melt_0")["model"].tolist() == ["weak-run0", "weak-run2", "weak-run3"]


def test_batched_import_keeps_files_whole_and_in_order(store: Store, tmp_path, monkeypatch):
    from core.formats import importer

    monkeypatch.setattr(importer, "BATCH_TRAJECTORIES", 2)  # several store writes per call
    for name, tasks in (("a", ["1"]), ("b", ["2", "3"]), ("c", ["x"]), ("d", ["4"])):
        lines = [json.dumps({**GOOD, "task_id": t}) for t in tasks]
        if name == "c":
            lines.append("{oops")
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    s = import_paths(store, "jsonl", [tmp_path], progress=False)  # a folder: its *.jsonl files, sorted
    assert (s.files, s.trajectories, s.skipped) == (3, 4, 1)
    assert [t.task_id for t in store.trajectories()] == ["1", "2", "3", "4"]


@pytest.mark.parametrize("task, instruction, initial", [
    ("Observation:\nWebShop [SEP] Instruction: [SEP] i need red shoes, price lower than 40.00 dollars [SEP] Search",
     "i need red shoes, price lower than 40.00 dollars",
     "WebShop [SEP] Instruction: [SEP] i need red shoes, price lower than 40.00 dollars [SEP] Search"),
    ("Here is your task. You are in the middle of a room. You see a desk 1.\nYour task is to: put a book on desk.",
     "Your task is to: put a book on desk.", "You are in the middle of a room. You see a desk 1."),
    ("Your task is to boil water.\nObservation: This room is called the kitchen.",
     "Your task is to boil water.", "This room is called the kitchen."),
    ("Task Description:\nYour task is to melt ice.", "Your task is to melt ice.", ""),
])
def test_eto_task_messages_keep_the_goal_as_instruction(store: Store, tmp_path, task, instruction, initial):
    """WebShop's and ALFWorld's ETO task messages: the goal is the instruction (task lists show it),
    the observation part goes to meta["initial_observation"], as the project's envs split them."""
    conv = _conv(("human", "role"), ("gpt", "OK"), ("human", task), ("gpt", "Thought: t\nAction: a"))
    path = tmp_path / "sft.json"
    path.write_text(json.dumps([{"id": "w1", "conversations": conv}]))
    import_paths(store, "eto-sft", [path], env="webshop", progress=False)
    (t,) = store.trajectories()
    assert (t.instruction, t.meta.get("initial_observation", "")) == (instruction, initial)
    assert store.tasks()["instruction"].tolist() == [instruction]
