"""Readers for the ETO / TraTree files researchers already have.

* Expert SFT file: `[{"id", "conversations": [{"from": "human"|"gpt", "value"}], "reward"?,
  "game_file"?}]` — the role prompt, "OK", the task message, then alternating
  `Thought: …\\nAction: …` (gpt) and `Observation: …` (human) turns. Imported as expert
  demonstrations (model "expert", reward 1 unless the record says otherwise).
* Explored trajectories: `<root>/<model>/<experiment>/<task_id>.json`, each
  `{"meta": {"steps", "reward", "success", …}, "conversations": [...]}`, where a one-shot
  example (its own task message and turns) sits between the "OK" and the task message.

Where the task starts is detected, not assumed: after the role prompt and its "OK", the task
message is the LAST human turn that is not an `Observation:` turn or that follows another human
turn (a one-shot example's turns come before it, and the example ends on its observation, so
even a WebShop-style task message starting with "Observation:" is found). When there is no such
turn (WebShop SFT files: no example), the first human turn after "OK" is the task message. ETO's "Task Description:" header line is dropped,
so the instruction is the environment's own task text (as the sciworld env gives it and as the
project's prompts use it); the rest is split into the instruction and
`meta["initial_observation"]` as the project's envs split them (`split_task`): WebShop's
`[Observation:] WebShop [SEP] Instruction: [SEP] <goal> [SEP] Search` gives the goal and that
observation; ALFWorld's `[Here is your task. ]<room>\\nYour task is to: <goal>` gives the
"Your task is to: <goal>" line and the room; `<instruction>\\nObservation: <obs>` (as
`prompt.task_message` joins them) gives both parts; otherwise the text is kept verbatim. Task
lists thus show the goal. Per-step rewards are not in these files: the final reward is put on
the last step.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from core.agents.prompt import parse_reply
from core.formats import FormatError
from core.formats.reading import MAX_DEPTH, check_value, parse_json, read_text, suspect
from core.trajectory import Step, Trajectory

HUMAN = {"human", "user"}
GPT = {"gpt", "assistant"}
_ACTION_LINE = re.compile(r"^\s*action\s*:", re.IGNORECASE | re.MULTILINE)
_OBS_PREFIX = re.compile(r"^\s*observation\s*:\s?", re.IGNORECASE)
_TASK_OBS_SEP = "\nObservation: "
_TASK_PREFIX = re.compile(r"^Task Description:\s*\n")
_WEBSHOP_TASK = re.compile(r"^(?:Observation:\s*)?(?P<obs>WebShop \[SEP\] Instruction: \[SEP\] "
                           r"(?P<goal>.+?) \[SEP\] Search\b.*)$", re.DOTALL)
_ALFWORLD_TASK = re.compile(r"^(?P<room>.*\S)\s*\n(?P<goal>Your task is to: [^\n]*\S)\s*$", re.DOTALL)
_ALFWORLD_HEADER = re.compile(r"^Here is your task\.\s*")


def _is_observation(text: str) -> bool:
    return bool(_OBS_PREFIX.match(text))


def load_json(path: Path) -> Any:
    """Parse a JSON file (core.formats.reading rules); FormatError naming the position."""
    file = str(path)
    text = read_text(path)
    data = parse_json(text, file, extra_data_hint="; one JSON value per line is JSONL: use "
                                                 "`w2stree import jsonl`")
    if suspect(text):
        if isinstance(data, list):
            for n, rec in enumerate(data):
                check_value(rec, file, f"record {n}")
        else:
            check_value(data, file, "file")
    return data


def _turns(conv: Any, file: str, record: str) -> list[tuple[str, str]]:
    """Validated (role, text) turns with role "human" or "gpt"."""
    if not isinstance(conv, list) or not conv:
        raise FormatError(file, record, "conversations", "missing or not a non-empty list of turns")
    out = []
    for i, t in enumerate(conv):
        f = f"conversations[{i}]"
        if not isinstance(t, dict):
            raise FormatError(file, record, f, f"must be an object, got {type(t).__name__}")
        role, value = t.get("from"), t.get("value")
        if role not in HUMAN | GPT:
            raise FormatError(file, record, f"{f}.from", f"must be 'human' or 'gpt', got {json.dumps(role)}")
        if not isinstance(value, str):
            raise FormatError(file, record, f"{f}.value", "missing or not a string")
        out.append(("human" if role in HUMAN else "gpt", value))
    return out


def find_task_start(turns: list[tuple[str, str]]) -> int:
    """Index of the task message in a conversation (see the module docstring for the rule)."""
    body = 2 if len(turns) > 1 and turns[1][0] == "gpt" and turns[1][1].strip() == "OK" else 1
    candidates = [i for i in range(body, len(turns)) if turns[i][0] == "human"
                  and (not _is_observation(turns[i][1]) or turns[i - 1][0] == "human")]
    return candidates[-1] if candidates else body


def split_task(task: str) -> tuple[str, str]:
    """(instruction, initial observation) of a task message (see the module docstring)."""
    if m := _WEBSHOP_TASK.match(task):
        return m["goal"].strip(), m["obs"].strip()
    if m := _ALFWORLD_TASK.match(task):
        return m["goal"], _ALFWORLD_HEADER.sub("", m["room"], count=1)
    if task.count(_TASK_OBS_SEP) == 1:
        instruction, initial_obs = task.split(_TASK_OBS_SEP)
        return instruction, initial_obs
    return task, ""


def parse_conversation(conv: Any, file: str, record: str) -> tuple[str, str, list[Step]]:
    """(instruction, initial observation, steps) of an ETO conversation; raises FormatError."""
    turns = _turns(conv, file, record)
    start = find_task_start(turns)
    if start >= len(turns) or turns[start][0] != "human":
        raise FormatError(file, record, f"conversations[{min(start, len(turns) - 1)}]",
                          "no task message (a human turn after the role prompt and 'OK')")
    instruction, initial_obs = split_task(_TASK_PREFIX.sub("", turns[start][1], count=1))
    steps: list[Step] = []
    i = start + 1
    while i < len(turns):
        role, text = turns[i]
        f = f"conversations[{i}]"
        if role != "gpt":
            raise FormatError(file, record, f, "expected a gpt 'Thought/Action' turn, got a second human turn")
        if not _ACTION_LINE.search(text):
            raise FormatError(file, record, f, "gpt turn has no 'Action:' line")
        thought, action = parse_reply(text)
        if not action:
            raise FormatError(file, record, f, "gpt turn has an empty action")
        obs = ""
        if i + 1 < len(turns):
            orole, otext = turns[i + 1]
            if orole != "human":
                raise FormatError(file, record, f"conversations[{i + 1}]",
                                  "expected a human 'Observation:' turn, got a second gpt turn")
            obs = _OBS_PREFIX.sub("", otext, count=1)
        steps.append(Step(action=action, observation=obs, thought=thought))
        i += 2
    if not steps:
        raise FormatError(file, record, "conversations", "no steps: no gpt turn after the task message")
    return instruction, initial_obs, steps


def _reward(obj: dict, key: str, file: str, record: str, field: str, default: float | None) -> float:
    v = obj.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
        if v is None:
            raise FormatError(file, record, field, "missing")
        raise FormatError(file, record, field, f"must be a number between 0 and 1, got {json.dumps(v)[:40]}")
    return float(v)


def _finish(steps: list[Step], reward: float) -> None:
    steps[-1].reward = reward


def read_eto_sft(path: str | Path, env: str) -> list[Trajectory]:
    """Expert demonstrations from an ETO SFT file (model "expert", source "import")."""
    path = Path(path)
    file = str(path)
    data = load_json(path)
    if not isinstance(data, list):
        raise FormatError(file, "file", "", f"must be a JSON list of records, got {type(data).__name__}")
    out = []
    for n, rec in enumerate(data):
        record = f"record {n}"
        if not isinstance(rec, dict):
            raise FormatError(file, record, "", f"must be an object, got {type(rec).__name__}")
        rid = rec.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool):
            rid = str(rid)
        if not isinstance(rid, str) or not rid:
            raise FormatError(file, record, "id", "missing or not a string")
        record = f"record {n} (id {rid!r})"
        instruction, initial_obs, steps = parse_conversation(rec.get("conversations"), file, record)
        reward = _reward(rec, "reward", file, record, "reward", 1.0)
        meta: dict[str, Any] = {"file": path.name, "eto_id": rid}
        if initial_obs:
            meta["initial_observation"] = initial_obs
        if isinstance(rec.get("game_file"), str):
            meta["game_file"] = rec["game_file"]
        _finish(steps, reward)
        out.append(Trajectory(env=env, task_id=rid, instruction=instruction, steps=steps,
                              reward=reward, source="import", model="expert", meta=meta))
    return out


def explore_files(root: str | Path) -> list[Path]:
    """The trajectory files of an explored-trajectory folder (or the file itself), sorted."""
    root = Path(root)
    if root.is_dir():  # every entry but folders: a FIFO or a link loop is reported, not skipped
        return sorted(_walk_json(root))
    if not root.exists() and not root.is_symlink():
        raise FileNotFoundError("no such file or folder")
    return [root]


def _walk_json(root: Path) -> list[Path]:
    """The `*.json` entries that are not folders anywhere under `root`, walked with a stack (no
    recursion, so a tree thousands of levels deep is fine; links to folders are not followed,
    as `Path.rglob` does not)."""
    found, stack = [], [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.name.endswith(".json") and not entry.is_dir():
                    found.append(Path(entry.path))
    return found


def read_eto_explore_file(path: str | Path, env: str) -> Trajectory:
    """One explored trajectory `<model>/<experiment>/<task_id>.json` (model and run from the
    folders, task id from the file name)."""
    path = Path(path)
    file = str(path)
    data = load_json(path)
    record = "file"
    if not isinstance(data, dict):
        raise FormatError(file, record, "", f"must be a JSON object, got {type(data).__name__}")
    meta = data.get("meta")
    if not isinstance(meta, dict):
        raise FormatError(file, record, "meta", "missing or not an object")
    check_value(meta, file, record, "meta", depth_limit=MAX_DEPTH)
    reward = _reward(meta, "reward", file, record, "meta.reward", None)
    success = meta.get("success")
    if success is not None and not isinstance(success, bool):
        raise FormatError(file, record, "meta.success", f"must be true or false, got {json.dumps(success)[:40]}")
    instruction, initial_obs, steps = parse_conversation(data.get("conversations"), file, record)
    model, experiment = path.parent.parent.name, path.parent.name
    tmeta: dict[str, Any] = {"file": f"{model}/{experiment}/{path.name}", "eto_meta": meta}
    if initial_obs:
        tmeta["initial_observation"] = initial_obs
    _finish(steps, reward)
    return Trajectory(env=env, task_id=path.stem, instruction=instruction, steps=steps, reward=reward,
                      success=success, source="import", model=model,
                      run_id=f"import:{model}/{experiment}", meta=tmeta)
