"""ScienceWorld (PyPI `scienceworld`, a Scala simulator behind py4j) as a w2stree environment.

Task ids are `<ScienceWorld task name>_<variation>` (`boil_0`, `find-animal_212`). Splits:

* `train` / `dev` / `test`: ScienceWorld's own variation splits (every variation of all 30 tasks);
* `eto-train` (1483) / `eto-seen` (194, ScienceWorld dev variations) / `eto-unseen` (211, test
  variations): the split ETO and the weak-to-strong tree paper evaluate on, with their per-task step
  limits (`max_steps`). Shipped in `core/data/eto_sciworld_split.json`. As published, ETO's train
  set is not inside ScienceWorld's train variations (357 of its 1483 are dev variations) and 54 of
  them are also in eto-seen; none is in eto-unseen.

Task lists, instructions, the one-shot example and the ETO split are project data (`core/data/`), so
listing tasks or building a prompt never starts a JVM. `python -m core.envs.sciworld build-data
ETO_DIR [--keep-descriptions]` regenerates them from the installed simulator and ETO's split files.

Reward and score: ScienceWorld keeps a 0-100 progress score. After every step `info["score"]` is
that score clipped to 0-100. A wrong `focus on` makes ScienceWorld's score -100: the episode ends
(`done`; `info["raw_score"]` keeps -100). `info["success"]` is ScienceWorld's own "task completed"
flag. The reward after a step (so the episode's reward) is chosen by `reward=`:

* `final` (default): the current score / 100, so the episode's reward is its final score (0 after
  a wrong `focus on`);
* `best`: the best score reached so far in the episode / 100, as the paper's released code
  computes it (a later wrong `focus on` or a lost sub-goal keeps the progress reached).

From the CLI: `--env-arg reward=best`.

The JVM: one per env instance, started on the first `reset`/`expert` with its heap capped by
`JAVA_TOOL_OPTIONS=-Xmx300m` (unless the user set that variable), reused across resets, and shut
down by `close()`, by garbage collection or at interpreter exit (a weakref finalizer); py4j's
`die_on_exit` also ends it if Python dies (even on SIGKILL). Measured on a quiet 2-core machine:
JVM start ~0.9 s, 180-310 MiB RSS (heap-capped). `reset` always calls `load` (0.02-0.2 s), which is
cheaper than ScienceWorld's own `reset` (0.1-0.5 s) and gives the same episode; `expert` asks the
simulator for its gold path (load with `generateGoldPath`: 0.1 s for short tasks, 5-25 s for boil),
cached per env instance.

Fast step: scienceworld 1.2.3 has no `step_fast`; its `ScienceWorldEnv.step` makes 8 JVM calls per
step, including the valid-action enumeration. With `fast_step=True` (default) `step` makes only the
three calls that determine the outcome (step, score, completed); `fast_step=False` adds ScienceWorld's
full info (`moves`, `look`, `inv`, `valid`). Observations, scores and done flags are identical.
Gold-path steps/s, same JVM: fast ~80 vs full ~15 on a quiet machine, 20 vs 5.7 under load 17.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import weakref
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.agents.prompt import task_message
from core.envs.base import Env, ExpertStep, StepResult, UnknownEnvError, register_env, rule_thought
from core.errors import UserError
from core.trajectory import Step, Task

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
SPLIT_FILE = DATA_DIR / "eto_sciworld_split.json"
TASKS_FILE = DATA_DIR / "sciworld_tasks.json"

#: JVM heap cap used unless the user already set JAVA_TOOL_OPTIONS
DEFAULT_JAVA_OPTIONS = "-Xmx300m"
#: step limit of tasks that ETO's split does not cover (ScienceWorld's own default limit)
DEFAULT_MAX_STEPS = 100
REWARD_MODES = ("final", "best")
#: the task of the one-shot example (a train variation, outside every evaluation split)
ONE_SHOT_TASK = "lifespan-longest-lived_1"

NO_MATCH = "No known action matches that input."
ENDED = "The episode has ended; reset to start a new one."

#: ETO / paper task names (older ScienceWorld names: `task-N-` prefix, parentheses, a typo) →
#: ScienceWorld 1.2 task names. Written out rather than derived so a renamed task fails loudly.
ETO_TASK_NAMES: dict[str, str] = {
    "task-1-boil": "boil",
    "task-1-change-the-state-of-matter-of": "change-the-state-of-matter-of",
    "task-1-freeze": "freeze",
    "task-1-melt": "melt",
    "task-10-measure-melting-point-(known-substance)": "measure-melting-point-known-substance",
    "task-10-measure-melting-point-(unknown-substance)": "measure-melting-point-unknown-substance",
    "task-10-use-thermometer": "use-thermometer",
    "task-2-power-component": "power-component",
    "task-2-power-component-(renewable-vs-nonrenewable-energy)":
        "power-component-renewable-vs-nonrenewable-energy",
    "task-2a-test-conductivity": "test-conductivity",
    "task-2a-test-conductivity-of-unknown-substances": "test-conductivity-of-unknown-substances",
    "task-3-find-animal": "find-animal",
    "task-3-find-living-thing": "find-living-thing",
    "task-3-find-non-living-thing": "find-non-living-thing",
    "task-3-find-plant": "find-plant",
    "task-4-grow-fruit": "grow-fruit",
    "task-4-grow-plant": "grow-plant",
    "task-5-chemistry-mix": "chemistry-mix",
    "task-5-chemistry-mix-paint-(secondary-color)": "chemistry-mix-paint-secondary-color",
    "task-5-chemistry-mix-paint-(tertiary-color)": "chemistry-mix-paint-tertiary-color",
    "task-6-lifespan-(longest-lived)": "lifespan-longest-lived",
    "task-6-lifespan-(longest-lived-then-shortest-lived)": "lifespan-longest-lived-then-shortest-lived",
    "task-6-lifespan-(shortest-lived)": "lifespan-shortest-lived",
    "task-7-identify-life-stages-1": "identify-life-stages-1",
    "task-7-identify-life-stages-2": "identify-life-stages-2",
    "task-8-inclined-plane-determine-angle": "inclined-plane-determine-angle",
    "task-8-inclined-plane-friction-(named-surfaces)": "inclined-plane-friction-named-surfaces",
    "task-8-inclined-plane-friction-(unnamed-surfaces)": "inclined-plane-friction-unnamed-surfaces",
    "task-9-mendellian-genetics-(known-plant)": "mendelian-genetics-known-plant",
    "task-9-mendellian-genetics-(unknown-plant)": "mendelian-genetics-unknown-plant",
}

ETO_SPLITS = {"eto-train": "train", "eto-seen": "dev", "eto-unseen": "test"}
OWN_SPLITS = ("train", "dev", "test")

SYSTEM_PROMPT = (
    "You are a helpful assistant doing science experiments in ScienceWorld, a text-based house with "
    "rooms such as the kitchen, workshop, greenhouse and outside. Each turn, answer with one thought "
    "and one action in the format\nThought: <your reasoning>\nAction: <one action>\n"
    "Available actions (OBJ and LOC are names you see in the observations):\n"
    "open OBJ / close OBJ: open or close a container or door\n"
    "activate OBJ / deactivate OBJ: switch a device on or off\n"
    "connect OBJ to OBJ / disconnect OBJ: wire electrical components\n"
    "use OBJ [on OBJ]: use a device or item\n"
    "look around: describe the current room\n"
    "look at OBJ / look in OBJ: describe an object / a container's contents\n"
    "read OBJ: read a note or book\n"
    "move OBJ to OBJ: put an object into a container\n"
    "pick up OBJ / put down OBJ: take into / drop from the inventory\n"
    "pour OBJ in OBJ / dunk OBJ in OBJ: pour a liquid / dunk a container into a liquid\n"
    "mix OBJ: chemically mix a container\n"
    "go to LOC: move to a neighbouring location (open its door first)\n"
    "eat OBJ / flush OBJ\n"
    "focus on OBJ: signal the object the task is about (a wrong focus ends the task)\n"
    "wait / wait1: do nothing for 10 steps / 1 step\n"
    "inventory / task: list what you carry / repeat the task\n"
    "When the simulator asks you to pick one of several numbered choices, answer with the number."
)


# --------------------------------------------------------------------------- project data


@lru_cache(maxsize=1)
def _split_data() -> dict[str, Any]:
    return json.loads(SPLIT_FILE.read_text())


@lru_cache(maxsize=1)
def _task_data() -> dict[str, Any]:
    return json.loads(TASKS_FILE.read_text())


def task_names() -> list[str]:
    """ScienceWorld's 30 task names (as the installed simulator spells them)."""
    return list(_task_data()["tasks"])


def from_eto_name(eto_name: str, variation: int) -> str:
    """The task id of an ETO/paper `[task name, variation]` entry (`task-1-boil`, 21 → `boil_21`)."""
    if eto_name not in ETO_TASK_NAMES:
        raise UserError(f"unknown ETO ScienceWorld task name {eto_name!r}; expected one of "
                        f"{', '.join(sorted(ETO_TASK_NAMES))}")
    return f"{ETO_TASK_NAMES[eto_name]}_{int(variation)}"


def parse_task_id(task_id: str) -> tuple[str, int]:
    """Split `boil_21` into ("boil", 21); unknown names or variations raise UnknownEnvError."""
    name, _, var = task_id.rpartition("_")
    tasks = _task_data()["tasks"]
    if name not in tasks or not var.isdigit():
        raise UnknownEnvError(f"unknown sciworld task id {task_id!r}: expected <task>_<variation> "
                              f"with a task among {', '.join(tasks)}")
    n = tasks[name]["variations"]
    if int(var) >= n:
        raise UnknownEnvError(f"sciworld task {name!r} has variations 0-{n - 1}, not {var}")
    return name, int(var)


def _own_split(name: str, split: str) -> range:
    """ScienceWorld's variations of one task in a split: contiguous train, dev, test ranges."""
    t = _task_data()["tasks"][name]
    train_end, dev_end = t["train"], t["train"] + t["dev"]
    return {"train": range(0, train_end), "dev": range(train_end, dev_end),
            "test": range(dev_end, t["variations"])}[split]


def instruction_of(task_id: str) -> str:
    """The task description of a task id, from the project data (no JVM)."""
    name, var = parse_task_id(task_id)
    t = _task_data()["tasks"][name]
    return t["descriptions"][t["description_index"][var]]


# --------------------------------------------------------------------------- expert thoughts

_THOUGHTS = (
    (re.compile(r"^look around$"), "I look around to see what is here."),
    (re.compile(r"^go to (.+)$"), "I go to the {0}."),
    (re.compile(r"^open (.+)$"), "I open the {0}."),
    (re.compile(r"^close (.+)$"), "I close the {0}."),
    (re.compile(r"^focus on (.+)$"), "The task is about the {0}, so I focus on it."),
    (re.compile(r"^pick up (.+)$"), "I need the {0}, so I pick it up."),
    (re.compile(r"^move (.+) to (.+)$"), "I move the {0} to the {1}."),
    (re.compile(r"^(?:pour|dunk) (.+) (?:in|into) (.+)$"), "I put the {0} into the {1}."),
    (re.compile(r"^(?:look at|look in|read) (.+)$"), "I examine the {0}."),
    (re.compile(r"^activate (.+)$"), "I turn on the {0}."),
    (re.compile(r"^deactivate (.+)$"), "I turn off the {0}."),
    (re.compile(r"^connect (.+) to (.+)$"), "I connect the {0} to the {1}."),
    (re.compile(r"^use (.+)$"), "I use the {0}."),
    (re.compile(r"^wait1?$"), "I wait for the change to happen."),
    (re.compile(r"^\d+$"), "Several objects match; I choose option {0}."),
)


def expert_thought(action: str) -> str:
    """A short thought for a gold action (the gold path has none)."""
    return rule_thought(action, _THOUGHTS, "Next I {}.")


# --------------------------------------------------------------------------- the JVM

_LAUNCH_LOCK = threading.Lock()


def _launch() -> Any:
    """Start one ScienceWorld JVM (heap capped unless the user set JAVA_TOOL_OPTIONS)."""
    try:
        from scienceworld import ScienceWorldEnv
    except ImportError as exc:
        raise UserError("the sciworld env needs the scienceworld package: pip install scienceworld") from exc
    if shutil.which("java") is None:
        raise UserError("the sciworld env needs Java 17 on PATH (e.g. apt-get install openjdk-17-jre-headless)")
    # The variable is read by the child JVM at launch; restore ours right after (lock: threads).
    with _LAUNCH_LOCK:
        had = "JAVA_TOOL_OPTIONS" in os.environ
        os.environ.setdefault("JAVA_TOOL_OPTIONS", DEFAULT_JAVA_OPTIONS)
        try:
            return ScienceWorldEnv("", envStepLimit=10**9)  # step limits are w2stree's, not the JVM's
        finally:
            if not had:
                del os.environ["JAVA_TOOL_OPTIONS"]


def _shutdown(sw: Any) -> None:
    """Stop a ScienceWorld JVM and wait for it; kill it if it does not exit. Never raises."""
    proc = sw._gateway.java_process
    with contextlib.suppress(Exception):  # a dead gateway: the process is handled below
        sw.close()
    sw.close = lambda: None  # ScienceWorldEnv.__del__ would close again
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- the env


@register_env("sciworld")
class SciWorldEnv(Env):
    """ScienceWorld tasks as `<task>_<variation>` ids; see the module docstring."""

    name = "sciworld"
    system_prompt = SYSTEM_PROMPT

    def __init__(self, fast_step: bool = True, simplifications: str = "", reward: str = "final") -> None:
        """`fast_step`: skip ScienceWorld's per-step extras (look, inventory, valid actions).
        `simplifications`: ScienceWorld's comma-separated simplification string ("" = none, as
        the paper). `reward`: `final` (current score) or `best` (best score so far, as the
        release); see the module docstring."""
        if reward not in REWARD_MODES:
            raise UserError(f"sciworld: reward={reward!r} is unknown; use final or best")
        self.reward_mode = reward
        self.fast_step = fast_step
        self.simplifications = simplifications
        self._sw: Any = None
        self._finalizer: weakref.finalize | None = None
        self._task: tuple[str, int] | None = None
        self._history: list[str] = []
        self._done = False
        self._last: dict[str, Any] = {}
        self._best = 0  # the best clipped score of the episode so far
        self._gold: dict[str, list[str]] = {}

    # -- process

    @property
    def pid(self) -> int | None:
        """The JVM's process id, while one runs."""
        return self._sw._gateway.java_process.pid if self._sw is not None else None

    def _server(self) -> Any:
        if self._sw is None:
            self._sw = _launch()
            self._finalizer = weakref.finalize(self, _shutdown, self._sw)
        return self._sw.server

    def close(self) -> None:
        """Shut the JVM down (a later reset starts a new one)."""
        if self._finalizer is not None:
            self._finalizer()
        self._sw = self._finalizer = None
        self._task = None

    # -- tasks

    def splits(self) -> list[str]:
        return [*OWN_SPLITS, *ETO_SPLITS]

    def tasks(self, split: str = "train") -> list[Task]:
        if split in ETO_SPLITS:
            ids = _split_data()["splits"][split]
        elif split in OWN_SPLITS:
            ids = [f"{name}_{v}" for name in task_names() for v in _own_split(name, split)]
        else:
            raise UserError(f"unknown sciworld split {split!r}; use one of {', '.join(self.splits())}")
        return [Task(self.name, tid, split, instruction_of(tid)) for tid in ids]

    def max_steps(self, task_id: str | None = None) -> int:
        """ETO's per-task step limit; ScienceWorld's default (100) for tasks ETO does not use."""
        if task_id is None:
            return DEFAULT_MAX_STEPS
        name, _ = parse_task_id(task_id)
        return int(_split_data()["max_steps"].get(name, DEFAULT_MAX_STEPS))

    # -- episodes

    def _load(self, name: str, var: int, gold: bool = False) -> str:
        """Load a task variation and return its first observation ('look around')."""
        server = self._server()
        server.load(name, var, self.simplifications, gold)
        return str(server.step("look around"))  # a free action: no move, no score

    def reset(self, task_id: str) -> tuple[str, str]:
        name, var = parse_task_id(task_id)
        obs = self._load(name, var)
        self._task, self._history, self._done = (name, var), [], False
        self._last = {"score": 0, "raw_score": 0, "success": False}
        self._best = 0
        return obs, str(self._sw.server.getTaskDescription())

    def step(self, action: str) -> StepResult:
        if self._task is None:
            raise UserError("sciworld: call reset(task_id) before step()")
        action = " ".join(str(action).split())
        if self._done:
            return self._noop(ENDED, done=True)
        if not action:
            return self._noop("Invalid action: empty input. " + NO_MATCH)
        from py4j.protocol import Py4JJavaError

        server = self._sw.server
        try:
            obs = str(server.step(action))
        except Py4JJavaError:  # the simulator's parser threw on this input: a no-op, not a crash
            return self._noop(f"Invalid action: {action!r}. " + NO_MATCH)
        self._history.append(action)
        raw = int(round(100 * server.getScore()))
        completed = bool(server.getCompleted())
        score = min(max(raw, 0), 100)
        self._done = completed or raw < 0
        info: dict[str, Any] = {"score": score, "raw_score": raw, "success": completed and raw >= 100,
                                "invalid": obs.startswith(NO_MATCH)}
        self._last = {k: info[k] for k in ("score", "raw_score", "success")}
        self._best = max(self._best, score)
        if not self.fast_step:
            info.update(moves=int(server.getNumMoves()), look=str(server.freeActionLook()),
                        inv=str(server.freeActionInventory()),
                        valid=list(server.getValidActionObjectCombinations()))
        return StepResult(obs, self._reward(), self._done, info)

    def _reward(self) -> float:
        return (self._best if self.reward_mode == "best" else self._last["score"]) / 100

    def _noop(self, observation: str, done: bool = False) -> StepResult:
        return StepResult(observation, self._reward(), done, {**self._last, "invalid": True})

    def valid_actions(self) -> list[str] | None:
        """ScienceWorld's valid action-object combinations now (a few hundred). Only with
        `fast_step=False`: the enumeration costs ~0.1 s, more than a step, and collection asks
        for it after every step."""
        if self.fast_step or self._task is None or self._done:
            return None
        return list(self._sw.server.getValidActionObjectCombinations())

    def gold_actions(self, task_id: str) -> list[str]:
        """ScienceWorld's gold action sequence of a task (cached; an episode in progress is kept)."""
        if task_id not in self._gold:
            name, var = parse_task_id(task_id)
            self._load(name, var, gold=True)
            self._gold[task_id] = [str(a) for a in self._sw.server.getGoldActionSequence()]
            if self._task is not None:  # restore the running episode: the simulator is deterministic
                self._load(*self._task)
                for a in self._history:
                    self._sw.server.step(a)
        return list(self._gold[task_id])

    def expert(self, task_id: str) -> list[ExpertStep]:
        return [ExpertStep(expert_thought(a), a) for a in self.gold_actions(task_id)]

    def same_observation(self, stored: str, replayed: str) -> bool:
        """The same lines, in any order: a JVM that loads a task again lists the objects of a room
        in another order (measured: the first load in a fresh JVM differs from every later one)."""
        return sorted(stored.splitlines()) == sorted(replayed.splitlines())

    def replan(self) -> list[ExpertStep] | None:
        """The rest of the gold path, when the episode so far followed it (ScienceWorld has no
        planner: its expert is the fixed gold sequence); None once the episode left it."""
        if self._task is None or self._done:
            return None
        gold = self.gold_actions(f"{self._task[0]}_{self._task[1]}")
        done = len(self._history)
        if [a.lower() for a in self._history] != [a.lower() for a in gold[:done]]:
            return None
        return [ExpertStep(expert_thought(a), a) for a in gold[done:]]

    @classmethod
    def one_shot(cls) -> tuple[str, list[Step]]:
        """The one-shot example: a recorded expert episode of a short train task (project data)."""
        ex = _task_data()["one_shot"]
        return ex["message"], [Step(**s) for s in ex["steps"]]


# --------------------------------------------------------------------------- data builder


def build_data(eto_dir: Path, out_dir: Path = DATA_DIR, describe: bool = True) -> None:
    """Regenerate `sciworld_tasks.json` (variation splits and descriptions: a few minutes, it loads
    every variation once; `describe=False` keeps the existing ones) and `eto_sciworld_split.json`
    from ETO's split files and the installed simulator, then record the one-shot episode."""
    from scienceworld import __version__

    tasks_file, split_file = out_dir / TASKS_FILE.name, out_dir / SPLIT_FILE.name
    env = SciWorldEnv()
    try:
        if describe:
            server = env._server()
            tasks: dict[str, Any] = {}
            for name in sorted(server.getTaskNames()):
                server.load(name, 0, "", False)
                train, dev, test = (list(f()) for f in (server.getVariationsTrain, server.getVariationsDev,
                                                        server.getVariationsTest))
                n = int(server.getTaskMaxVariations(name))
                assert train + dev + test == list(range(n)), f"{name}: splits are not contiguous"
                descriptions: list[str] = []
                index = []
                for v in range(n):
                    server.load(name, v, "", False)
                    d = str(server.getTaskDescription())
                    if d not in descriptions:
                        descriptions.append(d)
                    index.append(descriptions.index(d))
                tasks[name] = {"variations": n, "train": len(train), "dev": len(dev),
                               "descriptions": descriptions, "description_index": index}
                print(name, n, len(descriptions), file=sys.stderr)
            tasks_file.write_text(json.dumps({"scienceworld_version": __version__, "tasks": tasks},
                                             separators=(",", ":")))
            _task_data.cache_clear()
        unknown = set(ETO_TASK_NAMES.values()) - set(task_names())
        assert not unknown, f"ETO names map to unknown tasks {unknown}"

        eto = {f: json.loads((eto_dir / f"{f}.json").read_text())
               for f in ("train_indices", "dev_indices", "test_indices", "max_steps")}
        splits = {split: [from_eto_name(n, v) for n, v in eto[f"{own}_indices"]]
                  for split, own in ETO_SPLITS.items()}
        for split in ("eto-seen", "eto-unseen"):  # ScienceWorld dev / test variations
            for tid in splits[split]:
                name, var = parse_task_id(tid)
                assert var in _own_split(name, ETO_SPLITS[split]), (split, tid)
        split_file.write_text(json.dumps({
            "source": "ETO (Song et al. 2024) ScienceWorld split, also used by Ye et al. ICLR 2026: "
                      "train_indices / dev_indices (seen) / test_indices (unseen), max_steps",
            "eto_task_names": ETO_TASK_NAMES,
            "max_steps": {ETO_TASK_NAMES[k]: v for k, v in eto["max_steps"].items()},
            "splits": splits,
        }, indent=1))
        _split_data.cache_clear()

        obs, instruction = env.reset(ONE_SHOT_TASK)
        steps = []
        for ex in env.expert(ONE_SHOT_TASK):
            r = env.step(ex.action)
            steps.append({"thought": ex.thought, "action": ex.action, "observation": r.observation,
                          "reward": r.reward, "score": r.info["score"]})
            if r.done:  # gold paths may run past the end (a trailing "wait1")
                break
        assert r.info["success"], "the one-shot expert episode must succeed"
        doc = json.loads(tasks_file.read_text())
        doc["one_shot"] = {"task_id": ONE_SHOT_TASK, "message": task_message(instruction, obs),
                           "steps": steps}
        tasks_file.write_text(json.dumps(doc, separators=(",", ":")))
        _task_data.cache_clear()
    finally:
        env.close()


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "build-data" or sys.argv[3:] not in ([], ["--keep-descriptions"]):
        sys.exit("usage: python -m core.envs.sciworld build-data ETO_SPLIT_DIR [--keep-descriptions]")
    build_data(Path(sys.argv[2]), describe=sys.argv[3:] != ["--keep-descriptions"])
