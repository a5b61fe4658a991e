"""Store methods for trees (a header row and node rows each, written as one Arrow insert) and the
preference pairs cut from them.

Trees carry a version, bumped by every save. A tree loaded from the store remembers its version,
and saving it back refuses (StaleTreeError) when another process saved that tree meanwhile, so
a slow `mcts` never overwrites a tree that `tree` rebuilt while it ran. Pairs are replaced per
(env, task, granularity). A mixin of `core.store.Store`: use these methods through Store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import duckdb
import networkx as nx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import UserError
from core.store_file import TRAJ_ORDER, StaleTreeError, now_utc, where_clause
from core.trajectory import Pair, Trajectory
from core.tree_data import NO_STEPS, Ragged, Tree, concat


class TreeTables:
    """Trees, their nodes and pairs (mixed into Store)."""

    def tree_tables(self, env: str | None = None, task_id: str | None = None, source: str | None = None,
                    model: str | None = None, traj_ids: list[str] | None = None) -> tuple[pa.Table, pa.Table]:
        """The input of `core.tree.build_trees_from_tables` for the matching trajectories (never
        evaluation episodes or spliced state paths unless `source` asks for them), in collection
        order (`TRAJ_ORDER`):
        (heads: traj_id, env, task_id, instruction, initial_observation, reward, success,
        n_steps; steps: thought, action, observation in trajectory order, then step order)."""
        where, params = where_clause(env=env, task_id=task_id, source=source, model=model)
        if source is None:  # played episodes only (a state-merged tree's spliced paths are not)
            where += (" AND " if where else "WHERE ") + "coalesce(source, '') NOT IN ('eval', 'splice')"
        if traj_ids is not None:
            where += " AND traj_id IN (SELECT unnest(?))"
            params.append(list(traj_ids))
        with self.connect() as con:
            heads = con.sql(
                "SELECT traj_id, env, task_id, instruction, reward, success, n_steps, "
                "coalesce(json_extract_string(meta, '$.initial_observation'), '') AS initial_observation "
                f"FROM trajectories {where} ORDER BY {TRAJ_ORDER}", params=params).to_arrow_table()
            con.register("sel", pa.table({"traj_id": heads.column("traj_id"),
                                          "pos": pa.array(range(heads.num_rows), pa.int64())}))
            steps = con.sql("SELECT sel.pos, s.thought, s.action, s.observation FROM steps s JOIN sel "
                            "USING (traj_id) ORDER BY sel.pos, s.idx").to_arrow_table()
        # The steps table is the truth for the number of steps (not the header's n_steps).
        counts = np.bincount(steps.column("pos").to_numpy(), minlength=heads.num_rows)
        heads = heads.set_column(heads.schema.get_field_index("n_steps"), "n_steps", pa.array(counts, pa.int64()))
        return heads, steps

    def save_trees(self, trees: Iterable[Tree | nx.DiGraph]) -> list[str]:
        """Persist trees (replacing earlier trees of the same id) as node rows, one Arrow insert
        for all of them; each gets the next version. A tree that was loaded from the store
        (`version` set) is saved only if the stored tree still has that version: otherwise
        StaleTreeError, and none is saved. DiGraphs (`Tree.to_networkx()` form) are accepted."""
        given = list(trees)
        if not given:
            return []
        arrays = [Tree.from_networkx(t) if isinstance(t, nx.DiGraph) else t for t in given]
        now = now_utc()
        head_tab = pa.table({
            "tree_id": pa.array([t.tree_id for t in arrays], pa.string()),
            "env": pa.array([t.env for t in arrays], pa.string()),
            "task_id": pa.array([t.task_id for t in arrays], pa.string()),
            "instruction": pa.array([t.instruction for t in arrays], pa.string()),
            "merge": pa.array([t.merge for t in arrays], pa.string()),
            "settings": pa.array([json.dumps(t.settings) for t in arrays], pa.string()),
            "n_trajectories": pa.array([t.n_trajectories for t in arrays], pa.int32()),
            "n_nodes": pa.array([t.n_nodes for t in arrays], pa.int32()),
            "n_branching": pa.array([len(t.branching()) for t in arrays], pa.int32()),
            "mcts_iterations": pa.array([int(t.mcts_iterations or 0) for t in arrays], pa.int32()),
            "mcts_c": pa.array([float(t.mcts_c or 0.0) for t in arrays], pa.float64()),
            "best_path": pa.array([list(t.best_path) for t in arrays], pa.list_(pa.int32())),
            "created_at": pa.array([now] * len(arrays), pa.timestamp("us")),
            "initial_observation": pa.array([t.initial_observation for t in arrays], pa.string()),
        })
        node_tab = _node_table(arrays)
        with self.transaction() as con:
            versions = _next_versions(con, arrays)
            head_tab = head_tab.append_column("version", pa.array(versions, pa.int64()))
            con.register("new_trees", head_tab)
            con.register("new_nodes", node_tab)
            con.execute("DELETE FROM nodes WHERE tree_id IN (SELECT tree_id FROM new_trees)")
            con.execute("DELETE FROM trees WHERE tree_id IN (SELECT tree_id FROM new_trees)")
            for table, new in (("trees", "new_trees"), ("nodes", "new_nodes")):
                names = ", ".join((head_tab if table == "trees" else node_tab).column_names)
                con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {new}")
        for g, t, v in zip(given, arrays, versions, strict=True):
            t.version = v
            if isinstance(g, nx.DiGraph):
                g.graph["version"] = v
        return [t.tree_id for t in arrays]

    def save_scores(self, trees: Iterable[Tree]) -> list[str]:
        """Persist the MCTS results of trees loaded from the store (node `mcts_visits` /
        `mcts_value_sum`, best path, MCTS settings) without rewriting their nodes; same version
        check and bump as `save_trees` (a tree rebuilt meanwhile raises StaleTreeError)."""
        return self._update_nodes(list(trees), {
            "mcts_visits": lambda t: pa.array(t.mcts_visits, pa.int32()),
            "mcts_value_sum": lambda t: pa.array(t.mcts_value_sum, pa.float64())}, mcts_head=True)

    def save_true_values(self, trees: Iterable[Tree]) -> list[str]:
        """Persist the oracle columns (`true_value`, `true_steps`; NULL where unknown) of trees
        loaded from the store, nothing else; same version check and bump as `save_trees`."""
        return self._update_nodes(list(trees), {
            "true_value": lambda t: pa.array(t.true_value, pa.float64(), mask=np.isnan(t.true_value)),
            "true_steps": lambda t: pa.array(t.true_steps, pa.int32(), mask=t.true_steps == NO_STEPS)})

    def _update_nodes(self, trees: list[Tree], columns: dict[str, Any], mcts_head: bool = False) -> list[str]:
        """Write node `columns` (name -> the Arrow array of a tree) of trees loaded from the store in
        place, bumping their versions (StaleTreeError when one was saved by another process since);
        `mcts_head` also writes the MCTS header fields (settings, iterations, c, best path)."""
        if not trees:
            return []
        unsaved = [t.tree_id for t in trees if t.version is None]
        if unsaved:
            raise UserError(f"tree {unsaved[0]} was not loaded from the store; save it with save_trees")
        sizes = [t.n_nodes for t in trees]
        values = pa.table({
            "tree_id": pa.array(np.repeat(np.array([t.tree_id for t in trees], dtype=object), sizes), pa.string()),
            "node_id": pa.array(np.concatenate([np.arange(n) for n in sizes]), pa.int32()),
            **{name: pa.concat_arrays([arr(t) for t in trees]) for name, arr in columns.items()},
        })
        with self.transaction() as con:
            versions = _next_versions(con, trees)
            heads = {"tree_id": pa.array([t.tree_id for t in trees], pa.string()),
                     "version": pa.array(versions, pa.int64())}
            if mcts_head:
                heads.update({
                    "settings": pa.array([json.dumps(t.settings) for t in trees], pa.string()),
                    "mcts_iterations": pa.array([int(t.mcts_iterations or 0) for t in trees], pa.int32()),
                    "mcts_c": pa.array([float(t.mcts_c or 0.0) for t in trees], pa.float64()),
                    "best_path": pa.array([list(t.best_path) for t in trees], pa.list_(pa.int32()))})
            con.register("new_heads", pa.table(heads))
            con.register("node_values", values)
            sets = ", ".join(f"{c} = v.{c}" for c in columns)
            con.execute(f"UPDATE nodes SET {sets} FROM node_values v "
                        "WHERE nodes.tree_id = v.tree_id AND nodes.node_id = v.node_id")
            sets = ", ".join(f"{c} = h.{c}" for c in heads if c != "tree_id")
            con.execute(f"UPDATE trees SET {sets} FROM new_heads h WHERE trees.tree_id = h.tree_id")
        for t, v in zip(trees, versions, strict=True):
            t.version = v
        return [t.tree_id for t in trees]

    def add_to_tree(self, tree_id: str, trajectories: Iterable[Trajectory]) -> Tree:
        """Add trajectories (of the tree's task) to the stored tree `tree_id` and save it; the
        other trees are not touched. The result equals a rebuild from all its trajectories
        (MCTS statistics reset: run MCTS again). Raises StaleTreeError if another process saved
        the tree meanwhile."""
        tree = self.load_tree(tree_id)
        tree.extend(list(trajectories))
        self.save_trees([tree])
        return tree

    def trees(self, env: str | None = None, task_id: str | None = None) -> pd.DataFrame:
        """Tree headers (one row per tree)."""
        where, params = where_clause(env=env, task_id=task_id)
        return self.query(f"SELECT * FROM trees {where} ORDER BY env, task_id", params)

    def load_tree(self, tree_id: str) -> Tree:
        """The stored tree `tree_id` (`Tree.to_networkx()` gives its DiGraph)."""
        trees = self.load_trees(tree_ids=[tree_id])
        if not trees:
            raise KeyError(f"no tree {tree_id!r}; run `w2stree tree` first")
        return trees[0]

    def load_trees(self, env: str | None = None, task_id: str | None = None,
                   tree_ids: list[str] | None = None, numeric_only: bool = False) -> list[Tree]:
        """Stored trees matching the filters (by env and task), or exactly `tree_ids` in that
        order (unknown ids are left out); one connection and two queries for all of them.

        `numeric_only` reads just the numeric node columns (structure and statistics: what MCTS
        and `save_scores` need): node texts (action, thoughts, observations) come back empty,
        and so do the trajectories through each node (`trajs`, `traj_ids`)."""
        with self.connect() as con:
            if tree_ids is None:
                where, params = where_clause(env=env, task_id=task_id)
                heads = con.sql(f"SELECT * FROM trees {where} ORDER BY env, task_id", params=params)
            else:
                con.register("want", pa.table({"tree_id": pa.array(list(tree_ids), pa.string()),
                                               "pos": pa.array(range(len(tree_ids)), pa.int64())}))
                heads = con.sql("SELECT t.* FROM trees t JOIN want USING (tree_id) ORDER BY want.pos")
            heads = heads.to_arrow_table()
            con.register("sel", pa.table({"tree_id": heads.column("tree_id"),
                                          "pos": pa.array(range(heads.num_rows), pa.int64())}))
            cols = ", ".join(f"n.{c}" for c in _NUMERIC_NODE_COLUMNS) if numeric_only else "n.*"
            nodes = con.sql(f"SELECT sel.pos, {cols} FROM nodes n JOIN sel USING (tree_id) "
                            "ORDER BY sel.pos, n.node_id").to_arrow_table()
        return _trees_from_tables(heads, nodes)

    # -- pairs -------------------------------------------------------------------------------
    def save_pairs(self, pairs: Iterable[Pair], replace_tasks: Iterable[tuple[str, str, str]] = ()) -> int:
        """Insert pairs; first delete the pairs of `replace_tasks` ((env, task_id, granularity)
        triples) so re-running replaces them."""
        pairs = list(pairs)
        now = now_utc()
        table = pa.table({
            "pair_id": [p.pair_id for p in pairs],
            "tree_id": pa.array([p.tree_id for p in pairs], pa.string()),
            "env": pa.array([p.env for p in pairs], pa.string()),
            "task_id": pa.array([p.task_id for p in pairs], pa.string()),
            "node_id": pa.array([p.node_id for p in pairs], pa.int32()),
            "granularity": pa.array([p.granularity for p in pairs], pa.string()),
            "value_kind": pa.array([p.value_kind for p in pairs], pa.string()),
            "prompt": pa.array([json.dumps(p.prompt) for p in pairs], pa.string()),
            "chosen": pa.array([json.dumps(p.chosen) for p in pairs], pa.string()),
            "rejected": pa.array([json.dumps(p.rejected) for p in pairs], pa.string()),
            "chosen_value": pa.array([p.chosen_value for p in pairs], pa.float64()),
            "rejected_value": pa.array([p.rejected_value for p in pairs], pa.float64()),
            "margin": pa.array([p.margin for p in pairs], pa.float64()),
            "chosen_node": pa.array([p.chosen_node for p in pairs], pa.int32()),
            "rejected_node": pa.array([p.rejected_node for p in pairs], pa.int32()),
            "chosen_success": pa.array([p.chosen_success for p in pairs], pa.bool_()),
            "rejected_success": pa.array([p.rejected_success for p in pairs], pa.bool_()),
            "created_at": pa.array([now] * len(pairs), pa.timestamp("us")),
        })
        with self.transaction() as con:
            for env, task_id, gran in replace_tasks:
                con.execute("DELETE FROM pairs WHERE env = ? AND task_id = ? AND granularity = ?",
                            [env, task_id, gran])
            if pairs:
                con.register("new_pairs", table)
                cols = ", ".join(table.column_names)
                con.execute(f"INSERT INTO pairs ({cols}) SELECT {cols} FROM new_pairs")
        return len(pairs)

    def pairs(self, env: str | None = None, task_id: str | None = None,
              granularity: str | None = None, tree_id: str | None = None,
              min_margin: float | None = None) -> list[Pair]:
        """Stored pairs matching the filters."""
        df = self.pairs_frame(env, task_id, granularity, tree_id, min_margin)
        return [
            Pair(env=r.env, task_id=r.task_id, prompt=json.loads(r.prompt),
                 chosen=json.loads(r.chosen), rejected=json.loads(r.rejected),
                 chosen_value=float(r.chosen_value), rejected_value=float(r.rejected_value),
                 granularity=r.granularity, value_kind=r.value_kind, tree_id=r.tree_id or "",
                 node_id=int(r.node_id), chosen_node=int(r.chosen_node),
                 rejected_node=int(r.rejected_node), chosen_success=bool(r.chosen_success),
                 rejected_success=bool(r.rejected_success), pair_id=r.pair_id)
            for r in df.itertuples(index=False)
        ]

    def pairs_frame(self, env: str | None = None, task_id: str | None = None,
                    granularity: str | None = None, tree_id: str | None = None,
                    min_margin: float | None = None) -> pd.DataFrame:
        where, params = where_clause(env=env, task_id=task_id, granularity=granularity, tree_id=tree_id)
        if min_margin is not None:
            where += (" AND " if where else "WHERE ") + "margin >= ?"
            params.append(float(min_margin))
        return self.query(f"SELECT * FROM pairs {where} ORDER BY env, task_id, node_id, pair_id", params)


def _next_versions(con: duckdb.DuckDBPyConnection, trees: list[Tree]) -> list[int]:
    """The versions trees get when saved in this transaction; StaleTreeError when a tree loaded
    from the store (`version` set) was saved by another process since. The process holds the
    file until COMMIT, so no other save can come between this check and the write."""
    con.register("ids", pa.table({"tree_id": pa.array([t.tree_id for t in trees], pa.string())}))
    stored = dict(con.execute("SELECT i.tree_id, t.version FROM ids i LEFT JOIN trees t USING (tree_id)").fetchall())
    stale = [t.tree_id for t in trees if t.version is not None and stored.get(t.tree_id) != t.version]
    if stale:
        raise StaleTreeError(stale)
    return [(stored.get(t.tree_id) or 0) + 1 for t in trees]


def _list_column(parts: list[Ragged], kind: pa.DataType) -> pa.ListArray:
    """The rows of several Ragged as one Arrow list column."""
    rows = concat(parts)
    return pa.ListArray.from_arrays(pa.array(rows.offsets, pa.int32()), pa.array(rows.values, kind))


def _node_table(trees: list[Tree]) -> pa.Table:
    """The `nodes` rows of trees, column by column from their arrays."""
    sizes = [t.n_nodes for t in trees]
    parent = np.concatenate([t.parent for t in trees])
    return pa.table({
        "tree_id": pa.array(np.repeat(np.array([t.tree_id for t in trees], dtype=object), sizes), pa.string()),
        "node_id": pa.array(np.concatenate([np.arange(n) for n in sizes]), pa.int32()),
        "parent_id": pa.array(parent, pa.int32(), mask=parent < 0),
        "depth": pa.array(np.concatenate([t.depth for t in trees]), pa.int32()),
        "action": pa.array(np.concatenate([t.action for t in trees]), pa.string()),
        "thoughts": _list_column([t.thoughts for t in trees], pa.string()),
        "observations": _list_column([t.observations for t in trees], pa.string()),
        "visits": pa.array(np.concatenate([t.visits for t in trees]), pa.int32()),
        "value_sum": pa.array(np.concatenate([t.value_sum for t in trees]), pa.float64()),
        "successes": pa.array(np.concatenate([t.successes for t in trees]), pa.int32()),
        "failures": pa.array(np.concatenate([t.failures for t in trees]), pa.int32()),
        "terminal_rewards": _list_column([t.terminal_rewards for t in trees], pa.float64()),
        "mcts_visits": pa.array(np.concatenate([t.mcts_visits for t in trees]), pa.int32()),
        "mcts_value_sum": pa.array(np.concatenate([t.mcts_value_sum for t in trees]), pa.float64()),
        "traj_ids": _list_column([Ragged(t.trajs.offsets, t.traj_ids[t.trajs.values]) for t in trees],
                                 pa.string()),
        "true_value": pa.array(np.concatenate([t.true_value for t in trees]), pa.float64(),
                               mask=np.isnan(np.concatenate([t.true_value for t in trees]))),
        "true_steps": pa.array(np.concatenate([t.true_steps for t in trees]), pa.int32(),
                               mask=np.concatenate([t.true_steps for t in trees]) == NO_STEPS),
    })


def _list_parts(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(offsets from 0, flat values) of an Arrow list column; nulls read as empty lists."""
    arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    arr = pc.if_else(pc.is_null(arr), pa.scalar([], arr.type), arr) if arr.null_count else arr
    offsets = arr.offsets.to_numpy().astype(np.int64)
    return offsets - offsets[0], arr.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def _ragged(column: pa.ChunkedArray, dtype: Any) -> Ragged:
    """An Arrow list column as Ragged."""
    offsets, values = _list_parts(column)
    return Ragged(offsets, values.to_numpy(zero_copy_only=False).astype(dtype))


# The node columns `load_trees(numeric_only=True)` reads.
_NUMERIC_NODE_COLUMNS = ("node_id", "parent_id", "depth", "visits", "value_sum", "successes", "failures",
                         "terminal_rewards", "mcts_visits", "mcts_value_sum", "true_value", "true_steps")


def _trees_from_tables(heads: pa.Table, nodes: pa.Table) -> list[Tree]:
    """Trees from `trees` header rows and their `nodes` rows (column `pos` = the header's row,
    sorted by pos, then node id); without the text columns (action, thoughts, observations,
    traj_ids) the trees get empty ones."""
    if not heads.num_rows:  # no tree matched (an unknown id): nothing to index
        return []
    pos = nodes.column("pos").to_numpy()
    bounds = np.searchsorted(pos, np.arange(heads.num_rows + 1))

    def num(name: str, dtype: Any, fill: Any = 0) -> np.ndarray:
        return nodes.column(name).fill_null(fill).to_numpy().astype(dtype)

    parent = num("parent_id", np.int64, -1)
    cols = {k: num(k, d) for k, d in (("depth", np.int64), ("visits", np.int64), ("value_sum", np.float64),
                                      ("successes", np.int64), ("failures", np.int64),
                                      ("mcts_visits", np.int64), ("mcts_value_sum", np.float64))}
    cols["true_value"] = num("true_value", np.float64, np.nan)
    cols["true_steps"] = num("true_steps", np.int64, NO_STEPS)
    ragged = {"terminal_rewards": _ragged(nodes.column("terminal_rewards"), np.float64)}
    n = nodes.num_rows
    if "action" in nodes.column_names:
        ragged.update({k: _ragged(nodes.column(k), object) for k in ("thoughts", "observations")})
        action = nodes.column("action").fill_null("").to_numpy(zero_copy_only=False).astype(object)
        ragged["trajs"], names, root_codes = _through(nodes.column("traj_ids"), bounds)
    else:
        empty = Ragged(np.zeros(n + 1, np.int64), np.empty(0, object))
        ragged.update(thoughts=empty, observations=empty, trajs=Ragged(empty.offsets, np.empty(0, np.int64)))
        action, names, root_codes = np.full(n, "", dtype=object), np.empty(0, object), None
    parts = {k: r.split(bounds) for k, r in ragged.items()}
    b = bounds.tolist()
    trees = []
    for i, h in enumerate(heads.to_pylist()):
        lo, hi = b[i], b[i + 1]
        settings = json.loads(h["settings"] or "{}")
        trees.append(Tree(
            tree_id=h["tree_id"], env=h["env"], task_id=h["task_id"], instruction=h["instruction"] or "",
            initial_observation=h["initial_observation"] or "", merge=h["merge"] or "action",
            settings=settings, parent=parent[lo:hi], action=action[lo:hi],
            **{k: v[lo:hi] for k, v in cols.items()}, **{k: p[i] for k, p in parts.items()},
            traj_ids=names[root_codes[i]] if root_codes is not None else names,
            best_path=[int(x) for x in h["best_path"] or []], mcts_iterations=int(h["mcts_iterations"] or 0),
            mcts_c=float(h["mcts_c"] or 0.0), mcts_rule=(settings.get("mcts") or {}).get("rule"),
            version=int(h["version"]),
        ))
    return trees


def _through(column: pa.ChunkedArray, bounds: np.ndarray) -> tuple[Ragged, np.ndarray, list[np.ndarray]]:
    """The `traj_ids` column of the nodes of trees `bounds[i]..bounds[i + 1] - 1` as the
    trajectories through each node (positions in its tree's list, the root's list), the distinct
    ids, and per tree the codes of its list. Ids are hashed by Arrow; only the distinct ids
    become Python strings."""
    offsets, values = _list_parts(column)
    enc = values.dictionary_encode()
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = enc.dictionary.to_numpy(zero_copy_only=False).astype(object)
    roots = bounds[:-1][np.diff(bounds) > 0]  # the root row of every non-empty tree
    root_len = offsets[roots + 1] - offsets[roots]
    root_vals = np.repeat(offsets[roots] - np.concatenate([[0], np.cumsum(root_len)[:-1]]), root_len) + \
        np.arange(int(root_len.sum()))
    local = np.full(len(names), -1, np.int64)
    local[codes[root_vals]] = root_vals - np.repeat(offsets[roots], root_len)
    off = offsets.tolist()
    root_codes = [codes[off[lo]:off[lo + 1]] if hi > lo else codes[:0]
                  for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist())]
    return Ragged(offsets, local[codes]), names, root_codes
