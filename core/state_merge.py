"""The state merge (`--merge state`): branches of a tree meet again where they reach one state.

With 4-6 episodes per task an action-prefix tree pairs only the first divergence: two different
first searches that show the same results page never meet again, so the decisions below them
(which product, which option, when to buy) get no sibling and no pair. Under the state merge two
episodes of one task that are in the same environment state after the same number of steps
(`Env.state_key`, read by replaying each episode in a fresh env) are one node from there on.

The episodes then form a graph of states: a node is (depth, state key), an edge an action that
led from one state to the next (the depth in the node keeps the graph acyclic, and it is the
step count the env's step limit reads). How the method is defined on it:

* **Edges.** Two actions that lead from one state to the same next state are one edge (the first
  episode's action, thought and observation): they are equivalent, and a pair between them would
  teach nothing.
* **Ends.** A path ends at every state where an episode ended, with that episode's reward (equal
  for all episodes ending there: the state decides the reward; a difference is an error).
* **The tree is the graph unfolded.** Every root-to-end path of the graph is one trajectory of the
  tree, so the subtree below a state is the same wherever the state is reached. A path that one
  episode played keeps that episode; a path that no episode played whole (the start of one, the
  end of another) is a spliced trajectory, stored with source `splice` (`SPLICE`) and
  `meta["spliced_from"]` (the episodes whose edges it takes, in path order). Every spliced path
  is replayed before it is kept: it must answer every stored observation and end with its stored
  reward (a state key that is coarser somewhere, such as the shop's, which leaves out the results
  list behind an item page, then costs a path, never a wrong one; `Unfolding.dropped` counts
  them). It is not a weak-model episode: counts of explored episodes leave it out.
* **MCTS and pairs** are the plain tree's (`core.mcts`, `core.pairs`) on the unfolded tree: a
  node's visits count the distinct state paths through it, not episodes, and a pair is cut where
  two different next states have one outcome each.

The plain action tree stays the default and the paper's method. `MAX_PATHS` bounds the unfolding
of one task (paths can multiply where many episodes cross); the paths past it are left out and
counted in `Unfolding.capped`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.envs.base import Env, make_env
from core.errors import UserError
from core.trajectory import Step, Trajectory
from core.tree_data import normalize_action

if TYPE_CHECKING:
    from core.store import Store

SPLICE = "splice"  # the source of a state path that no single episode played
MAX_PATHS = 256  # paths unfolded per task at most
#: meta fields a spliced trajectory takes from its first episode (the rest describe one episode's sampling)
KEPT_META = ("initial_observation", "env_kwargs", "step_limit", "policy")

Node = tuple[int, str]  # (depth, state key)


class StatePaths(list[Trajectory]):
    """Trajectories that are already the state paths of their episodes (`unfold`), so that
    building their tree does not replay them again."""


@dataclass
class Unfolding:
    """The state paths of a set of episodes, and what merging did."""

    paths: StatePaths = field(default_factory=StatePaths)
    episodes: int = 0  # episodes read
    spliced: int = 0  # paths that no single episode played
    merged: int = 0  # episodes whose path another one's stands for (an equivalent action)
    dropped: int = 0  # spliced paths whose replay did not reproduce them
    capped: int = 0  # tasks whose paths stopped at MAX_PATHS

    @property
    def new(self) -> list[Trajectory]:
        """The spliced paths (to store beside the trees)."""
        return [t for t in self.paths if t.source == SPLICE]



def replay(env: Env, traj: Trajectory) -> list[str] | None:
    """The env's state key after each step of `traj`, replayed from its task's start, or None
    when a step answers another observation than stored or the episode does not end with its
    stored reward. UserError when the env exposes no state key."""
    env.reset(traj.task_id)
    keys, reward = [], 0.0
    for step in traj.steps:
        res = env.step(step.action)
        if not env.same_observation(step.observation, res.observation):
            return None
        key = env.state_key()
        if key is None:
            raise UserError(f"state merge: env {traj.env!r} exposes no state key (Env.state_key); "
                            "use --merge action or observation")
        keys.append(key)
        reward = res.reward
    return keys if abs(reward - traj.reward) <= 1e-9 or not traj.steps else None


def unfold(trajs: Sequence[Trajectory], max_paths: int = MAX_PATHS) -> Unfolding:
    """The state paths of `trajs`, task by task in order of each task's first episode (one env
    per env name replays the episodes and checks the spliced paths)."""
    by_task: dict[tuple[str, str], list[Trajectory]] = {}
    for t in trajs:
        by_task.setdefault((t.env, t.task_id), []).append(t)
    out = Unfolding(episodes=len(trajs))
    envs: dict[str, Env] = {}
    try:
        for (name, _), episodes in by_task.items():
            if name not in envs:
                envs[name] = make_env(name)
            _unfold_task(envs[name], episodes, max_paths, out)
    finally:
        for env in envs.values():
            env.close()
    return out


def store_spliced(store: Store, paths: Sequence[Trajectory]) -> int:
    """Store the spliced paths among `paths` that the store does not hold yet (their ids are
    digests of their steps, so a rebuilt tree stores nothing twice); returns how many."""
    spliced = [t for t in paths if t.source == SPLICE]
    known = store.stored_traj_ids(t.traj_id for t in spliced)
    return store.add_trajectories(t for t in spliced if t.traj_id not in known)


def _unfold_task(env: Env, episodes: list[Trajectory], max_paths: int, out: Unfolding) -> None:
    root: Node = (0, "")
    edges: dict[Node, dict[Node, tuple[Step, Trajectory]]] = {root: {}}  # children in first-seen order
    ends: dict[Node, Trajectory] = {}  # the first episode that ended at a node
    played: dict[tuple[Node, ...], list[Trajectory]] = {}  # a whole path -> the episodes that played it
    for t in episodes:
        keys = replay(env, t)
        if keys is None:
            raise UserError(f"state merge: trajectory {t.traj_id} of task {t.task_id} does not replay as stored; "
                            f"env {t.env!r} is not deterministic there: use --merge action")
        path = [root]
        for depth, (step, key) in enumerate(zip(t.steps, keys, strict=True), start=1):
            node = (depth, key)
            edges.setdefault(node, {})
            edges[path[-1]].setdefault(node, (step, t))
            path.append(node)
        ends.setdefault(path[-1], t)
        played.setdefault(tuple(path), []).append(t)
    # depth-first over the graph, children in first-seen order: the tree's insertion order
    stack: list[list[Node]] = [[root]]
    kept: set[str] = set()
    count = 0
    while stack:
        path = stack.pop()
        if path[-1] in ends:
            episode = _player(path, edges, played.get(tuple(path), []))
            if episode is None:
                episode = _spliced(path, edges, ends[path[-1]])
                if replay(env, episode) is None:
                    out.dropped += 1
                    episode = None
                else:
                    out.spliced += 1
            if episode is not None:
                if count == max_paths:
                    out.capped += 1
                    break
                count += 1
                kept.add(episode.traj_id)
                out.paths.append(episode)
        stack.extend(path + [child] for child in reversed(edges[path[-1]]))
    out.merged += sum(1 for t in episodes if t.traj_id not in kept)


def _player(path: list[Node], edges: dict[Node, dict[Node, tuple[Step, Trajectory]]],
            players: list[Trajectory]) -> Trajectory | None:
    """The first episode that played `path` with the actions its edges keep (one that reached the
    same states by an equivalent action stands for nothing: its path is the kept edges')."""
    kept = [normalize_action(edges[a][b][0].action) for a, b in zip(path, path[1:])]
    return next((t for t in players if [normalize_action(a) for a in t.actions] == kept), None)


def _spliced(path: list[Node], edges: dict[Node, dict[Node, tuple[Step, Trajectory]]], end: Trajectory
             ) -> Trajectory:
    """The trajectory of a state path that no single episode played."""
    taken = [edges[a][b] for a, b in zip(path, path[1:])]
    owners = list(dict.fromkeys(t.traj_id for _, t in taken))
    first = taken[0][1] if taken else end
    digest = hashlib.sha1(json.dumps([end.env, end.task_id, [s.action for s, _ in taken], [k for _, k in path]])
                          .encode()).hexdigest()[:16]
    models = sorted({t.model for _, t in taken})
    return Trajectory(
        env=end.env, task_id=end.task_id, instruction=end.instruction,
        steps=[Step(s.action, s.observation, s.thought, s.reward, s.score) for s, _ in taken],
        reward=end.reward, success=end.success, source=SPLICE, model=models[0] if len(models) == 1 else "+".join(models),
        meta={**{k: first.meta[k] for k in KEPT_META if k in (first.meta or {})}, "spliced_from": owners},
        traj_id=f"s-{digest}")
