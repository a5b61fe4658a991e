"""The one episode runner: live episodes, a policy asked for their next actions, one trajectory each.

`run_episodes` is the loop every front end runs (`collect`, hence `evaluate` and `run_policy`,
and `explore`): up to `width` episodes are live at once, each in its own env slot
(`core.env_slots`); a finished episode's slot starts the next pending one at once. An episode
ends when its env says done or at its step limit. Two drivers, chosen by the policy:

* Lockstep (the default: the in-process model, the scripted policies): each round every live
  episode waits, ONE `policy.act` call answers them all (what makes batched in-process
  generation fast), and the actions are played in their slots in one `slots.step` call.
* Independent (a policy whose `independent` is true: a model server, `core.agents.server`): each
  waiting episode's request is sent on its own (`policy.submit`, a future), so up to `width` are
  in flight; the runner waits for the first replies in (`FIRST_COMPLETED`), plays those episodes'
  actions together in one `slots.step` call and sends their next requests at once, so a slow
  reply (a long generation, a retry) holds only its own episode. Only the runner's thread
  touches the env slots and `on_end` (slots are not thread-safe); the policy's threads only
  answer. Episodes end in another order than in lockstep, but each is played the same way (a
  reply depends on its request alone) and stored by its `seq`: the stored trajectories are the same.

A pool whose worker died (`core.env_slots.SlotsLost`: a Ray actor was replaced) has lost the envs
of its slots: their episodes start over from their start in the new worker (`Episode.restart`;
a reply still outstanding for one of them is dropped), so each episode still ends, and is told
to `on_end`, exactly once.

`Episode` is one episode's state and the one way a trajectory is built from it (`play` uses it
too, with a person in place of the policy). `episode_slots` is the one rule for how many
episodes of an env run at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from core.agents.base import Policy, Request, Sampling
from core.agents.prompt import env_prefix, format_assistant, format_observation, parse_reply, task_message
from core.env_slots import EnvSlots, Outcome, SlotsLost
from core.envs.base import env_class, parse_env_name
from core.trajectory import Step, Trajectory

DEFAULT_BATCH = 32
#: Episodes per worker for envs whose every instance is a process (a ScienceWorld JVM of ~300 MB,
#: an ALFWorld game): 32 of them at once would exhaust a laptop.
SLOTS_PER_WORKER = {"sciworld": 4, "alfworld": 8}


def episode_slots(env: str, workers: int = 1, *, batched: bool = True, default: int = DEFAULT_BATCH) -> int:
    """How many episodes of `env` run at once, one env instance each: `SLOTS_PER_WORKER` per
    worker process for an env whose every instance is a process (one per worker for a policy
    that gains nothing from batching, `batched=False`), else `default`. The env's registry name
    decides: `sciworld?reward=best` is a sciworld."""
    per_worker = SLOTS_PER_WORKER.get(parse_env_name(env)[0])
    if per_worker is None:
        return default
    return (per_worker if batched else 1) * workers


def env_meta(env: str, task_id: str) -> dict[str, Any]:
    """The env class's `trajectory_meta` (e.g. ALFWorld's game file), without building an env."""
    cls = env_class(env)
    return cls.trajectory_meta(task_id) if cls is not None and hasattr(cls, "trajectory_meta") else {}


def episode_messages(env: str, instruction: str, observation: str, steps: Sequence[Step]) -> list[dict[str, str]]:
    """The chat a policy sees after `steps`: role + one-shot, the task, one turn pair per step."""
    messages = [*env_prefix(env), {"role": "user", "content": task_message(instruction, observation)}]
    for s in steps:
        messages += [{"role": "assistant", "content": format_assistant(s.thought, s.action)},
                     {"role": "user", "content": format_observation(s.observation)}]
    return messages


@dataclass
class Episode:
    """One episode: what it is (task, sampling, episode seed, place in its run) and what happened.

    `sampling` is None for a person's episode (`core.play`), which has no sampling and no seeds.
    `over`: no step is left (the env said done, `ended`, or the step limit was reached)."""

    task_id: str
    sampling: Sampling | None
    seed: int
    seq: int  # the episode's place in its run: the order its trajectories are listed in
    instruction: str = ""
    initial_observation: str = ""
    limit: int = 0
    valid: list[str] | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    n_invalid: int = 0
    ended: bool = False
    over: bool = False
    success: bool | None = None

    def begin(self, env: str, instruction: str, observation: str, limit: int, valid: list[str] | None, *,
              max_steps: int | None = None, prefix: Sequence[Step] = ()) -> None:
        """Start at the env's first observation, after the (replayed) `prefix` steps if any: at
        most `max_steps` steps after the prefix, and never past the env's `limit`."""
        self.instruction, self.initial_observation, self.valid = instruction, observation, valid
        self.steps = [replace(s) for s in prefix]
        self.limit = min(limit, len(self.steps) + max_steps) if max_steps else limit
        self.messages = episode_messages(env, instruction, observation, self.steps)
        self.over = len(self.steps) >= self.limit

    def restart(self) -> None:
        """Forget what happened (its env was lost with its worker): the episode starts over."""
        for f in fields(self):
            if f.name not in ("task_id", "sampling", "seed", "seq"):
                setattr(self, f.name, f.default_factory() if f.default is MISSING else f.default)

    def request(self, env: str) -> Request:
        """What the policy is asked for the next action."""
        assert self.sampling is not None, "a person's episode asks no policy"
        return Request(env=env, task_id=self.task_id, instruction=self.instruction, messages=list(self.messages),
                       history=list(self.steps), valid_actions=self.valid, sampling=self.sampling, seed=self.seed)

    def record(self, thought: str, action: str, outcome: Outcome) -> Step:
        """Add the step of `action` and the env's answer `outcome`; the episode is over when the
        env says done or at the step limit."""
        observation, reward, done, info, valid = outcome
        step = Step(action, observation, thought, reward, info.get("score"))
        self.steps.append(step)
        self.messages += [{"role": "assistant", "content": format_assistant(thought, action)},
                          {"role": "user", "content": format_observation(observation)}]
        self.valid = valid
        self.n_invalid += bool(info.get("invalid"))
        if "success" in info:
            self.success = bool(info["success"])
        self.ended = bool(done)
        self.over = self.ended or len(self.steps) >= self.limit
        return step

    def trajectory(self, env: str, *, run_id: str, source: str, model: str, policy: str,
                   env_kwargs: dict[str, Any], seed: int = 0, extra: dict[str, Any] | None = None) -> Trajectory:
        """The episode as a trajectory of run `run_id`: its reward is the last step's, its meta
        says how it was made (`extra` adds keys, e.g. explore's node)."""
        reward = self.steps[-1].reward if self.steps else 0.0
        sampled = self.sampling is not None  # a person's episode has no sampling and no seeds
        meta = {"initial_observation": self.initial_observation,
                **({"sampling": self.sampling.name()} if sampled else {}),
                "seq": self.seq, "policy": policy, "env_kwargs": env_kwargs,
                **({"seed": seed, "episode_seed": self.seed} if sampled else {}),
                "step_limit": self.limit, "truncated": not self.ended, "n_invalid": self.n_invalid,
                **(extra or {}), **env_meta(env, self.task_id)}
        return Trajectory(
            env=env, task_id=self.task_id, instruction=self.instruction, steps=self.steps, reward=reward,
            success=self.success if self.success is not None else reward >= 1.0, source=source, run_id=run_id,
            model=model, temperature=self.sampling.temperature if sampled else None,
            top_p=self.sampling.top_p if sampled else None, meta=meta)


#: Starts episodes in their slots: for every (slot, episode), reset (or replay) the slot's env
#: and call the episode's `begin`.
Starter = Callable[[list[tuple[int, Episode]]], None]


def reset_starter(env: str, slots: EnvSlots, max_steps: int | None = None) -> Starter:
    """The usual start: reset the slot's env to the episode's task, at most `max_steps` steps."""
    def start(items: list[tuple[int, Episode]]) -> None:
        for (_, ep), (obs, instruction, limit, valid) in zip(items, slots.reset([(s, ep.task_id) for s, ep in items])):
            ep.begin(env, instruction, obs, limit, valid, max_steps=max_steps)
    return start


class _Slots:
    """One `run_episodes` call's episodes in their slots: the live ones, those pending, those
    to (re)start; only the runner's thread touches them, the env slots and `on_end`."""

    def __init__(self, env: str, episodes: Iterable[Episode], slots: EnvSlots, width: int, start: Starter,
                 on_end: Callable[[Episode], None]) -> None:
        self.env, self.slots, self.start, self.on_end = env, slots, start, on_end
        self.pending = deque(episodes)
        self.live: list[Episode | None] = [None] * min(width, max(1, len(self.pending)))
        self.starts: list[tuple[int, Episode]] = []  # episodes to (re)start in their slots
        self.asked: dict[int, Future[str]] = {}  # independent: the slots whose reply is outstanding

    def busy(self) -> bool:
        return bool(self.pending) or any(ep is not None for ep in self.live)

    def lost(self, exc: SlotsLost, also: Iterable[tuple[int, Episode]] = ()) -> None:
        """The live episodes of the lost slots (and `also`) start over."""
        again = dict(also)
        again.update((s, self.live[s]) for s in exc.slots if s < len(self.live) and self.live[s] is not None)
        for s, ep in again.items():
            ep.restart()
            self.starts.append((s, ep))
            if s in self.asked:  # a reply to the episode before it started over
                self.asked.pop(s).cancel()

    def end(self, s: int, ep: Episode) -> None:
        self.live[s] = None
        self.on_end(ep)

    def fill(self) -> list[int]:
        """Start pending episodes in the free slots (and restart lost ones); an episode with no
        step left ends at once. The slots whose episode waits for an action ([] when a start
        lost slots: they start again first)."""
        for s, ep in enumerate(self.live):
            if ep is None and self.pending:
                self.live[s] = self.pending.popleft()
                self.starts.append((s, self.live[s]))
        if self.starts:
            items, self.starts = self.starts, []
            try:
                self.start(items)
            except SlotsLost as exc:  # a restart resets its env again: nothing is kept from this call
                self.lost(exc, items)
                return []
            for s, ep in items:
                if ep.over:  # no step left (explored from a node at the step limit)
                    self.end(s, ep)
        return [s for s, ep in enumerate(self.live) if ep is not None]

    def play(self, replies: list[tuple[int, str]]) -> None:
        """Play each (slot, reply)'s action in its slot, all in one `slots.step` call, and record
        the steps; an episode that is over ends."""
        moves = []
        for s, reply in replies:
            thought, action = parse_reply(reply)
            if action is None:  # unparsable: the raw text is the (invalid) action
                thought, action = "", reply
            moves.append((s, thought, action))
        try:
            outcomes = self.slots.step([(s, a) for s, _, a in moves])
        except SlotsLost as exc:
            outcomes = exc.results
            self.lost(exc)
        for (s, thought, action), outcome in zip(moves, outcomes):
            ep = self.live[s]
            if outcome is None:  # its slot was lost: it starts over
                continue
            ep.record(thought, action, outcome)
            if ep.over:
                self.end(s, ep)


def run_episodes(policy: Policy, env: str, episodes: Iterable[Episode], slots: EnvSlots, width: int, *,
                 start: Starter, on_end: Callable[[Episode], None],
                 should_stop: Callable[[], bool] | None = None) -> bool:
    """Play `episodes` with `policy`, at most `width` at once in `slots` (see the module
    docstring): in lockstep, or independently when the policy is `independent`; `on_end(episode)`
    is told as each one ends. Returns False when `should_stop()` ended the run early (the
    episodes still live are dropped), else True."""
    run = _Slots(env, episodes, slots, width, start, on_end)
    asked = run.asked

    def lockstep(waiting: list[int]) -> list[tuple[int, str]]:
        """Every waiting episode's reply, from ONE `policy.act` call."""
        try:
            replies = policy.act([run.live[s].request(env) for s in waiting])
        except SlotsLost as exc:  # a policy that reads the envs (the re-planning expert)
            run.lost(exc)
            return []
        if len(replies) != len(waiting):
            raise RuntimeError(f"policy {policy.name!r} answered {len(replies)} of {len(waiting)} requests")
        return list(zip(waiting, replies))

    def independently(waiting: list[int]) -> list[tuple[int, str]]:
        """The replies in so far (at least one), each waiting episode's request sent on its own."""
        for s in waiting:
            if s not in asked:
                asked[s] = policy.submit(run.live[s].request(env))
        done, _ = wait(asked.values(), return_when=FIRST_COMPLETED)
        return [(s, asked.pop(s).result()) for s in sorted(s for s, f in asked.items() if f in done)]

    answer = independently if policy.independent else lockstep
    try:
        while run.busy():
            if should_stop is not None and should_stop():
                return False
            waiting = run.fill()
            replies = answer(waiting) if waiting else []
            if replies:
                run.play(replies)
    finally:
        for f in asked.values():  # replies no episode waits for any more (a stop, an error)
            f.cancel()
    return True
