"""Which nodes of a trajectory tree to draw, and where: caps, then a tidy top-down layout.

Big trees (thousands of nodes) stay readable and fast by two caps applied before the layout:
a depth cap (nodes deeper than it are hidden; the node at the cap reports how many it hides)
and a children cap (each node shows its most-visited children; the rest fold into one
"+k more" group node). Nodes on a path that must stay visible (the MCTS best path, the
selected node) are always kept. The kept tree is laid out with igraph's Reingold-Tilford
algorithm: the root on top, one row per depth, siblings at least one unit apart.

Pure functions on a networkx DiGraph; no Streamlit here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import igraph as ig
import networkx as nx
import numpy as np

from core.tree import path_to


@dataclass
class TreeView:
    """The drawn part of a tree.

    `nodes[i]` is a real node id (>= 0) or a group id (< 0) standing for the folded children
    listed in `groups`; `parents[i]` is the index in `nodes` of its parent (-1 for the root);
    `x`, `depth` are layout coordinates; `hidden[i]` counts the descendants of `nodes[i]` that
    the caps hide below it (group members and their subtrees are counted in the group).
    """

    nodes: list[int]
    parents: list[int]
    x: np.ndarray
    depth: np.ndarray
    hidden: list[int]
    groups: dict[int, list[int]] = field(default_factory=dict)

    def index(self, node: int) -> int | None:
        """Position of a node id in `nodes`, or None when it is not drawn."""
        try:
            return self.nodes.index(node)
        except ValueError:
            return None


def group_id(parent: int) -> int:
    """The id of the "+k more" group folding some children of `parent` (always negative)."""
    return -1 - parent


def subtree_sizes(g: nx.DiGraph, root: int = 0) -> dict[int, int]:
    """Number of nodes in each node's subtree (itself included)."""
    order = list(nx.dfs_preorder_nodes(g, root))
    size = dict.fromkeys(order, 1)
    for n in reversed(order):
        for c in g.successors(n):
            size[n] += size[c]
    return size


def cap_tree(g: nx.DiGraph, max_depth: int | None = None, max_children: int | None = None,
             keep: Iterable[int] = (), root: int = 0) -> tuple[list[int], list[int], list[int],
                                                               dict[int, list[int]]]:
    """Apply the caps; return (nodes, parent indices, hidden counts, groups) in preorder.

    Under the children cap a node shows its `max_children` most-visited children (ties: the
    earlier child), plus any child leading to a node of `keep`; the others fold into one group.
    Kept children stay in insertion order, the group comes last.
    """
    keep_set: set[int] = set()
    for k in keep:
        if k in g:
            keep_set.update(path_to(g, k))
    size = subtree_sizes(g, root)
    nodes: list[int] = []
    parents: list[int] = []
    hidden: list[int] = []
    groups: dict[int, list[int]] = {}
    stack: list[tuple[int, int, int]] = [(root, -1, 0)]  # (node, parent index, depth)
    while stack:
        n, p, d = stack.pop()
        me = len(nodes)
        nodes.append(n)
        parents.append(p)
        if n < 0:  # a group: hides its members' subtrees
            hidden.append(sum(size[c] for c in groups[n]))
            continue
        kids = sorted(g.successors(n))
        if max_depth is not None and d >= max_depth:
            # Past the depth cap only the path to a kept node goes on.
            shown = [c for c in kids if c in keep_set]
            hidden.append(size[n] - 1 - sum(size[c] for c in shown))
            for c in reversed(shown):
                stack.append((c, me, d + 1))
            continue
        shown = kids
        if max_children is not None and len(kids) > max_children:
            ranked = sorted(kids, key=lambda c: (-g.nodes[c].get("visits", 0), c))
            chosen = set(ranked[:max_children]) | (keep_set & set(kids))
            shown = [c for c in kids if c in chosen]
            folded = [c for c in kids if c not in chosen]
            if folded:
                groups[group_id(n)] = folded
                shown = shown + [group_id(n)]
        hidden.append(0)
        # Push in reverse so children are visited (and numbered) in display order.
        for c in reversed(shown):
            stack.append((c, me, d + 1))
    return nodes, parents, hidden, groups


def tidy_coordinates(parents: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Reingold-Tilford coordinates (x, depth) for a tree given as parent indices (root: -1).

    Children are drawn left to right in the order of their indices.
    """
    n = len(parents)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    edges = [(p, i) for i, p in enumerate(parents) if p >= 0]
    graph = ig.Graph(n=n, edges=edges, directed=True)
    coords = np.asarray(graph.layout_reingold_tilford(mode="out", root=[0]).coords, dtype=float)
    return coords[:, 0], coords[:, 1]


def layout_tree(g: nx.DiGraph, max_depth: int | None = None, max_children: int | None = None,
                keep: Iterable[int] = ()) -> TreeView:
    """Caps then tidy layout: everything the tree figure needs about positions."""
    nodes, parents, hidden, groups = cap_tree(g, max_depth, max_children, keep)
    x, depth = tidy_coordinates(parents)
    return TreeView(nodes=nodes, parents=parents, x=x, depth=depth, hidden=hidden, groups=groups)


def default_caps(n_nodes: int) -> tuple[int | None, int | None]:
    """Caps that keep the drawn tree to a few hundred nodes: (max depth, max children)."""
    if n_nodes <= 300:
        return None, None
    if n_nodes <= 1500:
        return 12, 5
    return 8, 3
