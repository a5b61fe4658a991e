"""Offline MCTS over a static trajectory tree (no environment calls).

Rules (``rule=``):

* ``uct`` (default; see the README): statistics start at zero. Each iteration starts at the
  root; while the node has children it moves to the child with the largest UCB: ``+inf`` if the
  child's ``mcts_visits`` is 0, else ``Q + c*sqrt(ln(P)/n)`` with ``Q = mcts_value_sum/n``,
  ``n = mcts_visits`` and ``P`` = the sum of the children's ``mcts_visits`` + 1e-12; ties go to
  the earliest child. At the leaf the value is ``value_sum/visits`` of the leaf (0 if none);
  1 visit and the value are added to every node of the path except the root.
* ``early-release``: an EARLIER version of the authors' released MCTS file (``mcts.py``), not
  the file at the release's HEAD: ``mcts_demo.py`` at HEAD computes exactly what ``uct`` does (the
  tests check ``uct`` against a plain transcription of it). The earlier file keeps a single
  (visit_count, total_reward) pair per node for the data and the search, so the search starts
  from the data: ``mcts_visits`` starts at the node's ``visits`` and ``mcts_value_sum`` at the sum
  of its ``terminal_rewards`` (the rewards of trajectories that END there, usually 0 for inner
  nodes). ``P`` is the plain sum (no epsilon), the leaf value is recomputed from the leaf's
  running statistics each iteration, and the root is backed up too. (Where every child has
  zero visits that file picks at random; that cannot happen on a tree built from
  trajectories, and here it picks the first child.) The rule was called ``reference`` before;
  that name now gives an error that points here.
* ``puct``: ``Q + c * prior * sqrt(P) / (1 + n)`` with ``Q = 0`` for unvisited children and
  ``prior`` = the child's share of its siblings' data visits; ties to the earliest child.
* ``mean``: no search: the MCTS statistics are the data statistics (``visits``, ``value_sum``).

Best path (every rule): from the root, while the node has children and one of them has
``mcts_visits > 0``, move to the child with the highest ``mcts_value_sum / mcts_visits``
(unvisited children count as ``-inf``, ties to the earliest child), as the released code does.

Speed: the search runs on the tree's arrays (`core.tree_data.Tree`) in a numba-compiled loop
(`core.mcts_kernel.search`; compiled once per machine and cached on disk). It is the plain
algorithm (descend by the rule, back up the path), with the parent count ``P`` kept as a running
sum instead of being re-summed over the children at every step; the floating-point operations
are the same, in the same order, as in the plain algorithm, so the statistics are identical
(tests/test_mcts.py and bench/tree_mcts.py check it). `run_mcts_all` scores many trees in one
compiled call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import networkx as nx
import numpy as np

from core.errors import UserError
from core.tree_data import Tree

RULES = ("uct", "early-release", "puct", "mean")
DEFAULT_RULE = "uct"
RENAMED_RULES = {"reference": "early-release"}
EPSILON = 1e-12  # added to P by the uct rule (no effect on which child wins when P >= 1)
_MODE = {"uct": 0, "early-release": 1, "puct": 2}


def run_mcts(g: Tree | nx.DiGraph, iterations: int = 1000, c: float = 1.41, rule: str = DEFAULT_RULE) -> list[int]:
    """Score the tree in place and return its best path (node ids from the root to a leaf).

    Resets, then fills `mcts_visits` and `mcts_value_sum`; sets `best_path`, `mcts_iterations`,
    `mcts_c`, `mcts_rule` (also kept in `settings["mcts"]` so the store keeps it). A DiGraph
    (node ids 0..n-1) gets the same results in its node and graph attributes.
    """
    return run_mcts_all([g], iterations=iterations, c=c, rule=rule)[0]


def check_rule(rule: str) -> None:
    """A UserError for an unknown rule, pointing a renamed rule to its new name."""
    if rule in RENAMED_RULES:
        raise UserError(f"MCTS rule {rule!r} is now called {RENAMED_RULES[rule]!r} (it reproduces an earlier "
                        "version of the released MCTS file; `uct` reproduces the released mcts_demo.py)")
    if rule not in RULES:
        raise UserError(f"unknown MCTS rule {rule!r}; use one of {', '.join(RULES)}")


def run_mcts_all(trees: Iterable[Tree | nx.DiGraph], iterations: int = 1000, c: float = 1.41,
                 rule: str = DEFAULT_RULE) -> list[list[int]]:
    """`run_mcts` on every tree (one compiled call for all); returns their best paths in order."""
    check_rule(rule)
    if int(iterations) != iterations or iterations < 0:
        raise UserError(f"MCTS iterations must be a whole number >= 0, got {iterations!r}")
    if not c >= 0:
        raise UserError(f"MCTS exploration constant c must be >= 0, got {c!r}")
    given = list(trees)
    arrays = [Tree.from_networkx(g) if isinstance(g, nx.DiGraph) else g for g in given]
    iterations = 0 if rule == "mean" else int(iterations)
    if arrays:
        _score(arrays, iterations, float(c), rule)
    for g, t in zip(given, arrays, strict=True):
        t.best_path = _best_path(t)
        t.mcts_iterations, t.mcts_c, t.mcts_rule = iterations, float(c), rule
        t.settings["mcts"] = {"rule": rule, "iterations": iterations, "c": float(c)}
        if isinstance(g, nx.DiGraph):
            t.write_mcts_to(g)
    return [list(t.best_path) for t in arrays]


def _score(trees: Sequence[Tree], iterations: int, c: float, rule: str) -> None:
    """Fill mcts_visits / mcts_value_sum of all trees: the trees are concatenated into global
    arrays (node ids shifted by each tree's offset) for one compiled call."""
    sizes = np.array([t.n_nodes for t in trees], np.int64)
    offset = np.concatenate([[0], np.cumsum(sizes)])
    n = int(offset[-1])
    visits = np.concatenate([t.visits for t in trees]).astype(np.int64)
    value_sum = np.concatenate([t.value_sum for t in trees]).astype(np.float64)
    if rule == "mean":
        vis, val = visits, value_sum
    else:
        parent = np.concatenate([np.where(t.parent >= 0, t.parent + o, -1) for t, o in zip(trees, offset[:-1])])
        has_parent = parent >= 0
        # Children of every node in ascending id: a stable sort of the non-roots by parent.
        kids = np.flatnonzero(has_parent)
        kids = kids[np.argsort(parent[kids], kind="stable")]
        kid_off = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(parent[has_parent], minlength=n), out=kid_off[1:])
        vis = np.zeros(n, np.int64)
        val = np.zeros(n, np.float64)
        roots = offset[:-1]
        if rule == "early-release":
            # Seeded from the data: the node's visits (never the root's) and the sum, in
            # trajectory order from 0.0, of the rewards of trajectories ending there.
            vis[:] = visits
            vis[roots] = 0
            terms = [t.terminal_rewards for t in trees]
            ends = np.concatenate([tr.rows_of_values() + o for tr, o in zip(terms, roots)])
            np.add.at(val, ends, np.concatenate([tr.values for tr in terms]).astype(np.float64))
        leaf_value = np.divide(value_sum, visits, out=np.zeros(n, np.float64), where=visits > 0)
        prior = np.zeros(n, np.float64)
        if rule == "puct":
            tot = np.bincount(parent[has_parent], weights=visits[has_parent], minlength=n)
            n_kids = np.diff(kid_off)
            p = parent[has_parent]
            prior[has_parent] = np.where(tot[p] > 0, visits[has_parent] / np.where(tot[p] > 0, tot[p], 1),
                                         1.0 / np.maximum(n_kids[p], 1))
        from core.mcts_kernel import search  # numba loads on first use: plain imports stay fast

        search(roots, kid_off, kids, vis, val, leaf_value, prior, iterations, c,
               0.0 if rule == "early-release" else EPSILON, _MODE[rule])
    for t, lo, hi in zip(trees, offset[:-1].tolist(), offset[1:].tolist()):
        t.mcts_visits = vis[lo:hi].copy()
        t.mcts_value_sum = val[lo:hi].copy()


def _best_path(t: Tree) -> list[int]:
    """From the root, while some child has MCTS visits, the child with the highest MCTS mean
    (unvisited: -inf; ties to the earliest)."""
    kids = t.child_index()
    vis, val = t.mcts_visits.tolist(), t.mcts_value_sum.tolist()
    path = [0]
    node = 0
    while True:
        ks = kids[node]
        if not ks or max(vis[k] for k in ks) <= 0:
            return path
        node = max(ks, key=lambda k: val[k] / vis[k] if vis[k] > 0 else -math.inf)
        path.append(node)

