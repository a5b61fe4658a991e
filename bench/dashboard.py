"""Server-side cost of the Trees page figure for big trees (issue 5: target < 1 s at 5k nodes).

Builds synthetic trajectory trees of about 1,000 and 5,000 nodes (random episodes over a small
action vocabulary merged into a prefix tree, with data and MCTS statistics), then times, as
medians over a few repeats:

  * layout      caps + Reingold-Tilford layout (dashboard.layout.layout_tree)
  * figure      building the Plotly node-link figure (dashboard.figures.tree_figure)
  * json        serializing it (what st.plotly_chart sends to the browser)
  * rerun       a rerun served from the cache: unpickle the cached figure dict, wrap it without
                re-validation (dashboard.data.tree_picture), serialize
  * icicle      the icicle overview of the whole tree, figure + JSON

both with the default caps the page applies and uncapped (every node drawn), and prints the
ratio capped / uncapped.

    python bench/dashboard.py [--sizes 1000 5000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import pickle
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import networkx as nx
import plotly.graph_objects as go

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboard.figures import icicle_figure, tree_figure  # noqa: E402
from dashboard.layout import default_caps, layout_tree  # noqa: E402


def synthetic_tree(n_nodes: int, seed: int = 0, vocab: int = 6, max_len: int = 14) -> nx.DiGraph:
    """A prefix tree of random episodes (each step picks one of `vocab` actions, skewed towards
    the first), grown until it has at least `n_nodes` nodes; statistics as the engine sets them."""
    rng = random.Random(seed)
    g = nx.DiGraph(tree_id="bench/t", env="bench", task_id="t", best_path=[])
    g.add_node(0, depth=0, action="", thoughts=[], observations=[], visits=0, value_sum=0.0,
               successes=0, failures=0, terminal_rewards=[], mcts_visits=0, mcts_value_sum=0.0)
    index: dict[tuple[int, str], int] = {}
    while g.number_of_nodes() < n_nodes:
        length = rng.randint(3, max_len)
        reward = 1.0 if rng.random() < 0.3 else round(rng.random() * 0.8, 2)
        node, path = 0, [0]
        for d in range(1, length + 1):
            action = f"click[item {min(int(rng.expovariate(0.7)), vocab - 1)}] <b>&"
            key = (node, action)
            if key not in index:
                child = g.number_of_nodes()
                index[key] = child
                g.add_node(child, depth=d, action=action, thoughts=[f"thought {child}"],
                           observations=[f"observation {child}"], visits=0, value_sum=0.0,
                           successes=0, failures=0, terminal_rewards=[], mcts_visits=0,
                           mcts_value_sum=0.0)
                g.add_edge(node, child)
            node = index[key]
            path.append(node)
        for n in path:
            a = g.nodes[n]
            a["visits"] += 1
            a["value_sum"] += reward
            a["successes" if reward >= 1 else "failures"] += 1
            a["mcts_visits"] += rng.randint(0, 3)
            a["mcts_value_sum"] += reward * a["mcts_visits"] / max(a["visits"], 1)
        g.nodes[node]["terminal_rewards"].append(reward)
    # A best path: greedily the child with the highest mean.
    node, best = 0, []
    while g.out_degree(node):
        node = max(g.successors(node), key=lambda c: g.nodes[c]["value_sum"] / g.nodes[c]["visits"])
        best.append(node)
    g.graph["best_path"] = best
    return g


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(g: nx.DiGraph, caps: tuple[int | None, int | None], repeats: int) -> dict[str, float]:
    depth, children = caps
    keep = g.graph["best_path"][-1:]
    view = layout_tree(g, depth, children, keep)
    fig = tree_figure(g, view, "data", selected=keep[0] if keep else None)
    cached = pickle.dumps(fig.to_dict())
    return {
        "drawn": len(view.nodes),
        "layout": median_time(lambda: layout_tree(g, depth, children, keep), repeats),
        "figure": median_time(lambda: tree_figure(g, view, "data"), repeats),
        "json": median_time(fig.to_json, repeats),
        "rerun": median_time(lambda: go.Figure(pickle.loads(cached), _validate=False).to_json(), repeats),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"{'nodes':>6} {'caps':>10} {'drawn':>6} {'layout':>8} {'figure':>8} {'json':>8} {'total':>8} "
          f"{'rerun':>8}   (seconds, medians)")
    for size in args.sizes:
        g = synthetic_tree(size)
        totals = {}
        for label, caps in (("default", default_caps(g.number_of_nodes())), ("none", (None, None))):
            m = measure(g, caps, args.repeats)
            totals[label] = m["layout"] + m["figure"] + m["json"]
            cap_s = f"{caps[0]}/{caps[1]}" if caps[0] else "none"
            print(f"{g.number_of_nodes():>6} {cap_s:>10} {m['drawn']:>6} {m['layout']:8.3f} "
                  f"{m['figure']:8.3f} {m['json']:8.3f} {totals[label]:8.3f} {m['rerun']:8.3f}")
        ic = median_time(lambda g=g: icicle_figure(g, "data", 6).to_json(), args.repeats)
        print(f"{g.number_of_nodes():>6} icicle (figure+json) {ic:.3f} s; "
              f"capped/uncapped tree ratio {totals['default'] / totals['none']:.2f}")


if __name__ == "__main__":
    main()
