"""True values of tree nodes, by the env's expert (an oracle of what a node is really worth).

For every node of a stored tree: replay the node's action prefix (the first stored trajectory
through it) in a fresh env of the task, checking every observation (`core.node_replay.replay_steps`),
then let the env's expert play from that state within the steps left (`max_steps(task) -
depth`), re-planning before every step (`Env.replan`). The node's outcome:

* `value`: the reward the expert reaches; 0 when it does not finish in the steps left (the
  expert's plan is cut by the step limit, or it has no plan);
* `steps`: the expert's steps from the node to the end; None when it does not finish.

A node whose episode is over (a `buy now`, or the step limit) has its own final reward and 0
steps. A node whose prefix does not replay (ReplayMismatch) stays unknown.

Only envs whose expert plans from ANY state have an oracle: `Env.has_oracle` (the shop's
`replan` buys the open product if it fits, else goes back to a fitting result, else searches
again). ScienceWorld's expert is its fixed gold path. ALFWorld's handcoded expert
(`HandCodedTWAgent`) is not a planner over the current state: it decides from a memory it builds
from its own episode since the game's start (the receptacles listed in the intro, where it saw
each object, the receptacle it stands at, what it holds and where it took it from, the `close`
actions it owes), and its tracker assumes its own moves succeed (an inadmissible `go to X` still
moves its idea of where it stands). Feeding it a weak model's prefix gives it a wrong memory, so
its value from such a node would be a guess, not the truth: ALFWorld reports no oracle.

Outcomes are cached by (env, task, normalised action prefix), and one env instance serves every
task of an env.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.console import plural
from core.envs.base import Env, env_class, make_env
from core.errors import UserError
from core.node_replay import ReplayMismatch, replay_steps
from core.store import Store
from core.trajectory import Trajectory
from core.tree_data import NO_STEPS, Tree, normalize_action

Tick = Callable[[int], None]


@dataclass(frozen=True)
class Outcome:
    """What the expert reaches from a node: the reward, and its steps (None: did not finish)."""

    value: float
    steps: int | None


def has_oracle(env: str) -> bool:
    """Whether the env called `env` (parameters allowed) has an expert that plans from any state."""
    cls = env_class(env)
    return bool(cls is not None and getattr(cls, "has_oracle", False))


def check_oracle(env: str) -> None:
    """UserError (one line) when the env has no oracle."""
    if not has_oracle(env):
        raise UserError(f"no oracle for env {env!r}: its expert cannot plan from an arbitrary state "
                        "(only envs with Env.has_oracle, such as shop, have true node values)")


def expert_outcome(env: Env, steps_left: int) -> Outcome:
    """Play the env's expert from its current state, re-planning before each step, for at most
    `steps_left` steps. It finishes when the episode ends on the last step of its plan."""
    for taken in range(1, steps_left + 1):
        plan = env.replan()
        if not plan:
            break
        res = env.step(plan[0].action)
        if res.done:
            # ended by its own last step (a finished plan), not by the env's step limit
            return Outcome(float(res.reward), taken) if len(plan) == 1 else Outcome(0.0, None)
    return Outcome(0.0, None)


def node_outcome(env: Env, traj: Trajectory, depth: int, node: int, limit: int) -> Outcome:
    """The outcome of the node at `depth` of `traj`: replay its prefix (ReplayMismatch when the
    env answers otherwise), then the expert within `limit - depth` steps."""
    _, _, last = replay_steps(env, traj, depth, node)
    if last is not None and last.done:
        return Outcome(float(last.reward), 0)
    return expert_outcome(env, limit - depth)


@dataclass
class Oracle:
    """Computes node outcomes with one env per env name and a cache by (env, task, prefix)."""

    envs: dict[str, Env] = field(default_factory=dict)
    cache: dict[tuple[str, str, tuple[str, ...]], Outcome | None] = field(default_factory=dict)
    mismatches: int = 0

    def env(self, name: str) -> Env:
        if name not in self.envs:
            check_oracle(name)
            self.envs[name] = make_env(name)
        return self.envs[name]

    def outcome(self, traj: Trajectory, depth: int, node: int) -> Outcome | None:
        """The node's outcome; None when its prefix does not replay."""
        key = (traj.env, traj.task_id, tuple(normalize_action(s.action) for s in traj.steps[:depth]))
        if key not in self.cache:
            env = self.env(traj.env)
            try:
                self.cache[key] = node_outcome(env, traj, depth, node, env.max_steps(traj.task_id))
            except ReplayMismatch:
                self.mismatches += 1
                self.cache[key] = None
        return self.cache[key]

    def label(self, tree: Tree, trajectories: dict[str, Trajectory], redo: bool = False) -> int:
        """Fill the tree's `true_value` / `true_steps` in place (only unknown nodes unless `redo`);
        returns the number of nodes known afterwards."""
        first = tree.trajs.offsets[:-1]
        for node in range(tree.n_nodes):
            if not redo and not np.isnan(tree.true_value[node]):
                continue
            if tree.trajs.offsets[node + 1] == first[node]:
                continue  # no trajectory recorded through it
            traj = trajectories.get(str(tree.traj_ids[tree.trajs.values[first[node]]]))
            got = self.outcome(traj, int(tree.depth[node]), node) if traj is not None else None
            tree.true_value[node] = np.nan if got is None else got.value
            tree.true_steps[node] = NO_STEPS if got is None or got.steps is None else got.steps
        return int(np.isfinite(tree.true_value).sum())

    def close(self) -> None:
        for env in self.envs.values():
            env.close()
        self.envs.clear()


@dataclass
class OracleSummary:
    """What `label_stored` did."""

    trees: int
    nodes: int
    known: int
    mismatches: int

    def line(self) -> str:
        miss = f"; {plural(self.mismatches, 'node prefix')} did not replay (left unknown)" if self.mismatches else ""
        return f"true values of {self.known} / {plural(self.nodes, 'node')} in {plural(self.trees, 'tree')}{miss}"


def label_stored(store: Store, tree_ids: Sequence[str], *, redo: bool = False, chunk: int = 100,
                 progress: Tick | None = None) -> OracleSummary:
    """Compute and store the true values of the stored trees `tree_ids` (`chunk` trees per
    write: their trajectories are read once per chunk)."""
    oracle, nodes, known = Oracle(), 0, 0
    try:
        for i in range(0, len(tree_ids), chunk):
            trees = store.load_trees(tree_ids=list(tree_ids[i:i + chunk]))
            ids = [str(t) for g in trees for t in g.traj_ids]
            trajs = {t.traj_id: t for t in store.trajectories(traj_ids=ids)}
            for g in trees:
                known += oracle.label(g, trajs, redo)
                nodes += g.n_nodes
            store.save_true_values(trees)
            if progress is not None:
                progress(len(trees))
    finally:
        oracle.close()
    return OracleSummary(len(tree_ids), nodes, known, oracle.mismatches)
