"""ALFWorld (TextWorld mode) as a w2stree environment, for users who have it with its game files.

Needs `pip install alfworld` (the `alfworld` extra; it brings TextWorld) and the game files that
`alfworld-download` puts under `$ALFWORLD_DATA`. Nothing is downloaded here.

Task ids are game folders relative to `$ALFWORLD_DATA/json_2.1.1`, e.g.
`valid_seen/pick_and_place_simple-Book-None-SideTable-329/trial_T20190908_050633_745514`.
Splits: `train` (json_2.1.1/train), `dev` = ALFWorld's valid_seen (the paper's "seen" set), `test` =
valid_unseen ("unseen"). Like ALFWorld's own loader, games of the `movable` and `Sliced` variants are
skipped. The first observation is the room description; the instruction is its
"Your task is to: ..." line. Reward 1 when TextWorld reports the game won, else 0; step limit 40
(the paper's). The expert is ALFWorld's hand-coded expert, played out once per task.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from core.envs.base import Env, ExpertStep, StepResult, UnknownEnvError, register_env
from core.errors import UserError
from core.trajectory import Task

SPLIT_DIRS = {"train": "train", "dev": "valid_seen", "test": "valid_unseen"}
GAME_FILE = "game.tw-pddl"
MAX_STEPS = 40
NOTHING = "Nothing happens."

SYSTEM_PROMPT = (
    "Interact with a household to solve a task. Each turn, answer with one thought and one action in "
    "the format\nThought: <your reasoning>\nAction: <one action>\n"
    "Available actions: go to RECEP; open RECEP; close RECEP; take OBJ from RECEP; "
    "move OBJ to RECEP; use OBJ; heat OBJ with RECEP; cool OBJ with RECEP; clean OBJ with RECEP; "
    "slice OBJ with OBJ; examine OBJ; look; inventory. An action that does nothing is answered "
    "with \"Nothing happens.\""
)


def _packages() -> tuple[Any, Any]:
    """(textworld, alfworld's alfred_tw_env module), imported on first use."""
    try:
        import textworld
        from alfworld.agents.environment import alfred_tw_env
    except ImportError as exc:
        raise UserError("the alfworld env needs ALFWorld: pip install 'w2stree[alfworld]' "
                        "(or pip install alfworld), then alfworld-download") from exc
    return textworld, alfred_tw_env


def data_root() -> Path:
    """`$ALFWORLD_DATA/json_2.1.1`, checked."""
    base = os.environ.get("ALFWORLD_DATA")
    if not base:
        raise UserError("the alfworld env needs its game files: set ALFWORLD_DATA to the folder "
                        "alfworld-download filled")
    root = Path(base).expanduser() / "json_2.1.1"
    if not root.is_dir():
        raise UserError(f"ALFWORLD_DATA={base} has no json_2.1.1 folder; run alfworld-download "
                        "or point ALFWORLD_DATA at its folder")
    return root


def split_instruction(first_observation: str) -> tuple[str, str]:
    """ALFWorld's first text → (room description, "Your task is to: ..."), dropping the banner."""
    parts = [p.strip() for p in first_observation.strip().split("\n\n") if p.strip()]
    parts = [p for p in parts if not p.startswith("-= Welcome to TextWorld")]
    task = next((p for p in parts if p.startswith("Your task is to")), "")
    room = "\n\n".join(p for p in parts if p != task)
    return room, task


@register_env("alfworld")
class ALFWorldEnv(Env):
    """ALFWorld's TextWorld games; see the module docstring."""

    name = "alfworld"
    system_prompt = SYSTEM_PROMPT

    def __init__(self, expert_type: str = "handcoded") -> None:
        """Fails with a one-line UserError when ALFWorld or ALFWORLD_DATA is missing."""
        self._textworld, self._alfred = _packages()
        self.root = data_root()
        self.expert_type = expert_type
        self._games: dict[str, list[str]] = {}
        self._env: Any = None
        self._state: Any = None
        self._done = False
        self._won = False
        self._experts: dict[str, list[str]] = {}

    def splits(self) -> list[str]:
        return list(SPLIT_DIRS)

    def _task_ids(self, split: str) -> list[str]:
        if split not in SPLIT_DIRS:
            raise UserError(f"unknown alfworld split {split!r}; use one of {', '.join(SPLIT_DIRS)}")
        if split not in self._games:
            base = self.root / SPLIT_DIRS[split]
            self._games[split] = sorted(
                str(p.parent.relative_to(self.root)) for p in base.glob(f"*/*/{GAME_FILE}")
                if "movable" not in p.parts[-3] and "Sliced" not in p.parts[-3])
        return self._games[split]

    def tasks(self, split: str = "train") -> list[Task]:
        # The instruction is only known once a game is loaded; listing stays cheap.
        return [Task(self.name, tid, split, "") for tid in self._task_ids(split)]

    def max_steps(self, task_id: str | None = None) -> int:
        return MAX_STEPS

    def _game_file(self, task_id: str) -> str:
        path = self.root / task_id / GAME_FILE
        if ".." in Path(task_id).parts or not path.is_file():
            raise UnknownEnvError(f"unknown alfworld task id {task_id!r}: no {GAME_FILE} under "
                                  f"{self.root}; list them with tasks(split)")
        return str(path)

    def _start(self, task_id: str, expert: bool = False) -> Any:
        """A TextWorld env on one game, demangled as ALFWorld does (optionally with its expert)."""
        tw, alfred = self._textworld, self._alfred
        infos = tw.EnvInfos(won=True, feedback=True, admissible_commands=True,
                            extras=["gamefile", "expert_plan"] if expert else ["gamefile"])
        wrappers = [alfred.AlfredDemangler(), alfred.AlfredInfos]
        if expert:
            wrappers.append(alfred.AlfredExpert(expert_type=self.expert_type))
        # positional infos: TextWorld renamed the parameter (infos → request_infos) across versions
        return tw.start(self._game_file(task_id), infos, wrappers=wrappers)

    def reset(self, task_id: str) -> tuple[str, str]:
        self.close()
        self._env = self._start(task_id)
        self._state = self._env.reset()
        self._done = self._won = False
        room, instruction = split_instruction(str(self._state["feedback"]))
        return room, instruction

    def step(self, action: str) -> StepResult:
        if self._env is None:
            raise UserError("alfworld: call reset(task_id) before step()")
        action = " ".join(str(action).split())
        if self._done:
            return StepResult("The episode has ended; reset to start a new one.", float(self._won), True,
                              {"invalid": True, "success": self._won})
        if not action:
            return StepResult(NOTHING, 0.0, False, {"invalid": True, "success": False})
        self._state, _score, done = self._env.step(action)
        self._won = bool(self._state["won"])
        self._done = bool(done) or self._won
        obs = str(self._state["feedback"]).strip()
        return StepResult(obs, float(self._won), self._done,
                          {"invalid": obs == NOTHING, "success": self._won})

    def valid_actions(self) -> list[str] | None:
        if self._state is None or self._done:
            return None
        return list(self._state["admissible_commands"])

    def expert(self, task_id: str) -> list[ExpertStep]:
        """ALFWorld's expert, played to the end on a separate game instance (cached)."""
        if task_id not in self._experts:
            env = self._start(task_id, expert=True)
            try:
                state, actions, done = env.reset(), [], False
                while not done and len(actions) < MAX_STEPS:
                    plan = state["extra.expert_plan"]
                    if not plan:
                        break
                    actions.append(str(plan[0]))
                    state, _score, done = env.step(actions[-1])
            finally:
                env.close()
            self._experts[task_id] = actions
        return [ExpertStep(f"I {a}." if a not in ("look", "inventory") else f"I {a} to check.", a)
                for a in self._experts[task_id]]

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
        self._env = self._state = None
