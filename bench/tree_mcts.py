"""Engine throughput on synthetic data: DuckDB import, tree building, MCTS, pair extraction.

Generates N synthetic trajectories (default 100,000: about 10 steps each, spread over 2,000
tasks, three candidate actions per step skewed towards a "good" one so trajectories of a task
share prefixes, rewards in [0, 1] = share of good choices), then times:

  import   Store.add_trajectories into a real DuckDB file, in batches    steps/s
  tree     core.tree.build_trees                                          nodes/s, steps/s
           vs a plain-Python builder: one trajectory at a time, children found by scanning a
           list, then the same networkx DiGraph (checked equal, node by node)
  mcts     core.mcts.run_mcts, 1000 iterations per tree                   iterations/s
           vs the plain algorithm as the released reference code runs it (node objects,
           parent count re-summed over the children at every level); the statistics and best
           paths are asserted identical. The plain run covers --baseline-trees trees (it is
           slow); the ratio compares iterations/s.
  pairs    core.pairs.tree_pairs (step, continuation) and eto_pairs       pairs/s

Peak memory is the process's peak resident set size after each phase (resource.getrusage),
a running maximum. Times are medians over --repeats where a phase is cheap to repeat.

    python bench/tree_mcts.py [--trajectories 100000] [--tasks 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import networkx as nx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.mcts import run_mcts  # noqa: E402
from core.pairs import eto_pairs, tree_pairs  # noqa: E402
from core.store import Store  # noqa: E402
from core.trajectory import Step, Trajectory  # noqa: E402
from core.tree import build_trees, normalize_action  # noqa: E402

VERBS = ("search", "click", "open", "take", "go to", "look at", "use", "put", "move", "check", "read", "buy")


def synthetic(n: int, n_tasks: int, seed: int = 0) -> list[Trajectory]:
    """Trajectories over `n_tasks` tasks; each step picks one of 3 actions (0 = good, p 0.7)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        task = i % n_tasks
        length = rng.randint(8, 12)
        steps, good = [], 0
        for d in range(length):
            j = 0 if rng.random() < 0.7 else rng.randint(1, 2)
            good += j == 0
            verb = VERBS[d % len(VERBS)]
            steps.append(Step(thought=f"step {d}: option {j} looks {'right' if j == 0 else 'worth a try'}",
                              action=f"{verb}[item {task}-{d}-{j}]",
                              observation=f"You {verb} item {task}-{d}-{j}. Page {d} shows {3 * d + j} results.",
                              reward=0.0))
        reward = round(good / length, 2)
        out.append(Trajectory(env="bench", task_id=f"task{task:05d}", instruction=f"find item {task}",
                              steps=steps, reward=reward, success=reward == 1.0, model="weak",
                              meta={"initial_observation": f"Welcome. Task {task}."}))
    return out


class Timing:
    """Median wall-clock and CPU seconds of a repeated call, and its last result."""

    def __init__(self, fn: Callable[[], object], repeats: int = 1) -> None:
        walls, cpus = [], []
        for _ in range(repeats):
            self.result = None  # free the previous repeat's result first (peak memory)
            w, c = time.perf_counter(), time.process_time()
            self.result = fn()
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
        self.wall, self.cpu = statistics.median(walls), statistics.median(cpus)

    def __str__(self) -> str:
        return f"{self.wall:.2f} s ({self.cpu:.2f} CPU)"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- plain baselines ----------------------------------------------------------------------------
class PlainNode:
    __slots__ = ("key", "action", "depth", "children", "visits", "value_sum", "successes",
                 "terminal", "traj_ids", "thoughts", "observations", "id")

    def __init__(self, key: str, action: str, depth: int, node_id: int) -> None:
        self.key, self.action, self.depth, self.id = key, action, depth, node_id
        self.children: list[PlainNode] = []
        self.visits, self.value_sum, self.successes = 0, 0.0, 0
        self.terminal: list[float] = []
        self.traj_ids: list[str] = []
        self.thoughts: list[str] = []
        self.observations: list[str] = []


PlainTrees = dict[tuple[str, str], tuple[PlainNode, list[PlainNode], Trajectory, list[int]]]


def plain_insert(trajectories: list[Trajectory]) -> PlainTrees:
    """One trajectory at a time; children found by scanning the children list."""
    roots: dict[tuple[str, str], tuple[PlainNode, list[PlainNode], Trajectory, list[int]]] = {}
    for t in trajectories:
        if (t.env, t.task_id) not in roots:
            root = PlainNode("", "", 0, 0)
            roots[(t.env, t.task_id)] = (root, [root], t, [0])
        root, nodes, _, count = roots[(t.env, t.task_id)]
        count[0] += 1
        node, path = root, [root]
        for depth, s in enumerate(t.steps, 1):
            key = normalize_action(s.action)
            for child in node.children:
                if child.key == key:
                    node = child
                    break
            else:
                child = PlainNode(key, s.action, depth, len(nodes))
                nodes.append(child)
                node.children.append(child)
                node = child
            if s.thought not in node.thoughts:
                node.thoughts.append(s.thought)
            if s.observation not in node.observations:
                node.observations.append(s.observation)
            path.append(node)
        for n in path:
            n.visits += 1
            n.value_sum += t.reward
            n.successes += int(bool(t.success))
            n.traj_ids.append(t.traj_id)
        node.terminal.append(t.reward)
    return roots


def plain_graphs(roots: PlainTrees) -> list[nx.DiGraph]:
    """The plain trees as networkx DiGraphs (what build_trees returns)."""
    graphs = []
    for (env, task_id), (_, nodes, first, count) in roots.items():
        g = nx.DiGraph(tree_id=f"{env}/{task_id}", env=env, task_id=task_id,
                       instruction=first.instruction,
                       initial_observation=str(first.meta.get("initial_observation", "")),
                       merge="action", settings={"merge": "action"}, n_trajectories=count[0], best_path=[])
        for n in nodes:
            g.add_node(n.id, depth=n.depth, action=n.action, thoughts=n.thoughts,
                       observations=n.observations, visits=n.visits, value_sum=n.value_sum,
                       successes=n.successes, failures=n.visits - n.successes,
                       terminal_rewards=n.terminal, mcts_visits=0, mcts_value_sum=0.0,
                       traj_ids=n.traj_ids)
            for child in n.children:
                g.add_edge(n.id, child.id)
        graphs.append(g)
    return graphs


class MNode:
    __slots__ = ("children", "visit_count", "total_reward", "leaf_value")

    def __init__(self, leaf_value: float) -> None:
        self.children: list[MNode] = []
        self.visit_count, self.total_reward, self.leaf_value = 0, 0.0, leaf_value


def plain_mcts_tree(g: nx.DiGraph) -> tuple[MNode, dict[int, MNode]]:
    objs = {n: MNode(d["value_sum"] / d["visits"] if d["visits"] else 0.0) for n, d in g.nodes(data=True)}
    for n in sorted(g):
        objs[n].children = [objs[k] for k in sorted(g.successors(n))]
    return objs[0], objs


def ucb(node: MNode, total_visits: float, c: float) -> float:
    if node.visit_count == 0:
        return float("inf")
    return node.total_reward / node.visit_count + c * math.sqrt(math.log(total_visits) / node.visit_count)


def plain_mcts(root: MNode, iterations: int, c: float) -> None:
    """The reference's loop (parent count re-summed at every level) with the uct rule's
    statistics: zero start, +1e-12 on the parent count, root not backed up."""
    for _ in range(iterations):
        node, path = root, []
        while node.children:
            total = sum(child.visit_count for child in node.children) + 1e-12
            node = max(node.children, key=lambda n, t=total: ucb(n, t, c))
            path.append(node)
        value = node.leaf_value
        for n in path:
            n.visit_count += 1
            n.total_reward += value


def plain_best_path(root: MNode, objs: dict[int, MNode]) -> list[int]:
    ids = {id(o): n for n, o in objs.items()}
    node, path = root, [0]
    while node.children and max(ch.visit_count for ch in node.children) > 0:
        node = max(node.children, key=lambda n: n.total_reward / n.visit_count if n.visit_count else -math.inf)
        path.append(ids[id(node)])
    return path


def same_graphs(a: list[nx.DiGraph], b: list[nx.DiGraph]) -> bool:
    return len(a) == len(b) and all(
        x.graph == y.graph and sorted(x.edges) == sorted(y.edges) and dict(x.nodes(data=True)) == dict(y.nodes(data=True))
        for x, y in zip(a, b))


# -- main ---------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trajectories", type=int, default=100_000)
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--iterations", type=int, default=1000, help="MCTS iterations per tree")
    ap.add_argument("--baseline-trees", type=int, default=200, help="trees the plain MCTS runs on")
    ap.add_argument("--batch", type=int, default=10_000, help="trajectories per add_trajectories call")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows: list[tuple[str, ...]] = []

    def row(phase: str, amount: int, unit: str, t: Timing, notes: str) -> None:
        rows.append((phase, f"{t.wall:.2f}", f"{t.cpu:.2f}", f"{amount / t.wall:,.0f} {unit}",
                     f"{amount / t.cpu:,.0f} {unit}", notes))

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    t0 = time.perf_counter()
    trajs = synthetic(args.trajectories, args.tasks)
    n_steps = sum(len(t.steps) for t in trajs)
    print(f"generated {len(trajs):,} trajectories, {n_steps:,} steps, {args.tasks:,} tasks "
          f"in {time.perf_counter() - t0:.1f}s; peak RSS {peak_mb():,.0f} MB", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        imp = Timing(lambda: [store.add_trajectories(trajs[i:i + args.batch])
                              for i in range(0, len(trajs), args.batch)])
        stored = store.counts()["steps"]
        assert stored == n_steps, (stored, n_steps)
    row("import (DuckDB)", n_steps, "steps/s", imp,
        f"1M steps: {1e6 * imp.wall / n_steps:.1f} s wall, {1e6 * imp.cpu / n_steps:.1f} s CPU; "
        f"batches of {args.batch:,} trajectories")
    print(f"import done; peak RSS {peak_mb():,.0f} MB", flush=True)

    fast = Timing(lambda: build_trees(trajs), args.repeats)
    graphs = fast.result
    n_nodes = sum(g.number_of_nodes() for g in graphs)
    ins = Timing(lambda: plain_insert(trajs))
    conv = Timing(lambda: plain_graphs(ins.result))
    assert same_graphs(graphs, conv.result), "tree builders disagree"
    del ins.result, conv.result
    plain_cpu = ins.cpu + conv.cpu
    row("tree build", n_nodes, "nodes/s", fast,
        f"plain: {n_nodes / plain_cpu:,.0f} nodes/CPU-s ({plain_cpu:.2f} CPU = {ins.cpu:.2f} insert + "
        f"{conv.cpu:.2f} DiGraphs): x{plain_cpu / fast.cpu:.1f}, graphs identical")
    print(f"trees: {len(graphs):,} trees, {n_nodes:,} nodes "
          f"({sum(1 for g in graphs for n in g if g.out_degree(n) > 1):,} branching); "
          f"peak RSS {peak_mb():,.0f} MB", flush=True)

    sample = graphs[: args.baseline_trees]
    # Both sides start from the networkx trees (the plain one builds its node objects, the fast
    # one its arrays) and run on fresh statistics each repeat.
    pm = Timing(lambda: [(root, objs, plain_mcts(root, args.iterations, 1.41))
                         for root, objs in map(plain_mcts_tree, sample)], args.repeats)
    fs = Timing(lambda: [run_mcts(g, args.iterations) for g in sample], args.repeats)
    for g, (root, objs, _), best in zip(sample, pm.result, fs.result):
        assert all(g.nodes[n]["mcts_visits"] == o.visit_count and g.nodes[n]["mcts_value_sum"] == o.total_reward
                   for n, o in objs.items()), f"MCTS statistics differ on {g.graph['tree_id']}"
        assert best == plain_best_path(root, objs), f"best paths differ on {g.graph['tree_id']}"
    del pm.result
    every = Timing(lambda: [run_mcts(g, args.iterations) for g in graphs])
    it_all, it_s = args.iterations * len(graphs), args.iterations * len(sample)
    row("mcts (all trees)", it_all, "it/s", every, f"{len(graphs):,} trees x {args.iterations} iterations")
    row(f"mcts ({len(sample)} trees)", it_s, "it/s", fs,
        f"plain: {it_s / pm.cpu:,.0f} it/CPU-s ({pm.cpu:.2f} CPU): x{pm.cpu / fs.cpu:.1f}, "
        "statistics and best paths identical")
    print(f"mcts done; peak RSS {peak_mb():,.0f} MB", flush=True)

    for gran in ("step", "continuation"):
        # Counted tree by tree, not kept: the bench must not hold every pair in memory.
        tp = Timing(lambda gran=gran: sum(len(tree_pairs(g, granularity=gran)) for g in graphs), args.repeats)
        row(f"pairs ({gran})", tp.result, "pairs/s", tp, f"{tp.result:,} pairs from {len(graphs):,} trees")
    te = Timing(lambda: len(eto_pairs(trajs, mode="weak", max_pairs_per_task=50)), args.repeats)
    row("pairs (ETO)", te.result, "pairs/s", te, f"{te.result:,} pairs, at most 50 per task")

    print(f"\npeak RSS {peak_mb():,.0f} MB; load average {os.getloadavg()[0]:.1f}. On a shared machine wall "
          "time stretches with the load; CPU seconds do not, so ratios compare CPU seconds.\n")
    head = ("phase", "wall s", "CPU s", "per wall s", "per CPU s", "baseline and notes")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())

if __name__ == "__main__":
    main()
