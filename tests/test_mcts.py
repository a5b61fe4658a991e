"""Offline MCTS: statistics worked out by hand, and an independent plain implementation written
from the rules' text (list scanning, parent counts re-summed at every level), compared node by
node on random trees."""

from __future__ import annotations

import math
import random

import networkx as nx
import pytest

from core.errors import UserError
from core.mcts import RULES, run_mcts, run_mcts_all
from core.trajectory import Step, Trajectory
from core.tree import build_tree, build_trees
from core.tree_data import Tree


def traj(actions: list[str], reward: float, task: str = "t") -> Trajectory:
    return Trajectory(env="e", task_id=task, instruction="do it",
                      steps=[Step(action=a, observation=f"saw {a}") for a in actions], reward=reward)


@pytest.fixture
def tiny() -> Tree:
    """root(0) -> a(1) [leaf, reward 1.0]; root -> b(2) -> b1(3) [0.0], b -> b2(4) [0.5]."""
    return build_tree([traj(["a"], 1.0), traj(["b", "b1"], 0.0), traj(["b", "b2"], 0.5)])


def stats(g: Tree | nx.DiGraph) -> dict[int, tuple[int, float]]:
    if isinstance(g, Tree):
        return dict(enumerate(zip(g.mcts_visits.tolist(), g.mcts_value_sum.tolist())))
    return {n: (d["mcts_visits"], d["mcts_value_sum"]) for n, d in g.nodes(data=True)}


# UCT by hand, c = 1.41, P = sum of the children's MCTS visits (+1e-12), leaf values a = 1.0,
# b1 = 0.0, b2 = 0.5.
#  it 1: root: a, b unvisited (+inf, +inf) -> a (earliest).            a = (1, 1.0)
#  it 2: root: a = 1 + 1.41*sqrt(ln 1/1) = 1.0, b = +inf -> b;
#        b: b1, b2 unvisited -> b1, value 0.0.                           b = (1, 0), b1 = (1, 0)
#  it 3: P = 2, ln 2 = 0.6931: a = 1 + 1.41*sqrt(0.6931) = 2.1739, b = 0 + 1.1739 -> a   a = (2, 2)
#  it 4: P = 3, ln 3 = 1.0986: a = 1 + 1.41*sqrt(1.0986/2) = 2.0450, b = 1.41*1.0481 = 1.4779 -> a
#  it 5: P = 4: a = 1 + 1.41*sqrt(1.3863/3) = 1.9585, b = 1.41*sqrt(1.3863) = 1.6601 -> a
#  it 6: P = 5: a = 1 + 1.41*sqrt(1.6094/4) = 1.8944, b = 1.41*sqrt(1.6094) = 1.7888 -> a  a = (5, 5)
#  it 7: P = 6: a = 1 + 1.41*sqrt(1.7918/5) = 1.8441, b = 1.41*sqrt(1.7918) = 1.8874 -> b;
#        b: b1 = 0 + 1.41*sqrt(ln 1) = 0, b2 = +inf -> b2, value 0.5.   b = (2, 0.5), b2 = (1, 0.5)
#  it 8: P = 7: a = 1 + 1.41*sqrt(1.9459/5) = 1.8796, b = 0.25 + 1.41*sqrt(1.9459/2) = 1.6408 -> a
#  it 9, 10: a (1.8301 vs 1.6877; 1.7900 vs 1.7279)                    a = (8, 8)
#  it 11: P = 10: a = 1 + 1.41*sqrt(2.3026/8) = 1.7565, b = 0.25 + 1.41*sqrt(2.3026/2) = 1.7629 -> b;
#        b: P = 2: b1 = 0 + 1.41*sqrt(0.6931) = 1.1739, b2 = 0.5 + 1.1739 = 1.6739 -> b2
#  it 12: P = 11: a = 1 + 1.41*sqrt(2.3979/8) = 1.7720, b = 1/3 + 1.41*sqrt(2.3979/3) = 1.5939 -> a
# The root is never backed up under this rule.
UCT_BY_HAND = {
    1: {0: (0, 0.0), 1: (1, 1.0), 2: (0, 0.0), 3: (0, 0.0), 4: (0, 0.0)},
    2: {0: (0, 0.0), 1: (1, 1.0), 2: (1, 0.0), 3: (1, 0.0), 4: (0, 0.0)},
    6: {0: (0, 0.0), 1: (5, 5.0), 2: (1, 0.0), 3: (1, 0.0), 4: (0, 0.0)},
    7: {0: (0, 0.0), 1: (5, 5.0), 2: (2, 0.5), 3: (1, 0.0), 4: (1, 0.5)},
    10: {0: (0, 0.0), 1: (8, 8.0), 2: (2, 0.5), 3: (1, 0.0), 4: (1, 0.5)},
    11: {0: (0, 0.0), 1: (8, 8.0), 2: (3, 1.0), 3: (1, 0.0), 4: (2, 1.0)},
    12: {0: (0, 0.0), 1: (9, 9.0), 2: (3, 1.0), 3: (1, 0.0), 4: (2, 1.0)},
}


@pytest.mark.parametrize("iterations", sorted(UCT_BY_HAND))
def test_uct_statistics_by_hand(tiny, iterations):
    best = run_mcts(tiny, iterations=iterations, c=1.41)
    assert stats(tiny) == UCT_BY_HAND[iterations]
    assert best == [0, 1]  # a has Q = 1.0, the best possible
    assert tiny.best_path == best
    assert (tiny.mcts_iterations, tiny.mcts_c, tiny.mcts_rule) == (iterations, 1.41, "uct")
    assert tiny.settings["mcts"] == {"rule": "uct", "iterations": iterations, "c": 1.41}
    g = tiny.to_networkx()  # the DiGraph carries the same results
    assert stats(g) == UCT_BY_HAND[iterations] and g.graph["best_path"] == best
    assert (g.graph["mcts_iterations"], g.graph["mcts_c"], g.graph["mcts_rule"]) == (iterations, 1.41, "uct")


def test_best_path_follows_mcts_mean_into_subtree():
    # After it 7 above, b's best child is b2 (Q 0.5 vs 0.0). Make a worse so b is best at the root:
    g = build_tree([traj(["a"], 0.1), traj(["b", "b1"], 0.0), traj(["b", "b2"], 1.0)])
    best = run_mcts(g, iterations=200)
    q = {n: s / v for n, (v, s) in stats(g).items() if v}
    assert q[2] > q[1] and q[4] > q[3]
    assert best == [0, 2, 4]


# The early-release rule (an earlier version of the released MCTS file) by hand: the search
# starts from the data. a = (1 visit, total 1.0: a trajectory ends there), b = (2, 0.0: no
# trajectory ends at b), b1 = (1, 0.0), b2 = (1, 0.5), root = (0, 0.0); P is the plain sum of the children's counts; the root is backed up too.
#  it 1: P = 1 + 2 = 3, ln 3 = 1.0986: a = 1.0 + 1.41*sqrt(1.0986) = 2.4779,
#        b = 0/2 + 1.41*sqrt(1.0986/2) = 1.0450 -> a, value 1.0/1 -> a = (2, 2.0), root = (1, 1.0)
#  it 2: P = 4: a = 1 + 1.41*sqrt(1.3863/2) = 2.1739, b = 1.41*sqrt(1.3863/2) = 1.1739 -> a
#  it 3: P = 5: a = 1 + 1.41*sqrt(1.6094/3) = 2.0328, b = 1.41*sqrt(1.6094/2) = 1.2649 -> a
#  it 4: P = 6: a = 1 + 1.41*sqrt(1.7918/4) = 1.9437, b = 1.41*sqrt(1.7918/2) = 1.3346 -> a
#  ... a keeps winning until it 14: P = 16: a = 1 + 1.41*sqrt(2.7726/14) = 1.6275,
#        b = 0 + 1.41*sqrt(2.7726/2) = 1.6601 -> b; b: P = 2: b1 = 0 + 1.41*sqrt(0.6931) = 1.1739,
#        b2 = 0.5 + 1.1739 = 1.6739 -> b2, value 0.5/1 = 0.5.
EARLY_RELEASE_BY_HAND = {
    1: {0: (1, 1.0), 1: (2, 2.0), 2: (2, 0.0), 3: (1, 0.0), 4: (1, 0.5)},
    4: {0: (4, 4.0), 1: (5, 5.0), 2: (2, 0.0), 3: (1, 0.0), 4: (1, 0.5)},
    13: {0: (13, 13.0), 1: (14, 14.0), 2: (2, 0.0), 3: (1, 0.0), 4: (1, 0.5)},
    14: {0: (14, 13.5), 1: (14, 14.0), 2: (3, 0.5), 3: (1, 0.0), 4: (2, 1.0)},
}


@pytest.mark.parametrize("iterations", sorted(EARLY_RELEASE_BY_HAND))
def test_early_release_rule_by_hand(tiny, iterations):
    run_mcts(tiny, iterations=iterations, rule="early-release")
    assert stats(tiny) == EARLY_RELEASE_BY_HAND[iterations]


# -- an independent plain implementation, straight from the rules' text -------------------------
def _back_up(g: nx.DiGraph, st: dict[int, list], path: list[int], leaf: int) -> None:
    """Add one visit and the leaf's data mean to every node on the path (not the root)."""
    d = g.nodes[leaf]
    value = d["value_sum"] / d["visits"] if d["visits"] else 0.0
    for n in path:
        st[n][0] += 1
        st[n][1] += value


def plain_uct(g: nx.DiGraph, iterations: int, c: float) -> dict[int, list]:
    kids = {n: sorted(g.successors(n)) for n in g}
    st = {n: [0, 0.0] for n in g}
    for _ in range(iterations):
        node, path = 0, []
        while kids[node]:
            total = sum(st[k][0] for k in kids[node]) + 1e-12

            def ucb(k, total=total):
                n, s = st[k]
                return math.inf if n == 0 else s / n + c * math.sqrt(math.log(total) / n)

            node = max(kids[node], key=ucb)  # max() keeps the first of equal keys
            path.append(node)
        _back_up(g, st, path, node)
    return st


def plain_early_release(g: nx.DiGraph, iterations: int, c: float) -> dict[int, list]:
    """An earlier version of the released MCTS file: one (count, total) per node seeded by the
    tree build."""
    kids = {n: sorted(g.successors(n)) for n in g}
    st = {n: [0 if n == 0 else d["visits"], 0.0] for n, d in g.nodes(data=True)}
    for n, d in g.nodes(data=True):
        for r in d["terminal_rewards"]:
            st[n][1] += r
    for _ in range(iterations):
        node, path = 0, [0]
        while kids[node]:
            total = sum(st[k][0] for k in kids[node])
            if total == 0:
                node = kids[node][0]  # the released code picks at random here
            else:
                node = max(kids[node], key=lambda k, t=total: math.inf if st[k][0] == 0 else
                           st[k][1] / st[k][0] + c * math.sqrt(math.log(t) / st[k][0]))
            path.append(node)
        value = st[node][1] / st[node][0] if st[node][0] > 0 else 0
        for n in path:
            st[n][0] += 1
            st[n][1] += value
    return st


def plain_puct(g: nx.DiGraph, iterations: int, c: float) -> dict[int, list]:
    """PUCT from the rule's text: Q (0 if unvisited) + c * prior * sqrt(P) / (1 + n), prior =
    the child's share of its siblings' data visits (uniform if they have none)."""
    kids = {n: sorted(g.successors(n)) for n in g}
    st = {n: [0, 0.0] for n in g}
    for _ in range(iterations):
        node, path = 0, []
        while kids[node]:
            ks = kids[node]
            total = sum(st[k][0] for k in ks)
            data = sum(g.nodes[k]["visits"] for k in ks)

            def score(k, ks=ks, total=total, data=data):
                n, s = st[k]
                prior = g.nodes[k]["visits"] / data if data else 1.0 / len(ks)
                return (s / n if n else 0.0) + c * prior * math.sqrt(total) / (1 + n)

            node = max(ks, key=score)
            path.append(node)
        _back_up(g, st, path, node)
    return st


def plain_best_path(g: nx.DiGraph, st: dict[int, list]) -> list[int]:
    path, node = [0], 0
    while list(g.successors(node)):
        ks = sorted(g.successors(node))
        if max(st[k][0] for k in ks) == 0:
            break
        node = max(ks, key=lambda k: st[k][1] / st[k][0] if st[k][0] else -math.inf)
        path.append(node)
    return path


def random_trajectory_tree(seed: int) -> nx.DiGraph:
    """Shared prefixes from a small action alphabet; rewards on a coarse grid, so many values
    tie; some trajectories end at inner nodes."""
    rng = random.Random(seed)
    trajs = [traj([rng.choice("abc") if d < 2 else rng.choice("abcdef") for d in range(rng.randint(0, 7))],
                  rng.choice([0.0, 0.25, 0.5, 0.5, 1.0])) for _ in range(rng.randint(5, 40))]
    return build_tree(trajs).to_networkx()


def random_raw_tree(seed: int) -> nx.DiGraph:
    """A random tree with arbitrary statistics, including leaves with zero data visits."""
    rng = random.Random(seed)
    g = nx.DiGraph(tree_id="e/raw", env="e", task_id="raw")
    g.add_node(0)
    for n in range(1, rng.randint(3, 60)):
        g.add_edge(rng.randrange(n), n)
    for n in g:
        visits = rng.choice([0, 0, 1, 2, 5])
        g.nodes[n].update(visits=visits, value_sum=float(rng.choice([0, 1, 2]) * visits) / 2,
                          terminal_rewards=[rng.choice([0.0, 0.5, 1.0]) for _ in range(rng.randint(0, 2))],
                          depth=0, action="", mcts_visits=7, mcts_value_sum=3.0)
    return g


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("rule, plain", [("uct", plain_uct), ("early-release", plain_early_release),
                                         ("puct", plain_puct)])
def test_matches_plain_implementation(seed, rule, plain):
    for g in (random_trajectory_tree(seed), random_raw_tree(seed)):
        c = [1.41, 0.5, 2.0][seed % 3]
        iterations = [1000, 257, 31][seed % 3]
        best = run_mcts(g, iterations=iterations, c=c, rule=rule)
        expected = plain(g, iterations, c)
        assert {n: [d["mcts_visits"], d["mcts_value_sum"]] for n, d in g.nodes(data=True)} == expected
        assert best == plain_best_path(g, expected)


@pytest.mark.parametrize("rule, plain", [("uct", plain_uct), ("early-release", plain_early_release),
                                         ("puct", plain_puct)])
def test_batched_trees_match_plain_implementation(rule, plain):
    """Many trees scored in one compiled call (run_mcts_all on Trees) give each tree the
    statistics of the plain implementation run on that tree alone."""
    graphs = [random_trajectory_tree(seed) for seed in range(20, 30)]
    trees = [Tree.from_networkx(g) for g in graphs]
    bests = run_mcts_all(trees, iterations=300, c=1.0, rule=rule)
    for g, t, best in zip(graphs, trees, bests, strict=True):
        expected = plain(g, 300, 1.0)
        assert {n: list(v) for n, v in stats(t).items()} == expected
        assert best == t.best_path == plain_best_path(g, expected)


def test_rerun_resets_and_zero_iterations(tiny):
    run_mcts(tiny, iterations=50)
    first = stats(tiny)
    assert run_mcts(tiny, iterations=50) and stats(tiny) == first
    assert run_mcts(tiny, iterations=0) == [0]
    assert all(v == (0, 0.0) for v in stats(tiny).values())


def test_mean_rule_uses_data_means(tiny):
    # Data means at the root's children: a = 1.0, b = (0.0 + 0.5)/2 = 0.25 -> a.
    assert run_mcts(tiny, rule="mean") == [0, 1]
    assert stats(tiny)[2] == (2, 0.5)
    g = build_tree([traj(["a"], 0.2), traj(["b", "b1"], 0.0), traj(["b", "b2"], 1.0)])
    assert run_mcts(g, rule="mean") == [0, 2, 4]  # b = 0.5 > a = 0.2, then b2 = 1.0


def test_puct_counts_and_path(tiny):
    best = run_mcts(tiny, iterations=300, c=1.0, rule="puct")
    s = stats(tiny)
    assert s[1][0] + s[2][0] == 300 and s[3][0] + s[4][0] == s[2][0]
    assert s[0] == (0, 0.0) and best == [0, 1]


def test_run_all_and_bad_arguments(tiny):
    graphs = build_trees([traj(["x"], 1.0, "t1"), traj(["y"], 0.0, "t1"), traj(["z"], 1.0, "t2")])
    assert run_mcts_all(graphs, iterations=10) == [[0, 1], [0, 1]]
    assert set(RULES) == {"uct", "early-release", "puct", "mean"}
    with pytest.raises(UserError, match="rule"):
        run_mcts(tiny, rule="ucb2")
    with pytest.raises(UserError, match="'reference' is now called 'early-release'"):
        run_mcts(tiny, rule="reference")
    with pytest.raises(UserError, match="iterations"):
        run_mcts(tiny, iterations=-1)
    with pytest.raises(UserError, match="exploration"):
        run_mcts(tiny, c=-1.0)
