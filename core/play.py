"""Play from here: a person continues a tree by hand from one of its nodes.

A `PlaySession` replays the node's prefix in a fresh env (the same observation checks as
`core.explore`), then takes actions one at a time, kept as a `core.episodes.Episode` (the one way
an episode becomes a trajectory). Nothing is stored until `save`, which stores
the episode as a trajectory of source `human` and grows the tree (`core.explore.grow_tree`);
`close` (or `discard`) releases the env. The env lives in this process (no worker): the
dashboard keeps the session in the browser session's state, and every session still open is
closed when it was idle for `IDLE_S` seconds (a reaper thread) or garbage-collected (a closed tab
drops its state), so a tab closed mid-game leaves no env process (a ScienceWorld JVM) behind.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from typing import Any

from core.envs.base import Env, make_env, parse_env_name
from core.episodes import Episode
from core.errors import UserError
from core.explore import grow_tree, load_node
from core.node_replay import replay_prefix
from core.store import Store
from core.trajectory import Run, Step, new_id, tree_id

SOURCE = "human"
IDLE_S = 15 * 60.0
_LIVE: weakref.WeakSet[PlaySession] = weakref.WeakSet()
_REAPER_LOCK = threading.Lock()
_REAPER: list[threading.Thread] = []


class PlaySession:
    """A live episode at a node of a stored tree; see the module docstring."""

    def __init__(self, store: Store, env: str, task_id: str, node: int, *, env_kwargs: dict[str, Any] | None = None,
                 player: str = "human") -> None:
        self.env_name, self.task_id, self.node, self.player = env, task_id, node, player
        self.env_kwargs = dict(env_kwargs or {})
        _, self.source, self.depth = load_node(store, env, task_id, node)
        kwargs = dict(self.env_kwargs)
        if parse_env_name(env)[0] == "sciworld":  # a person wants the valid actions (0.1 s a step)
            kwargs.setdefault("fast_step", False)
        self._env: Env | None = make_env(env, **kwargs)
        self._finalizer = weakref.finalize(self, _close_env, self._env)
        try:
            obs0, instruction, valid = replay_prefix(self._env, self.source, self.depth, node)
        except BaseException:
            self.close()
            raise
        self.episode = Episode(task_id, None, 0, 0)
        self.episode.begin(env, instruction, obs0, self._env.max_steps(task_id), valid,
                           prefix=self.source.steps[:self.depth])
        self.last_used = time.monotonic()
        _LIVE.add(self)
        _start_reaper()

    @property
    def closed(self) -> bool:
        return self._env is None

    @property
    def steps(self) -> list[Step]:
        """Every step so far: the node's prefix, then the played ones."""
        return self.episode.steps

    @property
    def valid(self) -> list[str] | None:
        """The env's valid actions now (None where it lists none)."""
        return self.episode.valid

    @property
    def limit(self) -> int:
        """The env's step limit of the task."""
        return self.episode.limit

    @property
    def done(self) -> bool:
        """Whether the episode is over (the env said done, or the step limit)."""
        return self.episode.over

    @property
    def observation(self) -> str:
        """What the env showed last."""
        return self.steps[-1].observation if self.steps else self.episode.initial_observation

    @property
    def played(self) -> list[Step]:
        """The steps played here (after the node)."""
        return self.steps[self.depth:]

    def step(self, action: str, thought: str = "") -> Step:
        """Play one action; the episode ends when the env says so or at its step limit."""
        if self._env is None:
            raise UserError("this play session is closed (idle too long, or discarded); start it again")
        if self.done:
            raise UserError("the episode is over: save it as a branch or discard it")
        action = action.strip()
        if not action:
            raise UserError("type an action first, e.g. one of the valid actions")
        self.last_used = time.monotonic()
        res = self._env.step(action)
        return self.episode.record(thought.strip(), action, (res.observation, float(res.reward), res.done,
                                                             dict(res.info), self._env.valid_actions()))

    def save(self, store: Store) -> tuple[str, list[int]]:
        """Store the episode (source `human`), grow the tree; close. Returns (trajectory id, new
        node ids)."""
        if not self.played:
            raise UserError("play at least one step before saving a branch")
        run_id = new_id("run-")
        tree = tree_id(self.env_name, self.task_id)
        traj = self.episode.trajectory(
            self.env_name, run_id=run_id, source=SOURCE, model=self.player, policy=SOURCE,
            env_kwargs=self.env_kwargs, extra={"explore": {"tree_id": tree, "node": self.node,
                                                           "from_traj": self.source.traj_id,
                                                           "prefix_steps": self.depth}})
        store.add_run(Run(run_id, SOURCE, self.env_name, SOURCE, self.player,
                          {"source": SOURCE, "node": self.node, "tree_id": tree}), status="finished")
        store.add_trajectories([traj])
        self.close()
        new_nodes, _ = grow_tree(store, self.env_name, self.task_id, [traj.traj_id])
        return traj.traj_id, new_nodes

    def close(self) -> None:
        """Release the env (idempotent). Discarding a game is closing it unsaved."""
        self._finalizer()
        self._env = None
        _LIVE.discard(self)

    discard = close


def _close_env(env: Env) -> None:
    with contextlib.suppress(Exception):  # best effort: a dead JVM is gone anyway
        env.close()


def reap(idle_s: float = IDLE_S) -> int:
    """Close the sessions idle for more than `idle_s` seconds; returns how many."""
    now = time.monotonic()
    stale = [s for s in list(_LIVE) if now - s.last_used > idle_s]
    for s in stale:
        s.close()
    return len(stale)


def live_sessions() -> int:
    """How many play sessions hold an env now."""
    return len(_LIVE)


def _start_reaper() -> None:
    with _REAPER_LOCK:
        if _REAPER and _REAPER[0].is_alive():
            return

        def loop() -> None:
            while True:
                time.sleep(60)
                reap()

        thread = threading.Thread(target=loop, name="w2stree-play-reaper", daemon=True)
        thread.start()
        _REAPER[:] = [thread]
