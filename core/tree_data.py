"""The columnar trajectory tree: one tree as numpy arrays, one entry per node.

Node ids are positions (0 = the root, a parent's id is lower than its children's, children in
ascending id = first-insertion order). Variable-length node fields (distinct thoughts and
observations, final rewards of the trajectories ending at a node, trajectories through a node)
are `Ragged`: CSR offsets plus one flat value array. Trajectories are referred to by their
position in `Tree.traj_ids` (insertion order).

`Tree.to_networkx()` gives the `networkx.DiGraph` users, the semantic merge and the dashboard
work with (node attributes exactly `NODE_FIELDS`); `Tree.from_networkx` reads one.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from core.errors import UserError
from core.trajectory import Trajectory

#: Node attributes of a tree's DiGraph (and columns of the store's `nodes` table).
NODE_FIELDS = (
    "depth", "action", "thoughts", "observations", "visits", "value_sum", "successes",
    "failures", "terminal_rewards", "mcts_visits", "mcts_value_sum", "traj_ids", "true_value", "true_steps",
)

#: `Tree.true_steps` of a node whose expert steps are unknown (no oracle yet, or the expert failed).
NO_STEPS = -1


def normalize_action(a: str) -> str:
    """The merge key of an action: whitespace runs collapsed to one space, lower case."""
    return " ".join(a.split()).lower()


def normalize_observation(o: str) -> str:
    """The observation part of the `observation` merge key: whitespace runs collapsed."""
    return " ".join(o.split())


@dataclass(eq=False)
class Ragged:
    """Rows of varying length: row i is `values[offsets[i]:offsets[i + 1]]`."""

    offsets: np.ndarray  # int64, one more than the number of rows
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> list[Any]:
        return self.values[self.offsets[i]:self.offsets[i + 1]].tolist()

    def lengths(self) -> np.ndarray:
        """The length of every row."""
        return np.diff(self.offsets)

    def lists(self) -> list[list[Any]]:
        """Every row as a Python list."""
        vals = self.values.tolist()
        off = self.offsets.tolist()
        return [vals[a:b] for a, b in zip(off[:-1], off[1:])]

    def rows_of_values(self) -> np.ndarray:
        """The row of every value."""
        return np.repeat(np.arange(len(self)), self.lengths())

    def slice(self, lo: int, hi: int) -> Ragged:
        """Rows lo..hi-1 (the values are a view)."""
        off = self.offsets[lo:hi + 1]
        return Ragged(off - off[0], self.values[off[0]:off[-1]])

    def split(self, bounds: np.ndarray) -> list[Ragged]:
        """Rows `bounds[i]..bounds[i + 1] - 1` as part i, for every i (`bounds` ascending): the
        `slice` of each, with all parts' offsets computed at once (their values are views)."""
        bounds = np.asarray(bounds, np.int64)
        sizes = np.diff(bounds) + 1  # a part's offsets: one more than its rows
        ends = np.cumsum(sizes)
        part = np.repeat(np.arange(len(sizes)), sizes)
        rows = np.arange(int(ends[-1]) if len(ends) else 0) - part + bounds[0]  # lo..hi of each part
        starts = self.offsets[bounds]
        local = self.offsets[rows] - starts[part]
        ends_l, starts_l = ends.tolist(), starts.tolist()
        return [Ragged(local[e - k:e], self.values[starts_l[i]:starts_l[i + 1]])
                for i, (e, k) in enumerate(zip(ends_l, sizes.tolist()))]

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[Any]], dtype: Any = object) -> Ragged:
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum([len(r) for r in rows], out=offsets[1:])
        values = np.empty(int(offsets[-1]), dtype=dtype)
        if len(values):
            values[:] = [v for r in rows for v in r]
        return cls(offsets, values)

    @classmethod
    def grouped(cls, rows: np.ndarray, values: np.ndarray, n: int) -> Ragged:
        """`values` grouped by their row (0..n-1), each row's values in their given order."""
        order = np.argsort(rows, kind="stable")
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
        return cls(offsets, values[order])


def concat(parts: Sequence[Ragged]) -> Ragged:
    """The rows of several Ragged, one after the other."""
    if not parts:
        return Ragged(np.zeros(1, np.int64), np.empty(0, object))
    sizes = np.array([len(p.values) for p in parts], np.int64)
    base = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    offsets = np.concatenate([np.zeros(1, np.int64)] + [p.offsets[1:] + b for p, b in zip(parts, base)])
    return Ragged(offsets.astype(np.int64), np.concatenate([p.values for p in parts]))


@dataclass(eq=False)
class Tree:
    """One trajectory tree (all trajectories of one (env, task_id)) as arrays.

    Metadata: `tree_id` (= "env/task_id"), `merge` and `settings` (merge rule and its settings,
    plus `settings["mcts"]` once scored), `best_path` (node ids, empty before MCTS),
    `mcts_iterations`, `mcts_c`, `mcts_rule` (None before MCTS), `version` (the stored version
    this tree was loaded as; None for a tree built in memory).

    Oracle columns (`core.oracle`): `true_value` (float64, NaN where unknown) is the reward the
    env's expert reaches from the node's state within the steps left, `true_steps` (int64,
    `NO_STEPS` where unknown or where the expert did not finish) its steps from there.
    """

    tree_id: str
    env: str
    task_id: str
    instruction: str
    initial_observation: str
    merge: str
    settings: dict[str, Any]
    parent: np.ndarray  # int64, -1 for the root
    depth: np.ndarray  # int64
    action: np.ndarray  # object (str): the first-seen raw action text
    thoughts: Ragged  # distinct thoughts seen at the node, first-seen order
    observations: Ragged  # distinct observations after the step, first-seen order
    visits: np.ndarray  # int64: trajectories through the node
    value_sum: np.ndarray  # float64: sum of their final rewards (in insertion order)
    successes: np.ndarray  # int64
    failures: np.ndarray  # int64
    terminal_rewards: Ragged  # float64: final rewards of the trajectories ending here
    mcts_visits: np.ndarray  # int64
    mcts_value_sum: np.ndarray  # float64
    trajs: Ragged  # int64: positions in traj_ids of the trajectories through the node
    traj_ids: np.ndarray  # object (str), insertion order
    best_path: list[int] = field(default_factory=list)
    mcts_iterations: int | None = None
    mcts_c: float | None = None
    mcts_rule: str | None = None
    version: int | None = None
    true_value: np.ndarray | None = None  # float64, NaN: unknown (filled in __post_init__)
    true_steps: np.ndarray | None = None  # int64, NO_STEPS: unknown or the expert did not finish

    def __post_init__(self) -> None:
        n = len(self.parent)
        if self.true_value is None:
            self.true_value = np.full(n, np.nan)
        if self.true_steps is None:
            self.true_steps = np.full(n, NO_STEPS, np.int64)

    # -- shape ---------------------------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        return len(self.parent)

    @property
    def n_trajectories(self) -> int:
        return len(self.traj_ids)

    def child_index(self) -> Ragged:
        """Children of every node in ascending id (= first-insertion) order."""
        kids = np.arange(1, self.n_nodes)
        return Ragged.grouped(self.parent[1:], kids, self.n_nodes) if self.n_nodes > 1 else \
            Ragged(np.zeros(self.n_nodes + 1, np.int64), np.empty(0, np.int64))

    def branching(self) -> np.ndarray:
        """Ids of the nodes with two or more children, ascending."""
        counts = np.bincount(self.parent[1:], minlength=self.n_nodes)
        return np.flatnonzero(counts > 1)

    # -- node questions ------------------------------------------------------------------------
    def children(self, node: int) -> list[int]:
        """The children of `node` in first-insertion order (ascending node id)."""
        return (np.flatnonzero(self.parent == node)).tolist()

    def path_to(self, node: int) -> list[int]:
        """Node ids from the root (0) down to `node`, both included."""
        path = [int(node)]
        parent = self.parent
        while parent[path[-1]] >= 0:
            path.append(int(parent[path[-1]]))
        path.reverse()
        return path

    def has_oracle(self) -> bool:
        """Whether any node has a true value (`core.oracle`)."""
        return bool(np.isfinite(self.true_value).any())

    def node_value(self, node: int, kind: str = "data") -> float:
        """Mean value of a node: `data` = value_sum / visits, `mcts` = mcts_value_sum /
        mcts_visits; 0.0 when it has no visits."""
        if kind == "data":
            v = int(self.visits[node])
            return float(self.value_sum[node]) / v if v else 0.0
        if kind == "mcts":
            v = int(self.mcts_visits[node])
            return float(self.mcts_value_sum[node]) / v if v else 0.0
        raise UserError(f"unknown value kind {kind!r}; use data or mcts")

    def trajectory_ends(self) -> dict[str, tuple[int, float]]:
        """Per trajectory, in insertion order: (the node it ends at, its final reward)."""
        end = np.zeros(self.n_trajectories, np.int64)
        # Deepest node holding the trajectory: assign in ascending depth, the deepest last.
        rows = self.trajs.rows_of_values()
        order = np.argsort(self.depth[rows], kind="stable")
        end[self.trajs.values[order]] = rows[order]
        ending = Ragged.grouped(end, np.arange(self.n_trajectories), self.n_nodes)
        # terminal_rewards of a node list the rewards of the trajectories ending there in order.
        if not np.array_equal(ending.offsets, self.terminal_rewards.offsets):
            raise UserError(f"tree {self.tree_id} lists final rewards that do not match its trajectories; "
                            "rebuild it with `w2stree tree`")
        reward = np.zeros(self.n_trajectories, np.float64)
        reward[ending.values] = self.terminal_rewards.values
        return {t: (int(n), float(r)) for t, n, r in zip(self.traj_ids.tolist(), end.tolist(), reward.tolist())}

    def pick_trajectory(self, node: int, ends: dict[str, tuple[int, float]], worst: bool = False) -> str:
        """The trajectory through `node` with the highest final reward (`worst`: the lowest); ties
        go to the earliest inserted. `ends` is `trajectory_ends()`."""
        ids = self.traj_ids[self.trajs.values[self.trajs.offsets[node]:self.trajs.offsets[node + 1]]].tolist()
        if not ids:
            raise UserError(f"tree {self.tree_id} records no trajectories at node {node}; "
                            "rebuild it with `w2stree tree`")
        pick = min if worst else max  # both keep the first of equal rewards: the earliest inserted
        return pick(ids, key=lambda t: ends[t][1])

    def step(self, node: int) -> tuple[str, str, str]:
        """(thought, action, observation) of a node: its first-seen thought and observation."""
        th, ob = self.thoughts, self.observations
        return (th.values[th.offsets[node]] if th.offsets[node + 1] > th.offsets[node] else "",
                str(self.action[node]),
                ob.values[ob.offsets[node]] if ob.offsets[node + 1] > ob.offsets[node] else "")

    # -- growing -----------------------------------------------------------------------------------
    def extend(self, trajectories: Sequence[Trajectory]) -> None:
        """Insert more trajectories of this tree's task, after the ones it holds, exactly as a
        rebuild from all of them would (same node ids, statistics and float sums). The MCTS
        statistics and best path are reset (they describe the old tree): run MCTS again."""
        if self.merge not in ("action", "observation"):
            raise UserError(f"tree {self.tree_id} uses the {self.merge} merge rule, which cannot grow in "
                            "place; rebuild it with `w2stree tree`")
        known = set(self.traj_ids.tolist())
        for t in trajectories:
            if (t.env, t.task_id) != (self.env, self.task_id):
                raise UserError(f"trajectory {t.traj_id} is of task {t.env}/{t.task_id}, not of tree "
                                f"{self.tree_id}; add it to its own task's tree")
            if t.traj_id in known:
                raise UserError(f"trajectory {t.traj_id} is already in tree {self.tree_id}")
            known.add(t.traj_id)
        with_obs = self.merge == "observation"
        parent, depth, action = self.parent.tolist(), self.depth.tolist(), self.action.tolist()
        thoughts, observations = self.thoughts.lists(), self.observations.lists()
        terminal, through = self.terminal_rewards.lists(), self.trajs.lists()
        visits, value_sum, successes = self.visits.tolist(), self.value_sum.tolist(), self.successes.tolist()
        traj_ids = self.traj_ids.tolist()

        def key(node: int, act: str, obs: str) -> tuple[int, str, str]:
            return node, normalize_action(act), normalize_observation(obs) if with_obs else ""

        child_of = {key(p, a, ob[0] if ob else ""): n
                    for n, (p, a, ob) in enumerate(zip(parent, action, observations)) if p >= 0}
        for t in trajectories:
            ti = len(traj_ids)
            traj_ids.append(t.traj_id)
            node, path = 0, [0]
            for d, s in enumerate(t.steps, 1):
                k = key(node, s.action, s.observation)
                child = child_of.get(k)
                if child is None:
                    child = child_of[k] = len(parent)
                    for col, v in ((parent, node), (depth, d), (action, s.action), (visits, 0),
                                   (value_sum, 0.0), (successes, 0)):
                        col.append(v)
                    for col in (thoughts, observations, terminal, through):
                        col.append([])
                for col, text in ((thoughts, s.thought), (observations, s.observation)):
                    if text not in col[child]:
                        col[child].append(text)
                node = child
                path.append(node)
            for n in path:
                visits[n] += 1
                value_sum[n] += float(t.reward)
                successes[n] += int(bool(t.success))
                through[n].append(ti)
            terminal[node].append(float(t.reward))
        n = len(parent)
        self.parent, self.depth = np.array(parent, np.int64), np.array(depth, np.int64)
        self.action = object_array(action)
        self.thoughts, self.observations = Ragged.from_lists(thoughts), Ragged.from_lists(observations)
        self.terminal_rewards = Ragged.from_lists(terminal, np.float64)
        self.trajs, self.traj_ids = Ragged.from_lists(through, np.int64), object_array(traj_ids)
        self.visits, self.successes = np.array(visits, np.int64), np.array(successes, np.int64)
        self.value_sum, self.failures = np.array(value_sum, np.float64), self.visits - self.successes
        self.mcts_visits, self.mcts_value_sum = np.zeros(n, np.int64), np.zeros(n, np.float64)
        # an old node keeps its id and its prefix, so its oracle value still holds
        grown = n - len(self.true_value)
        self.true_value = np.concatenate([self.true_value, np.full(grown, np.nan)])
        self.true_steps = np.concatenate([self.true_steps, np.full(grown, NO_STEPS, np.int64)])
        self.best_path, self.mcts_iterations, self.mcts_c, self.mcts_rule = [], None, None, None
        self.settings.pop("mcts", None)

    # -- networkx --------------------------------------------------------------------------------
    def graph_attrs(self) -> dict[str, Any]:
        """The DiGraph's graph attributes."""
        attrs: dict[str, Any] = dict(
            tree_id=self.tree_id, env=self.env, task_id=self.task_id, instruction=self.instruction,
            initial_observation=self.initial_observation, merge=self.merge,
            settings=copy.deepcopy(self.settings), n_trajectories=self.n_trajectories,
            best_path=list(self.best_path))
        for k in ("mcts_iterations", "mcts_c", "mcts_rule", "version"):
            if getattr(self, k) is not None:
                attrs[k] = getattr(self, k)
        return attrs

    def node_attrs(self) -> list[dict[str, Any]]:
        """Every node's attribute dict (NODE_FIELDS), in id order."""
        traj_ids = self.traj_ids
        through = Ragged(self.trajs.offsets, traj_ids[self.trajs.values] if len(traj_ids) else
                         np.empty(0, object)).lists()
        return [
            {"depth": dp, "action": a, "thoughts": th, "observations": ob, "visits": v, "value_sum": vs,
             "successes": sc, "failures": fl, "terminal_rewards": tr, "mcts_visits": mv,
             "mcts_value_sum": mvs, "traj_ids": ti, "true_value": None if tv != tv else tv,
             "true_steps": None if ts == NO_STEPS else ts}
            for dp, a, th, ob, v, vs, sc, fl, tr, mv, mvs, ti, tv, ts in zip(
                self.depth.tolist(), self.action.tolist(), self.thoughts.lists(),
                self.observations.lists(), self.visits.tolist(), self.value_sum.tolist(),
                self.successes.tolist(), self.failures.tolist(), self.terminal_rewards.lists(),
                self.mcts_visits.tolist(), self.mcts_value_sum.tolist(), through,
                self.true_value.tolist(), self.true_steps.tolist())
        ]

    def to_networkx(self) -> nx.DiGraph:
        """The tree as a networkx DiGraph: node ids 0..n-1 with NODE_FIELDS attributes, edges
        parent -> child, graph attributes `graph_attrs()`."""
        g = nx.DiGraph(**self.graph_attrs())
        g.add_nodes_from(enumerate(self.node_attrs()))
        g.add_edges_from(zip(self.parent[1:].tolist(), range(1, self.n_nodes)))
        return g

    @classmethod
    def from_networkx(cls, g: nx.DiGraph) -> Tree:
        """A DiGraph of one tree (node ids 0..n-1, the root 0, one parent per node) as a Tree;
        node attributes that are missing count as empty / zero."""
        n = g.number_of_nodes()
        if sorted(g.nodes) != list(range(n)) or n == 0:
            raise UserError(f"tree {g.graph.get('tree_id', '?')} must have node ids 0..{max(n - 1, 0)} "
                            "with root 0; rebuild it with `w2stree tree`")
        parent = np.full(n, -1, np.int64)
        for par, child in g.edges:
            parent[child] = par
        if parent[0] != -1 or (parent[1:] < 0).any():
            raise UserError(f"tree {g.graph.get('tree_id', '?')} is not a tree rooted at node 0; rebuild it")
        d = [g.nodes[i] for i in range(n)]
        tids = list(dict.fromkeys(t for x in d for t in x.get("traj_ids") or ()))
        pos = {t: i for i, t in enumerate(tids)}

        def col(k: str, dtype: Any, default: Any) -> np.ndarray:
            return np.array([x.get(k, default) or default for x in d], dtype=dtype)

        visits, successes = col("visits", np.int64, 0), col("successes", np.int64, 0)
        ga = g.graph
        return cls(
            tree_id=ga.get("tree_id", ""), env=ga.get("env", ""), task_id=ga.get("task_id", ""),
            instruction=ga.get("instruction", ""), initial_observation=str(ga.get("initial_observation", "")),
            merge=ga.get("merge", "action"), settings=copy.deepcopy(ga.get("settings", {})),
            parent=parent, depth=col("depth", np.int64, 0), action=object_array([x.get("action", "") for x in d]),
            thoughts=Ragged.from_lists([x.get("thoughts") or [] for x in d]),
            observations=Ragged.from_lists([x.get("observations") or [] for x in d]),
            visits=visits, value_sum=col("value_sum", np.float64, 0.0), successes=successes,
            failures=np.array([x["failures"] if "failures" in x else v - s
                               for x, v, s in zip(d, visits.tolist(), successes.tolist())], np.int64),
            terminal_rewards=Ragged.from_lists([x.get("terminal_rewards") or [] for x in d], np.float64),
            mcts_visits=col("mcts_visits", np.int64, 0), mcts_value_sum=col("mcts_value_sum", np.float64, 0.0),
            trajs=Ragged.from_lists([[pos[t] for t in x.get("traj_ids") or ()] for x in d], np.int64),
            traj_ids=object_array(tids), best_path=[int(x) for x in ga.get("best_path") or []],
            mcts_iterations=ga.get("mcts_iterations"), mcts_c=ga.get("mcts_c"), mcts_rule=ga.get("mcts_rule"),
            version=ga.get("version"),
            true_value=np.array([np.nan if x.get("true_value") is None else x["true_value"] for x in d], np.float64),
            true_steps=np.array([NO_STEPS if x.get("true_steps") is None else x["true_steps"] for x in d], np.int64),
        )

    def write_mcts_to(self, g: nx.DiGraph) -> None:
        """Copy the MCTS results (node statistics, best path, settings) into the DiGraph `g`."""
        for i, (v, s) in enumerate(zip(self.mcts_visits.tolist(), self.mcts_value_sum.tolist())):
            g.nodes[i]["mcts_visits"] = v
            g.nodes[i]["mcts_value_sum"] = s
        g.graph.update(best_path=list(self.best_path), mcts_iterations=self.mcts_iterations,
                       mcts_c=self.mcts_c, mcts_rule=self.mcts_rule)
        g.graph.setdefault("settings", {})["mcts"] = dict(self.settings.get("mcts", {}))


def object_array(items: Sequence[Any]) -> np.ndarray:
    """A 1-d object array of `items` (numpy would make a 2-d array of equal-length lists)."""
    arr = np.empty(len(items), dtype=object)
    arr[:] = list(items)
    return arr
