"""Engine throughput on synthetic data, every comparison printed side by side in one run.

Synthetic trajectories: about 10 steps each, spread over tasks, three candidate actions per step
skewed towards a "good" one (so trajectories of a task share prefixes), rewards in [0, 1] = the
share of good choices. Phases (medians over --repeats where a phase is cheap to repeat):

  compile   the numba MCTS kernel: first call in this process (cache load, or a compile on a
            fresh checkout), kept out of every measured run
  release   (a) `python -m core tree` + `python -m core mcts` as processes on a real store of
            --cli-tasks x --cli-per-task trajectories, against a plain in-process
            re-implementation of the released code (node objects, children found by scanning,
            1000 MCTS iterations per tree re-summing parent counts) on the same trajectories;
            the stored MCTS statistics are asserted equal to the released algorithm's
  import    (c) --trajectories trajectories: Store.add_trajectories into a DuckDB file, in batches
  tree      build_trees_from_tables on the store's Arrow columns (all of them)
  mcts      (b) run_mcts_all, 1000 iterations per tree, vs the plain loop (node objects, parent
            count re-summed at every level) on --baseline-trees trees: statistics and best paths
            asserted identical
  pairs     tree_pairs (step, continuation) and eto_pairs; then the peak RSS of this run (c)
  baseline  (b) in memory, on --baseline-trajectories: build_trees (Trajectory objects) and
            build_trees_from_tables (the store's Arrow columns, loaded before timing) vs a plain
            builder scanning children lists that makes the same DiGraphs (checked equal)
  figure    (e) the Trees page's figure of a stored 5,000-node tree: load from the store, DiGraph,
            layout, Plotly figure, JSON
  scale     (d, with --scale STEPS) a synthetic store of STEPS steps through import, `tree`,
            `mcts` and `pairs` (processes), with time and each process's peak memory

Peak memory: this process's peak resident set size (resource.getrusage), a running maximum;
the processes report their own peak (VmHWM) at exit. On a shared machine wall time stretches with the
load; CPU seconds do not, so ratios compare CPU seconds.

    python bench/tree_mcts.py                      # full sizes (100k trajectories, 2,000 x 40)
    python bench/tree_mcts.py --quick              # small sizes, a minute or two
    python bench/tree_mcts.py --scale 10000000     # also the 10M-step store
    python bench/tree_mcts.py --only scale --scale 10000000   # just the 10M-step store
    python bench/tree_mcts.py --only baseline      # just the in-memory builders vs the plain one
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import networkx as nx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.mcts import run_mcts_all  # noqa: E402
from core.pairs import eto_pairs, tree_pairs  # noqa: E402
from core.store import Store  # noqa: E402
from core.trajectory import Step, Trajectory  # noqa: E402
from core.tree import build_trees, build_trees_from_tables, normalize_action  # noqa: E402
from core.tree_data import Tree  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHASES = ("engine", "baseline", "release", "figure", "scale")
VERBS = ("search", "click", "open", "take", "go to", "look at", "use", "put", "move", "check", "read", "buy")


def synthetic(n: int, n_tasks: int, seed: int = 0, start: int = 0) -> list[Trajectory]:
    """Trajectories `start`..`start + n - 1` over `n_tasks` tasks; each step picks one of 3
    actions (0 = good, p 0.7)."""
    rng = random.Random(seed * 1_000_003 + start)
    out = []
    for i in range(start, start + n):
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
                              meta={"initial_observation": f"Welcome. Task {task}."}, traj_id=f"b{i:08d}"))
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


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Runs the CLI and reports its own peak memory at exit: VmHWM of /proc/self/status belongs to the
# process image (getrusage's maxrss would include the parent's pages copied at fork).
_CLI = ("import atexit, re, sys\n"
        "def peak():\n"
        "    hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())\n"
        "    print('PEAK_KB', hwm.group(1) if hwm else 0, file=sys.stderr)\n"
        "atexit.register(peak)\n"
        "from core.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")


def run_cli(db: Path, *args: str) -> tuple[float, float, float]:
    """`w2stree ARGS` as a process on store `db`: (wall s, CPU s, peak RSS MB) of that process."""
    env = {**os.environ, "W2STREE_DB": str(db), "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _CLI, *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    out, err = proc.stdout.read(), proc.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise SystemExit(f"w2stree {' '.join(args)} failed ({code}): {err or out}")
    peak = [int(line.split()[1]) for line in err.splitlines() if line.startswith("PEAK_KB")]
    return wall, usage.ru_utime + usage.ru_stime, (peak[-1] if peak else 0) / 1024


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




# -- the released code, re-implemented plainly ----------------------------------------------------
class RNode:
    """A node of the released code's tree: children scanned by action, running statistics."""

    __slots__ = ("action", "children", "visits", "value_sum", "mcts_visits", "mcts_value")

    def __init__(self, action: str) -> None:
        self.action = action
        self.children: list[RNode] = []
        self.visits, self.value_sum, self.mcts_visits, self.mcts_value = 0, 0.0, 0, 0.0


def released(trajectories: list[Trajectory], iterations: int, c: float = 1.41) -> dict[str, RNode]:
    """Build every task's tree by inserting trajectories one at a time (children found by
    scanning for the normalized action), then run the plain MCTS on each (uct rules)."""
    roots: dict[str, RNode] = {}
    for t in trajectories:
        node = roots.setdefault(f"{t.env}/{t.task_id}", RNode(""))
        path = [node]
        for s in t.steps:
            key = normalize_action(s.action)
            for child in node.children:
                if child.action == key:
                    node = child
                    break
            else:
                child = RNode(key)
                node.children.append(child)
                node = child
            path.append(node)
        for n in path:
            n.visits += 1
            n.value_sum += t.reward
    for root in roots.values():
        for _ in range(iterations):
            node, path = root, []
            while node.children:
                total = sum(ch.mcts_visits for ch in node.children) + 1e-12
                node = max(node.children, key=lambda n, t=total: math.inf if n.mcts_visits == 0 else
                           n.mcts_value / n.mcts_visits + c * math.sqrt(math.log(t) / n.mcts_visits))
                path.append(node)
            value = node.value_sum / node.visits if node.visits else 0.0
            for n in path:
                n.mcts_visits += 1
                n.mcts_value += value
    return roots


def released_stats(root: RNode) -> list[tuple[int, float]]:
    """(mcts_visits, mcts_value_sum) of every node in preorder, children in insertion order."""
    out, stack = [], [root]
    while stack:
        n = stack.pop()
        out.append((n.mcts_visits, n.mcts_value))
        stack.extend(reversed(n.children))
    return out


def tree_preorder_stats(t: Tree) -> list[tuple[int, float]]:
    """The same for a Tree (children in ascending id = insertion order)."""
    kids = t.child_index()
    vis, val = t.mcts_visits.tolist(), t.mcts_value_sum.tolist()
    out, stack = [], [0]
    while stack:
        n = stack.pop()
        out.append((vis[n], val[n]))
        stack.extend(reversed(kids[n]))
    return out


# -- phases -----------------------------------------------------------------------------------------
Row = tuple[str, ...]


def row(phase: str, amount: float, unit: str, t: Timing, notes: str) -> Row:
    return (phase, f"{t.wall:.2f}", f"{t.cpu:.2f}", f"{amount / t.wall:,.0f} {unit}",
            f"{amount / max(t.cpu, 1e-9):,.0f} {unit}", notes)


def phase_compile() -> Row:
    tiny = build_trees(synthetic(3, 1))
    t = Timing(lambda: run_mcts_all(tiny, iterations=1))
    return ("compile (numba)", f"{t.wall:.2f}", f"{t.cpu:.2f}", "", "",
            "first MCTS call: cache load (or compile); not in any timing below")


def phase_release(args: argparse.Namespace, tmp: Path) -> list[Row]:
    n = args.cli_tasks * args.cli_per_task
    trajs = synthetic(n, args.cli_tasks, seed=1)
    n_steps = sum(len(t.steps) for t in trajs)
    db = tmp / "cli.duckdb"
    store = Store(db)
    for i in range(0, n, args.batch):
        store.import_trajectories(trajs[i:i + args.batch])
    print(f"release: {n:,} trajectories ({args.cli_tasks:,} tasks x {args.cli_per_task}), {n_steps:,} steps "
          "stored", flush=True)
    ref = Timing(lambda: released(trajs, args.iterations))
    tree = run_cli(db, "tree")
    mcts = run_cli(db, "mcts", "--iterations", str(args.iterations))
    # The processes' trees hold the released algorithm's statistics (a sample of trees).
    roots = ref.result
    for t in store.load_trees(tree_ids=[f"bench/task{k:05d}" for k in range(min(50, args.cli_tasks))]):
        assert tree_preorder_stats(t) == released_stats(roots[t.tree_id]), f"MCTS differs on {t.tree_id}"
    ref.result = None
    wall, cpu = tree[0] + mcts[0], tree[1] + mcts[1]
    proc = Timing(lambda: None)
    proc.wall, proc.cpu = wall, cpu
    return [
        row("released code (in-process)", n_steps, "steps/s", ref, f"build + {args.iterations} MCTS iterations, "
            f"{args.cli_tasks:,} trees"),
        row("`tree` + `mcts` processes", n_steps, "steps/s", proc,
            f"tree {tree[0]:.1f} s + mcts {mcts[0]:.1f} s wall (peak {max(tree[2], mcts[2]):,.0f} MB): "
            f"x{ref.wall / wall:.1f} wall, x{ref.cpu / cpu:.1f} CPU vs released; statistics equal"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trajectories", type=int, default=100_000)
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--iterations", type=int, default=1000, help="MCTS iterations per tree")
    ap.add_argument("--baseline-trajectories", type=int, default=20_000, help="trajectories the plain builder runs on")
    ap.add_argument("--baseline-trees", type=int, default=200, help="trees the plain MCTS runs on")
    ap.add_argument("--cli-tasks", type=int, default=2000)
    ap.add_argument("--cli-per-task", type=int, default=40)
    ap.add_argument("--batch", type=int, default=10_000, help="trajectories per import call")
    ap.add_argument("--figure-nodes", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scale", type=int, default=0, metavar="STEPS", help="also run a store of STEPS steps")
    ap.add_argument("--quick", action="store_true", help="small sizes (a quick check of the bench itself)")
    ap.add_argument("--only", metavar="PHASES",
                    help=f"comma-separated phases to run, of {','.join(PHASES)} (default all; compile always "
                    "runs; scale needs --scale)")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else set(PHASES)
    if only - set(PHASES):
        ap.error(f"unknown phase(s) {', '.join(sorted(only - set(PHASES)))}; use {','.join(PHASES)}")
    if args.only and "scale" in only and not args.scale:
        ap.error("the scale phase needs --scale STEPS")
    if args.quick:
        args.trajectories, args.tasks, args.cli_tasks, args.cli_per_task = 10_000, 200, 200, 40
        args.baseline_trajectories, args.baseline_trees, args.figure_nodes = 5_000, 50, 5000
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    rows = [phase_compile()]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "engine" in only:
            rows += phase_engine(args, tmp)  # first: the peak RSS it reports is its own
            gc.collect()
        if "baseline" in only:
            rows += phase_build_baseline(args, tmp)
            gc.collect()
        if "release" in only and args.cli_tasks:
            rows += phase_release(args, tmp)
        if "figure" in only:
            rows.append(phase_figure(args, tmp))
        if "scale" in only and args.scale:
            rows += phase_scale(args, tmp)
    print(f"\npeak RSS of this process {peak_mb():,.0f} MB; load average {os.getloadavg()[0]:.1f}. "
          "Ratios compare CPU seconds (wall stretches with the machine's load).\n")
    head = ("phase", "wall s", "CPU s", "per wall s", "per CPU s", "baseline and notes")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def phase_build_baseline(args: argparse.Namespace, tmp: Path) -> list[Row]:
    """(b) In-memory tree building against the plain builder on the first
    --baseline-trajectories trajectories (the plain side makes every node a Python object)."""
    sub = synthetic(args.baseline_trajectories, args.tasks)
    sub_steps = sum(len(t.steps) for t in sub)
    store = Store(tmp / "baseline.duckdb")
    store.import_trajectories(sub)
    heads, steps = store.tree_tables()  # the engine's own input: the store's Arrow columns
    fast = Timing(lambda: build_trees(sub), args.repeats)
    tab = Timing(lambda: build_trees_from_tables(heads, steps), args.repeats)
    ins = Timing(lambda: plain_insert(sub))
    conv = Timing(lambda: plain_graphs(ins.result))
    assert same_graphs([t.to_networkx() for t in fast.result], conv.result), "tree builders disagree"
    assert same_graphs([t.to_networkx() for t in tab.result], conv.result), "tree builders disagree"
    plain = Timing(lambda: None)
    plain.wall, plain.cpu = ins.wall + conv.wall, ins.cpu + conv.cpu
    return [
        row(f"tree: plain builder ({len(sub):,})", sub_steps, "steps/s", plain,
            f"{ins.cpu:.2f} CPU insert + {conv.cpu:.2f} DiGraphs"),
        row(f"tree: build_trees ({len(sub):,})", sub_steps, "steps/s", fast,
            f"from Trajectory objects: x{plain.cpu / fast.cpu:.1f} vs plain; DiGraphs identical"),
        row(f"tree: from_tables ({len(sub):,})", sub_steps, "steps/s", tab,
            f"from the store's Arrow columns: x{plain.cpu / tab.cpu:.1f} vs plain; DiGraphs identical"),
    ]


def phase_engine(args: argparse.Namespace, tmp: Path) -> list[Row]:
    """Import, build, MCTS (against the plain loop) and pairs of --trajectories trajectories."""
    rows = []
    start_mb = peak_mb()
    trajs = synthetic(args.trajectories, args.tasks)
    n_steps = sum(len(t.steps) for t in trajs)
    data_mb = peak_mb()
    print(f"engine: {len(trajs):,} trajectories, {n_steps:,} steps, {args.tasks:,} tasks; "
          f"peak RSS {data_mb:,.0f} MB", flush=True)
    store = Store(tmp / "bench.duckdb")
    imp = Timing(lambda: [store.add_trajectories(trajs[i:i + args.batch])
                          for i in range(0, len(trajs), args.batch)])
    rows.append(row("import (DuckDB)", n_steps, "steps/s", imp,
                    f"1M steps: {1e6 * imp.wall / n_steps:.1f} s wall, {1e6 * imp.cpu / n_steps:.1f} s CPU"))
    heads, steps = store.tree_tables()
    full = Timing(lambda: build_trees_from_tables(heads, steps), args.repeats)
    trees = full.result
    heads = steps = None  # free the columns (the trees keep what they need)
    n_nodes = sum(t.n_nodes for t in trees)
    rows.append(row(f"tree: from_tables (all {len(trajs):,})", n_steps, "steps/s", full,
                    f"{len(trees):,} trees, {n_nodes:,} nodes"))
    print(f"trees: {len(trees):,} trees, {n_nodes:,} nodes; peak RSS {peak_mb():,.0f} MB", flush=True)

    # (b) MCTS against the plain loop with identical statistics.
    sample = trees[:args.baseline_trees]
    pm = Timing(lambda: [(root, objs, plain_mcts(root, args.iterations, 1.41))
                         for root, objs in map(plain_mcts_tree, (t.to_networkx() for t in sample))])
    fs = Timing(lambda: run_mcts_all(sample, args.iterations), args.repeats)
    for t, (root, objs, _), best in zip(sample, pm.result, fs.result, strict=True):
        assert [(o.visit_count, o.total_reward) for _, o in sorted(objs.items())] == list(
            zip(t.mcts_visits.tolist(), t.mcts_value_sum.tolist())), f"MCTS statistics differ on {t.tree_id}"
        assert best == plain_best_path(root, objs), f"best paths differ on {t.tree_id}"
    pm.result = None
    every = Timing(lambda: run_mcts_all(trees, args.iterations), args.repeats)
    it_all, it_s = args.iterations * len(trees), args.iterations * len(sample)
    rows.append(row(f"mcts: plain loop ({len(sample)} trees)", it_s, "it/s", pm, "node objects"))
    rows.append(row(f"mcts: compiled ({len(sample)} trees)", it_s, "it/s", fs,
                    f"x{pm.cpu / fs.cpu:.1f} vs plain; statistics and best paths identical"))
    rows.append(row(f"mcts: compiled (all {len(trees):,})", it_all, "it/s", every,
                    f"{args.iterations} iterations per tree"))
    print(f"mcts done; peak RSS {peak_mb():,.0f} MB", flush=True)

    # Pairs are counted tree by tree (task by task for ETO), never all held at once.
    for gran in ("step", "continuation"):
        tp = Timing(lambda gran=gran: sum(len(tree_pairs(t, granularity=gran)) for t in trees), args.repeats)
        rows.append(row(f"pairs ({gran})", tp.result, "pairs/s", tp, f"{tp.result:,} pairs"))
    per_task = [trajs[k::args.tasks] for k in range(args.tasks)]  # synthetic(): task = index mod tasks
    te = Timing(lambda: sum(len(eto_pairs(ts, mode="weak", max_pairs_per_task=50)) for ts in per_task),
                args.repeats)
    rows.append(row("pairs (ETO)", te.result, "pairs/s", te, f"{te.result:,} pairs, at most 50 per task"))
    rows.append(("peak memory", "", "", "", "", f"{peak_mb():,.0f} MB RSS for the {len(trajs):,}-trajectory run "
                 f"({data_mb - start_mb:,.0f} MB of it the Trajectory objects themselves)"))
    return rows


def phase_figure(args: argparse.Namespace, tmp: Path) -> Row:
    """(e) The Trees page figure of a stored tree of --figure-nodes nodes, from the store."""
    from bench.dashboard import synthetic_tree
    from dashboard.figures import tree_figure
    from dashboard.layout import default_caps, layout_tree

    store = Store(tmp / "figure.duckdb")
    store.save_trees([Tree.from_networkx(synthetic_tree(args.figure_nodes))])

    def page() -> int:
        g = store.load_tree("bench/t").to_networkx()
        depth, children = default_caps(g.number_of_nodes())
        keep = g.graph["best_path"][-1:]
        view = layout_tree(g, depth, children, keep)
        return len(tree_figure(g, view, "data", selected=keep[0] if keep else None).to_json()) and g.number_of_nodes()

    t = Timing(page, max(args.repeats, 5))
    return ("figure (Trees page)", f"{t.wall:.2f}", f"{t.cpu:.2f}", "", "",
            f"stored {t.result:,}-node tree: load + DiGraph + layout + figure + JSON (target < 1 s)")


def phase_scale(args: argparse.Namespace, tmp: Path) -> list[Row]:
    """(d) A synthetic store of --scale steps through import, tree, mcts and pairs."""
    db = tmp / "scale.duckdb"
    store = Store(db)
    n_trajs = args.scale // 10
    tasks = max(1, n_trajs // 40)
    t0, c0 = time.perf_counter(), time.process_time()
    done = 0
    while done < n_trajs:  # generated and imported in batches: never all in memory
        batch = synthetic(min(args.batch, n_trajs - done), tasks, seed=2, start=done)
        store.add_trajectories(batch)
        done += len(batch)
    imp = Timing(lambda: None)
    imp.wall, imp.cpu = time.perf_counter() - t0, time.process_time() - c0
    n_steps = int(store.counts()["steps"])
    rows = [row("scale: generate + import", n_steps, "steps/s", imp,
                f"{n_trajs:,} trajectories, {tasks:,} tasks; this process peak {peak_mb():,.0f} MB")]
    for name, cmd in (("tree", ["tree"]), ("mcts", ["mcts", "--iterations", str(args.iterations)]),
                      ("pairs", ["pairs"])):
        wall, cpu, mb = run_cli(db, *cmd)
        t = Timing(lambda: None)
        t.wall, t.cpu = wall, cpu
        rows.append(row(f"scale: `{name}` process", n_steps, "steps/s", t, f"peak {mb:,.0f} MB"))
        print(f"scale {name}: {wall:.1f} s, peak {mb:,.0f} MB", flush=True)
    return rows


if __name__ == "__main__":
    main()
