"""ALFWorld (TextWorld mode, PyPI `alfworld` 0.4.x) as a w2stree environment.

Needs `pip install 'w2stree[alfworld]'` (ALFWorld with TextWorld and its PDDL planner) and the
game files (core.envs.alfworld_data: `$ALFWORLD_DATA`, or `w2stree data alfworld --from DIR`).
Nothing is downloaded.

A game runs as ALFWorld's own TextWorld environment: `textworld.start(game.tw-pddl)` with
ALFWorld's `AlfredDemangler` (no shuffling) and `AlfredInfos`, in this process (TextWorld's
PDDL engine is a library, not a process). Loading a game costs about 3 s on these machines; a
reset of the game already loaded re-uses it.

* Observation: the game's text. The first one is the room description; the instruction is the
  game's "Your task is to: ..." line (kept whole, as ETO's prompts show it).
* Valid actions: the game's admissible commands, in the game file's own grammar (the data
  release's games, like ETO's and the paper's, say "put X in/on Y"; alfworld 0.4's re-generated
  games say "move X to Y"). An action that is not one of them is answered
  as ALFWorld answers it, "Nothing happens.", changes nothing, and counts as a step
  (`info["invalid"]`). Actions are compared as ALFWorld compares them (exact text, whitespace
  collapsed).
* Reward 1 when the game is won (the episode ends), else 0. Step limit 40 (the release's).
* Expert: ALFWorld's handcoded expert (`AlfredExpert`), played out on its own game instance
  up to the step limit; its plan, with a short thought per step, is `expert(task_id)` (cached).
* Trajectories name their game file relative to the data root: `meta["game"]`.
* Splits (core.envs.alfworld_data.SPLITS): `train`; `dev`, an alias of `eto-seen` (ALFRED's
  `valid_seen`, the paper's seen set), where every tuning choice is made; `test`, the
  `eto-unseen` games (`valid_unseen`) sorted by path. The three hold disjoint games.
* No oracle (`Env.has_oracle` stays False, no `replan`): the handcoded expert is not a planner over
  the current state but a tracker of its own episode (receptacles from the intro, where it saw each
  object, where it stands, what it holds, the `close` actions it owes), built from its own moves
  since the game's start; a weak model's prefix would leave that memory wrong (core/oracle.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from core.agents.prompt import task_message
from core.envs import alfworld_data as data
from core.envs.base import Env, ExpertStep, StepResult, register_env, rule_thought
from core.errors import UserError
from core.trajectory import Step, Task

MAX_STEPS = 40
NOTHING = "Nothing happens."
ENDED = "The episode has ended; reset to start a new one."
TASK_PREFIX = "Your task is to:"

SYSTEM_PROMPT = (
    "Interact with a household to solve a task. You are an agent in a house; at the start you are "
    "told what the room holds and what your task is. Each turn you get the observation of your last "
    "action; think about the situation and your plan, then act. Answer every turn in exactly this "
    "format:\nThought: <your reasoning>\nAction: <one action>\n\n"
    "The available actions are:\n"
    "1. go to RECEP\n2. open RECEP\n3. close RECEP\n4. take OBJ from RECEP\n5. put OBJ in/on RECEP\n"
    "6. use OBJ\n7. heat OBJ with RECEP\n8. cool OBJ with RECEP\n9. clean OBJ with RECEP\n"
    "10. examine OBJ or RECEP\n11. look\n12. inventory\n"
    "where OBJ and RECEP are objects and receptacles as the observations name them (e.g. "
    "\"apple 1\", \"countertop 2\"). If the environment answers \"Nothing happens.\", the action was "
    "not possible: try another one."
)

#: the one-shot example: a train game outside both test splits, played by the expert
ONE_SHOT_FILE = data.PACKAGE_DATA / "alfworld_one_shot.json"
ONE_SHOT_TASK = "train/pick_clean_then_place_in_recep-Apple-None-DiningTable-19/trial_T20190907_230021_185388"


def _packages(root: Path) -> tuple[Any, Any]:
    """(textworld, ALFWorld's alfred_tw_env module), imported on first use.

    Importing `alfworld` creates `~/.cache/alfworld` and sets `ALFWORLD_DATA` in os.environ when
    it is unset; pointing it at our data root for the import, then restoring, avoids both."""
    saved = os.environ.get("ALFWORLD_DATA")
    os.environ["ALFWORLD_DATA"] = str(root)
    try:
        import textworld
        from alfworld.agents.environment import alfred_tw_env
    except ImportError as exc:
        raise UserError("the alfworld env needs ALFWorld: pip install 'w2stree[alfworld]' "
                        "(or pip install alfworld)") from exc
    finally:
        if saved is None:
            del os.environ["ALFWORLD_DATA"]
        else:
            os.environ["ALFWORLD_DATA"] = saved
    return textworld, alfred_tw_env


def split_instruction(first_observation: str) -> tuple[str, str]:
    """ALFWorld's first text → (room description, "Your task is to: ..."), dropping the banner."""
    parts = [p.strip() for p in first_observation.strip().split("\n\n") if p.strip()]
    parts = [p for p in parts if not p.startswith("-= Welcome to TextWorld")]
    task = next((p for p in parts if p.startswith(TASK_PREFIX)), "")
    room = "\n\n".join(p for p in parts if p != task)
    return room, task


_THOUGHTS = (
    (re.compile(r"^go to (.+)$"), "Next I check {0}."),
    (re.compile(r"^open (.+)$"), "{0} is closed; I open it to see inside."),
    (re.compile(r"^close (.+)$"), "I close {0} again."),
    (re.compile(r"^take (.+) from (.+)$"), "I found {0} in {1}; I take it."),
    (re.compile(r"^(?:put (.+) in/on|move (.+) to) (.+)$"), "I have {0}{1}; now I put it in/on {2}."),
    (re.compile(r"^(heat|cool|clean) (.+) with (.+)$"), "The task needs it; I {0} {1} with {2}."),
    (re.compile(r"^use (.+)$"), "I turn on {0} to look at what I hold."),
    (re.compile(r"^examine (.+)$"), "I examine {0}."),
)


def expert_thought(action: str) -> str:
    """A short thought for an expert action (ALFWorld's expert has none)."""
    return rule_thought(action, _THOUGHTS, "I {} to see where I am.")


_PUT = re.compile(r"^put (.+) in/on (.+)$")
_MOVE = re.compile(r"^move (.+) to (.+)$")


class _ExpertDriver:
    """ALFWorld's handcoded TextWorld expert (`HandCodedTWAgent`), driven the way ALFWorld's
    `AlfredExpert` wrapper drives it (observe the intro, then act on each state; an answer that
    is not admissible becomes "look"; the wrapper's opening "look" is skipped), with two
    differences:

    * Grammar: the game files of ALFWorld's data release (and ETO's, the paper's) say
      "put X in/on Y", while alfworld 0.4's expert looks for, and answers, "move X to Y". The
      driver shows the expert "move" where the game has "put ... in/on" and plays the game's
      own command; the expert's state tracking is given the game's command (it looks for "put").
      Games in 0.4's grammar pass through unchanged.
    * Determinism: the expert breaks loops with `random.choice`; it runs under a per-task seed
      (the global `random` state is restored afterwards), so a task's plan is always the same.
    """

    def __init__(self, game: Path, task_id: str) -> None:
        from alfworld.agents.expert import HandCodedAgentFailed, HandCodedAgentTimeout, HandCodedTWAgent

        self.agent = HandCodedTWAgent(max_steps=200)
        self.agent.reset(str(game))
        self.stop = (HandCodedAgentFailed, HandCodedAgentTimeout)
        self.seed = task_id

    @staticmethod
    def _expert_view(state: Any) -> Any:
        view = dict(state)
        view["admissible_commands"] = [_PUT.sub(r"move \1 to \2", c) for c in state["admissible_commands"]]
        return view

    @staticmethod
    def _game_command(action: str, admissible: list[str]) -> str:
        if action in admissible:
            return action
        put = _MOVE.sub(r"put \1 in/on \2", action)
        return put if put in admissible else "look"

    def play(self, env: Any, limit: int) -> list[str]:
        import random

        saved = random.getstate()
        random.seed(self.seed)
        try:
            state = env.reset()
            self.agent.observe(state["feedback"])
            actions: list[str] = []
            while len(actions) < limit and not state["won"]:
                try:
                    # ALFWorld's wrapper first plays "look", whose answer is the intro's room
                    # description: acting on the intro as if after "look" saves that step
                    answer = self.agent.act(self._expert_view(state), 0, False, actions[-1] if actions else "look")
                except self.stop:
                    break
                actions.append(self._game_command(str(answer), state["admissible_commands"]))
                state, _score, _done = env.step(actions[-1])
            return actions
        finally:
            random.setstate(saved)


@register_env("alfworld")
class ALFWorldEnv(Env):
    """ALFWorld's TextWorld games; see the module docstring."""

    name = "alfworld"
    system_prompt = SYSTEM_PROMPT

    def __init__(self) -> None:
        """Fails with a one-line UserError when ALFWorld or its data is missing."""
        self.root = data.checked_root()
        self._textworld, self._alfred = _packages(self.root)
        self._env: Any = None
        self._task: str | None = None
        self._state: Any = None
        self._done = False
        self._won = False
        self._experts: dict[str, list[str]] = {}
        self._facts = False  # whether games start with their facts tracked (`state_key`)
        self._sent: list[str] = []  # the actions the running game was given since its reset

    # -- tasks

    def splits(self) -> list[str]:
        return list(data.SPLITS)

    def tasks(self, split: str = "train") -> list[Task]:
        # The instruction is in the game's text, known only once it is loaded; listing stays cheap.
        return [Task(self.name, tid, split, "") for tid in data.split_games(split, self.root)]

    def max_steps(self, task_id: str | None = None) -> int:
        return MAX_STEPS

    @staticmethod
    def trajectory_meta(task_id: str) -> dict[str, Any]:
        """`{"game": <game file relative to the data root>}` for every ALFWorld trajectory."""
        return {"game": data.relative_game(task_id)}

    # -- episodes

    def _start(self, task_id: str) -> Any:
        """A TextWorld env on one game, wrapped as ALFWorld does."""
        tw, alfred = self._textworld, self._alfred
        infos = tw.EnvInfos(won=True, feedback=True, admissible_commands=True, extras=["gamefile"],
                            facts=self._facts)
        wrappers = [alfred.AlfredDemangler(shuffle=False), alfred.AlfredInfos]
        return tw.start(str(data.game_path(task_id, self.root)), infos, wrappers=wrappers)

    def reset(self, task_id: str) -> tuple[str, str]:
        if self._env is None or self._task != task_id:
            self.close()
            self._env = self._start(task_id)
            self._task = task_id
        self._state = self._env.reset()
        self._done = self._won = False
        self._sent = []
        room, instruction = split_instruction(str(self._state["feedback"]))
        return room, instruction

    def step(self, action: str) -> StepResult:
        if self._env is None:
            raise UserError("alfworld: call reset(task_id) before step()")
        action = " ".join(str(action).split())
        if self._done:
            return StepResult(ENDED, float(self._won), True, {"invalid": True, "success": self._won})
        invalid = action not in self._state["admissible_commands"]
        # ALFWorld itself answers an inadmissible command with "Nothing happens." and no change;
        # an empty one would match nothing either, so it is answered the same way without a call.
        if action:
            self._sent.append(action)
            self._state, _score, done = self._env.step(action)
            self._won = bool(self._state["won"])
            self._done = bool(done) or self._won
            obs = str(self._state["feedback"]).strip()
        else:
            obs = NOTHING
        return StepResult(obs, float(self._won), self._done, {"invalid": invalid, "success": self._won})

    def state_key(self) -> str | None:
        """A digest of the game's facts (its whole PDDL state: where the agent is, where each object
        is, what is open, clean, hot, cool or held) and whether it is won: what the next feedback
        and the reward depend on. Tracking facts costs ~8 % per step, so games track them only
        once a key is asked for: the first ask restarts the game with facts and plays the
        episode's actions again (a deterministic game reaches the same state). The `checked(...)`
        facts are left out: they record what `look`, `inventory` and `examine` were asked about and
        change no later feedback (a spliced path is replayed before it is kept, `core.state_merge`,
        so a key that is too coarse somewhere costs a path, never a wrong one)."""
        if self._state is None:
            return None
        if not self._facts:
            self._facts = True
            task, sent = self._task, list(self._sent)
            self.close()
            self._env, self._task = self._start(task), task
            self._state = self._env.reset()
            for action in sent:
                self._state, _score, _done = self._env.step(action)
            self._sent = sent
        facts = "\n".join(sorted(f for f in map(str, self._state["facts"]) if not f.startswith("checked(")))
        return hashlib.blake2b(f"{facts}\n{int(self._won)}".encode(), digest_size=16).hexdigest()

    def valid_actions(self) -> list[str] | None:
        if self._state is None or self._done:
            return None
        return list(self._state["admissible_commands"])

    def expert_actions(self, task_id: str) -> list[str]:
        """ALFWorld's handcoded expert played to the end (or the step limit) on its own game
        instance; cached per env. See `_ExpertDriver` for how it is driven."""
        if task_id not in self._experts:
            tw = self._textworld
            game = data.game_path(task_id, self.root)
            infos = tw.EnvInfos(won=True, feedback=True, admissible_commands=True, facts=True)
            env = tw.start(str(game), infos, wrappers=[self._alfred.AlfredDemangler(shuffle=False),
                                                        self._alfred.AlfredInfos])
            try:
                self._experts[task_id] = _ExpertDriver(game, task_id).play(env, MAX_STEPS)
            finally:
                env.close()
        return list(self._experts[task_id])

    def expert(self, task_id: str) -> list[ExpertStep]:
        return [ExpertStep(expert_thought(a), a) for a in self.expert_actions(task_id)]

    @classmethod
    def one_shot(cls) -> tuple[str, list[Step]]:
        """The one-shot example (project data: an expert episode of `ONE_SHOT_TASK`)."""
        ex = json.loads(ONE_SHOT_FILE.read_text())
        return ex["message"], [Step(**s) for s in ex["steps"]]

    def close(self) -> None:
        if self._env is not None:
            with contextlib.suppress(Exception):  # closing is best effort
                self._env.close()
        self._env = self._state = self._task = None


def build_one_shot() -> None:
    """Record the one-shot example: the expert's episode of `ONE_SHOT_TASK` (a bundled train
    game), as the task message and steps the prompt shows."""
    env = ALFWorldEnv()
    try:
        room, instruction = env.reset(ONE_SHOT_TASK)
        steps = []
        for ex in env.expert(ONE_SHOT_TASK):
            r = env.step(ex.action)
            steps.append({"thought": ex.thought, "action": ex.action, "observation": r.observation,
                          "reward": r.reward})
        assert r.info["success"], "the one-shot expert episode must succeed"
    finally:
        env.close()
    ONE_SHOT_FILE.write_text(json.dumps({"task_id": ONE_SHOT_TASK, "message": task_message(instruction, room),
                                         "steps": steps}, indent=1) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["build-one-shot"]:
        sys.exit("usage: ALFWORLD_DATA=... python -m core.envs.alfworld build-one-shot")
    build_one_shot()
