"""How a tree came to be, for the Trees page: the tree after its first n trajectories, the MCTS
statistics after i iterations, and the trajectories that end at chosen leaves. Pure functions
(no Streamlit), unit-tested in tests/test_explore_dashboard.py."""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import pandas as pd

from core.mcts import run_mcts
from core.settings import MCTSSettings, TreeSettings
from core.trajectory import Trajectory
from core.tree import build_tree
from core.tree_data import Tree


def tree_after(g: nx.DiGraph, trajs: Sequence[Trajectory], n: int) -> nx.DiGraph:
    """The tree as it was after its first `n` trajectories (in insertion order, `trajs` being the
    tree's own), built with the tree's merge rule: node ids equal the full tree's, since a tree
    hands out ids in insertion order."""
    built = TreeSettings.of_tree(g.graph.get("merge"), g.graph.get("settings"))
    return build_tree(list(trajs[:max(1, n)]), merge=built.merge, threshold=built.threshold).to_networkx()


def mcts_after(g: nx.DiGraph, iterations: int) -> nx.DiGraph:
    """A copy of the tree with the MCTS statistics after `iterations` iterations of the tree's own
    search (rule and c); the search is deterministic, so this is its state at that point."""
    h = g.copy()
    h.graph["settings"] = dict(g.graph.get("settings") or {})  # run_mcts writes into it
    search = MCTSSettings.of_tree(h.graph["settings"])
    run_mcts(h, iterations=iterations, c=search.c, rule=search.rule)  # iteration 0 too: the start of the replay
    return h


def mcts_series(g: nx.DiGraph, node: int, every: int, total: int) -> pd.DataFrame:
    """MCTS visits and Q of `node`'s children every `every` iterations up to `total`
    (columns iteration, child, visits, q; child labelled `id · action`)."""
    rows = []
    kids = sorted(g.successors(node))  # ids ascend in insertion order
    for i in range(0, total + 1, max(1, every)):
        h = mcts_after(g, i)
        for k in kids:
            d = h.nodes[k]
            rows.append({"iteration": i, "child": f"{k} · {d.get('action', '')[:40]}", "visits": d["mcts_visits"],
                         "q": d["mcts_value_sum"] / d["mcts_visits"] if d["mcts_visits"] else None})
    return pd.DataFrame(rows, columns=["iteration", "child", "visits", "q"])


def leaf_options(g: nx.DiGraph) -> list[int]:
    """Nodes where trajectories end (the leaves a user can compare), in id order."""
    return sorted(n for n in g if g.nodes[n].get("terminal_rewards"))


def leaf_trajectories(g: nx.DiGraph, leaves: Sequence[int]) -> list[str]:
    """One trajectory per leaf: the best one ending there (ties: the earliest inserted)."""
    tree = Tree.from_networkx(g)
    ends = tree.trajectory_ends()
    out = []
    for leaf in leaves:
        here = [t for t, (n, _) in ends.items() if n == leaf]
        out.append(max(here, key=lambda t: ends[t][1]) if here else tree.pick_trajectory(leaf, ends))
    return out
