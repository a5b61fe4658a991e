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

Speed: the tree is turned into arrays (children lists, statistics as Python lists). Single-child
chains are collapsed: a pass through a chain's first node passes through all of it, so a chain
(split where the ``early-release`` seeds differ) is updated once per iteration and its members get
the same increments at the end. The parent count ``P`` of a branching node is kept as a running
sum instead of being re-summed over the children at every step. The floating-point operations
are the same, in the same order, as in the plain algorithm, so the statistics are identical
(tests/test_mcts.py and bench/tree_mcts.py check it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import networkx as nx

from core.errors import UserError

RULES = ("uct", "early-release", "puct", "mean")
DEFAULT_RULE = "uct"
RENAMED_RULES = {"reference": "early-release"}
EPSILON = 1e-12  # added to P by the uct rule (no effect on which child wins when P >= 1)

Select = Callable[[int], int]


def run_mcts(g: nx.DiGraph, iterations: int = 1000, c: float = 1.41, rule: str = DEFAULT_RULE) -> list[int]:
    """Score the tree in place and return its best path (node ids from the root to a leaf).

    Resets, then fills the node attributes `mcts_visits` and `mcts_value_sum`; sets the graph
    attributes `best_path`, `mcts_iterations`, `mcts_c`, `mcts_rule` (also kept in
    `settings["mcts"]` so the store keeps it).
    """
    check_rule(rule)
    if int(iterations) != iterations or iterations < 0:
        raise UserError(f"MCTS iterations must be a whole number >= 0, got {iterations!r}")
    if not c >= 0:
        raise UserError(f"MCTS exploration constant c must be >= 0, got {c!r}")
    if 0 not in g:
        raise UserError(f"tree {g.graph.get('tree_id', '?')} has no root node 0; rebuild it")
    iterations = int(iterations)
    arr = _Arrays(g)
    if rule == "mean":
        vis, val = list(arr.visits), list(arr.value_sum)
        iterations = 0
    else:
        vis, val = _search(arr, iterations, float(c), rule)
    nodes = g._node  # the attribute dicts g.nodes[n] returns, without the view's per-call cost
    for i, node in enumerate(arr.ids):
        d = nodes[node]
        d["mcts_visits"] = vis[i]
        d["mcts_value_sum"] = val[i]
    best = [arr.ids[i] for i in _best_path(arr.kids, vis, val)]
    g.graph.update(best_path=best, mcts_iterations=iterations, mcts_c=float(c), mcts_rule=rule)
    g.graph.setdefault("settings", {})["mcts"] = {"rule": rule, "iterations": iterations, "c": float(c)}
    return best


def check_rule(rule: str) -> None:
    """A UserError for an unknown rule, pointing a renamed rule to its new name."""
    if rule in RENAMED_RULES:
        raise UserError(f"MCTS rule {rule!r} is now called {RENAMED_RULES[rule]!r} (it reproduces an earlier "
                        "version of the released MCTS file; `uct` reproduces the released mcts_demo.py)")
    if rule not in RULES:
        raise UserError(f"unknown MCTS rule {rule!r}; use one of {', '.join(RULES)}")


def run_mcts_all(graphs: Iterable[nx.DiGraph], iterations: int = 1000, c: float = 1.41,
                 rule: str = DEFAULT_RULE) -> list[list[int]]:
    """`run_mcts` on every tree; returns their best paths in order."""
    return [run_mcts(g, iterations=iterations, c=c, rule=rule) for g in graphs]


class _Arrays:
    """The tree as index arrays: node i is `ids[i]` (ascending ids, root first)."""

    def __init__(self, g: nx.DiGraph) -> None:
        self.ids = sorted(g.nodes)
        index = {n: i for i, n in enumerate(self.ids)}
        succ = g._succ
        self.kids = [tuple(sorted(index[k] for k in succ[n])) for n in self.ids]
        nodes = g._node
        self.visits = [int(nodes[n]["visits"]) for n in self.ids]
        self.value_sum = [float(nodes[n]["value_sum"]) for n in self.ids]
        # Summed in trajectory order from 0.0, as the released code accumulates them.
        self.terminal = [float(sum(nodes[n]["terminal_rewards"], 0.0)) for n in self.ids]


def _search(arr: _Arrays, iterations: int, c: float, rule: str) -> tuple[list[int], list[float]]:
    kids, n = arr.kids, len(arr.ids)
    early = rule == "early-release"
    vis0 = [0] * n
    val0 = [0.0] * n
    if early:
        vis0 = [0, *arr.visits[1:]]  # the released code never counts the root while building
        val0 = list(arr.terminal)
    # Collapse single-child chains into segments (see module docstring). chain[x] = (segment
    # heads from x down, the chain's last node) for x = a child of a branching node or the root.
    head_of = list(range(n))
    chain: dict[int, tuple[tuple[int, ...], int]] = {}

    def walk(x: int) -> tuple[tuple[int, ...], int]:
        heads = [x]
        while len(kids[x]) == 1:
            nxt = kids[x][0]
            h = heads[-1]
            leaf = not kids[nxt]
            if val0[nxt] == val0[h] and not (early and leaf):
                head_of[nxt] = h
            else:
                heads.append(nxt)
            x = nxt
        return tuple(heads), x

    for p in range(n):
        if len(kids[p]) > 1:
            for k in kids[p]:
                chain[k] = walk(k)
    root_heads, root_end = walk(kids[0][0]) if len(kids[0]) == 1 else ((), 0)
    vis, val = list(vis0), list(val0)
    csum = [sum(vis0[k] for k in ks) for ks in kids]
    leaf_value = [arr.value_sum[i] / arr.visits[i] if arr.visits[i] else 0.0 for i in range(n)]
    select = _uct(kids, vis, val, csum, c, 0.0 if early else EPSILON) if rule != "puct" \
        else _puct(kids, vis, val, csum, c, arr.visits)

    for _ in range(iterations):
        path = list(root_heads)
        node = root_end
        while kids[node]:
            k = select(node)
            csum[node] += 1
            heads, node = chain[k]
            path.extend(heads)
        if early:  # the leaf's running mean (a segment head of its own, or the root)
            v = val[node] / vis[node] if vis[node] > 0 else 0
            vis[0] += 1
            val[0] += v
        else:
            v = leaf_value[node]
        for h in path:
            vis[h] += 1
            val[h] += v
    for i in range(n):
        h = head_of[i]
        if h != i:
            vis[i] = vis0[i] + vis[h] - vis0[h]
            val[i] = val[h]
    return vis, val


def _uct(kids: list[tuple[int, ...]], vis: list[int], val: list[float], csum: list[int],
         c: float, eps: float) -> Select:
    """UCB1 child choice; +inf for unvisited children, first maximum wins."""
    log, sqrt = math.log, math.sqrt

    def select(p: int) -> int:
        ks = kids[p]
        total = csum[p] + eps
        if total <= 0:
            return ks[0]
        lp = log(total)
        best, best_u = ks[0], -math.inf
        for k in ks:
            nk = vis[k]
            if nk == 0:
                return k  # +inf: nothing earlier was infinite, so this is the first maximum
            u = val[k] / nk + c * sqrt(lp / nk)
            if u > best_u:
                best, best_u = k, u
        return best

    return select


def _puct(kids: list[tuple[int, ...]], vis: list[int], val: list[float], csum: list[int],
          c: float, data_visits: list[int]) -> Select:
    """PUCT child choice with the data visit share as prior."""
    prior = [0.0] * len(kids)
    for ks in kids:
        tot = sum(data_visits[k] for k in ks)
        for k in ks:
            prior[k] = data_visits[k] / tot if tot else 1.0 / len(ks)

    def select(p: int) -> int:
        root_p = math.sqrt(csum[p])
        best, best_u = kids[p][0], -math.inf
        for k in kids[p]:
            nk = vis[k]
            u = (val[k] / nk if nk else 0.0) + c * prior[k] * root_p / (1 + nk)
            if u > best_u:
                best, best_u = k, u
        return best

    return select


def _best_path(kids: list[tuple[int, ...]], vis: list[int], val: list[float]) -> list[int]:
    path = [0]
    node = 0
    while kids[node] and max(vis[k] for k in kids[node]) > 0:
        node = max(kids[node], key=lambda k: val[k] / vis[k] if vis[k] > 0 else -math.inf)
        path.append(node)
    return path
