"""Data shaping for the Trees and Overview pages: plain functions from store frames and trees to
what a page shows (a node's statistics and details, the task picker, the exploration's health).
No Streamlit here; every function is unit-tested on hand-made inputs. The other pages shape in
`dashboard.conversations` (pairs, compared episodes), `dashboard.result_tables` (results) and
`dashboard.train_shaping` (the Train page).

Text that comes from trajectories (actions, thoughts, observations, instructions) is untrusted:
`escape` makes it safe for Plotly labels, which interpret a few HTML tags.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import networkx as nx
import pandas as pd

from core.console import plural
from core.tree import path_to

_SPACE = re.compile(r"\s+")


def escape(text: Any, limit: int | None = None) -> str:
    """`text` as a string safe inside Plotly hover labels and node labels: shortened to `limit`
    characters (with an ellipsis), newlines flattened, then `&`, `<`, `>` and quotes escaped."""
    s = _SPACE.sub(" ", "" if text is None else str(text)).strip()
    if limit is not None and len(s) > limit:
        s = s[: max(limit - 1, 0)] + "…"
    return html.escape(s, quote=True)


# -- node statistics --------------------------------------------------------------------------
def fmt(x: float | None, digits: int = 2) -> str:
    """A statistic for display: fixed digits, or a dash when it is missing (None / NaN)."""
    return "–" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def mean(total: float, count: int) -> float:
    """total / count, or NaN when nothing was counted."""
    return total / count if count else math.nan


#: The Trees page's colourings: statistic kind -> its label ("true" only where the tree has oracle values).
STAT_KINDS = {"data": "Data (visits, mean reward)", "mcts": "MCTS (visits, Q)",
              "true": "True value (the expert from here)"}
VALUE_LABELS = {"data": "mean reward", "mcts": "MCTS Q", "true": "true value"}


def has_true_values(g: nx.DiGraph) -> bool:
    """Whether any node of the tree has a true value (`w2stree oracle`)."""
    return any(d.get("true_value") is not None for _, d in g.nodes(data=True))


def stat_kinds(g: nx.DiGraph) -> list[str]:
    """The colourings the Trees page offers for this tree (`true` only when it has oracle values)."""
    return [k for k in STAT_KINDS if k != "true" or has_true_values(g)]


def node_stats(g: nx.DiGraph, node: int, groups: Mapping[int, Sequence[int]] | None = None,
               kind: str = "data") -> tuple[int, float]:
    """(visits, mean value) of a node for the chosen statistics: `data` (trajectories through
    it, mean final reward), `mcts` (MCTS visits, Q) or `true` (trajectories through it, the
    true value by the env's expert; NaN where unknown). A group id (< 0) sums its members (its
    true value: the mean of its members' known ones)."""
    members = groups[node] if node < 0 and groups else [node]
    if kind == "true":
        known = [float(v) for m in members if (v := g.nodes[m].get("true_value")) is not None]
        visits = sum(int(g.nodes[m].get("visits", 0) or 0) for m in members)
        return visits, mean(sum(known), len(known))
    if kind == "mcts":
        visits = sum(int(g.nodes[m].get("mcts_visits", 0) or 0) for m in members)
        total = sum(float(g.nodes[m].get("mcts_value_sum", 0.0) or 0.0) for m in members)
    else:
        visits = sum(int(g.nodes[m].get("visits", 0) or 0) for m in members)
        total = sum(float(g.nodes[m].get("value_sum", 0.0) or 0.0) for m in members)
    return visits, mean(total, visits)


def leaf_outcome(g: nx.DiGraph, node: int) -> str | None:
    """"success" / "failure" for a node where trajectories end (a leaf of the tree, or an inner
    node some trajectory stopped at), by its best terminal reward; None elsewhere."""
    rewards = g.nodes[node].get("terminal_rewards") or []
    if not rewards and g.out_degree(node) == 0 and g.nodes[node].get("visits"):
        # A leaf without stored terminal rewards: its trajectories all ended here.
        return "success" if g.nodes[node].get("successes", 0) else "failure"
    if not rewards:
        return None
    return "success" if max(rewards) >= 1.0 else "failure"


def best_path_edges(g: nx.DiGraph) -> set[tuple[int, int]]:
    """The (parent, child) edges of the MCTS best path stored in g.graph["best_path"]
    (with or without the root at its head)."""
    path = [int(n) for n in g.graph.get("best_path") or []]
    if not path:
        return set()
    if path[0] != 0:
        path = [0, *path]
    return {(a, b) for a, b in zip(path, path[1:], strict=False) if g.has_edge(a, b)}


def best_path_ties(g: nx.DiGraph) -> tuple[int, int]:
    """(steps of the MCTS best path decided by a tie, steps of the best path). A step is a tie
    when another MCTS-visited sibling has the same Q: the best path then takes the earliest
    child (core.mcts), which is no preference. Q equal everywhere makes every step a tie."""
    path = [int(n) for n in g.graph.get("best_path") or []]
    if path and path[0] != 0:
        path = [0, *path]
    ties = 0
    for parent, child in zip(path, path[1:], strict=False):
        q = node_stats(g, child, kind="mcts")[1]
        ties += any(s != child and (other := node_stats(g, s, kind="mcts"))[0] > 0
                    and math.isclose(other[1], q, abs_tol=1e-9) for s in g.successors(parent))
    return ties, max(len(path) - 1, 0)


def tie_note(ties: int, steps: int) -> str | None:
    """The Trees page's sentence about ties on the best path, or None without any."""
    if not ties:
        return None
    if ties == steps:
        return ("MCTS Q is equal among the siblings at every step of the best path: the best path is a "
                "tie-break (the earliest child), not a preference.")
    return (f"{ties} of the best path's {plural(steps, 'step')} are a tie-break (siblings with equal MCTS Q; the "
            "earliest child is taken).")


def selected_node(selection: Mapping[str, Any] | None) -> int | None:
    """The node id a chart selection points at: a tree-figure marker carries it in `customdata`
    (negative for a folded group), an icicle cell as its `id`. None when nothing usable."""
    for point in ((selection or {}).get("selection") or {}).get("points") or []:
        cd = point.get("customdata")
        if isinstance(cd, list | tuple):
            cd = cd[0] if cd else None
        if cd is None:
            cd = point.get("id")
        try:
            return int(cd)
        except (TypeError, ValueError):
            continue
    return None


def node_options(g: nx.DiGraph, drawn: Sequence[int], selected: int, limit: int = 400) -> list[int]:
    """The node picker's choices: the drawn real nodes (the figure's caps already keep them to a
    few hundred), at most `limit` of them, always with the path to `selected`; sorted by id."""
    keep = set(path_to(g, selected)) if selected in g else {0}
    real = [n for n in drawn if n >= 0 and n not in keep]
    return sorted(keep | set(real[: max(limit - len(keep), 0)]))


def unique(texts: Sequence[str] | None) -> list[str]:
    """Distinct non-empty texts in first-seen order."""
    seen: dict[str, None] = {}
    for t in texts or []:
        if t and t not in seen:
            seen[t] = None
    return list(seen)


def node_details(g: nx.DiGraph, node: int) -> dict[str, Any]:
    """Everything the node panel shows (raw strings: the page renders them as text)."""
    d = g.nodes[node]
    visits, value = node_stats(g, node)
    mcts_visits, q = node_stats(g, node, kind="mcts")
    return {
        "node": node,
        "depth": int(d.get("depth", 0)),
        "action": d.get("action", "") or "",
        "thoughts": unique(d.get("thoughts")),
        "observations": unique(d.get("observations")),
        "visits": visits,
        "value": value,
        "successes": int(d.get("successes", 0) or 0),
        "failures": int(d.get("failures", 0) or 0),
        "terminal_rewards": list(d.get("terminal_rewards") or []),
        "mcts_visits": mcts_visits,
        "q": q,
        "true_value": d.get("true_value"),  # None: unknown (no oracle run, or the env has none)
        "true_steps": d.get("true_steps"),  # None: unknown, or the expert does not finish from here
        "children": g.out_degree(node),
        "path": [g.nodes[n].get("action", "") for n in path_to(g, node)[1:]],
        "on_best_path": node == 0 or any(node == b for _, b in best_path_edges(g)),
    }


# -- overview ---------------------------------------------------------------------------------
# Where a trajectory comes from (core.store_summaries.SOURCES); each has its own success rate
# (expert demonstrations nearly all succeed, evaluation measures trained models, each model its
# own: one mixed figure would say nothing).


def source_table(by_source: pd.DataFrame) -> pd.DataFrame:
    """Per env and source (evaluation per model, as Store.source_summary orders them): episodes,
    success rate, mean reward, mean episode length."""
    df = by_source.rename(columns={"success_rate": "success rate", "mean_reward": "mean reward",
                                   "mean_length": "mean length"})
    cols = ["env", "source", "model", "episodes", "success rate", "mean reward", "mean length"]
    return df.reindex(columns=cols).reset_index(drop=True)


def exploration_health(by_source: pd.DataFrame, outcomes: pd.DataFrame, env: str) -> dict[str, Any]:
    """Exploration health of one env: valid-action rate (over the episodes that recorded invalid
    actions; NaN when none did), mean episode length, explorer success rate, and trees holding
    both outcomes (with the number of trees)."""
    ex = by_source[(by_source["env"] == env) & (by_source["source"] == "exploration")]
    episodes, steps = float(ex["episodes"].sum()), float(ex["steps"].sum())
    checked = float(pd.to_numeric(ex["checked_steps"], errors="coerce").fillna(0).sum())
    invalid = float(pd.to_numeric(ex["invalid"], errors="coerce").fillna(0).sum())
    tr = outcomes[outcomes["env"] == env]
    return {
        "episodes": int(episodes),
        "valid_action_rate": 1 - invalid / checked if checked else math.nan,
        "mean_length": steps / episodes if episodes else math.nan,
        "success_rate": float(ex["successes"].sum()) / episodes if episodes else math.nan,
        "trees": int(tr["trees"].sum()),
        "both_outcomes": int(tr["both_outcomes"].sum()),
    }


def percent(x: float) -> str:
    """0.934 -> "93%"; a dash when missing."""
    return "–" if x is None or math.isnan(x) else f"{x:.0%}"


# -- task picker ------------------------------------------------------------------------------
#: The task picker's orders: name -> (columns, ascending each); ties always by task id. The
#: first is the default: trees holding a success and a failure (the ones that yield pairs, and
#: show both colours) first, the bigger first among them.
TASK_SORTS = {
    "both outcomes first": (["both_outcomes", "n_nodes"], [False, False]),
    "size": (["n_nodes"], [False]),
    "success rate": (["success_rate"], [False]),
    "branching": (["n_branching"], [False]),
    "task id": (["task_id"], [True]),
}


def task_table(trees: pd.DataFrame, roots: pd.DataFrame, sort: str = "both outcomes first",
               both_only: bool = False) -> pd.DataFrame:
    """One row per tree: env, task_id, tree_id, instruction, n_nodes, n_trajectories,
    n_branching, success_rate (successes / visits at the root), both_outcomes (a success and a
    failure), sorted by `sort` (a key of TASK_SORTS; ties by task id); with `both_only` only the
    trees with both outcomes."""
    cols = ["tree_id", "env", "task_id", "instruction", "n_nodes", "n_trajectories", "n_branching"]
    if trees.empty:
        return pd.DataFrame(columns=[*cols, "success_rate", "both_outcomes"])
    df = trees[cols].copy()
    rate = roots.set_index("tree_id").eval("successes / visits") if not roots.empty else pd.Series()
    df["success_rate"] = df["tree_id"].map(rate).astype(float)
    df["both_outcomes"] = (df["success_rate"] > 0) & (df["success_rate"] < 1)
    if both_only:
        df = df[df["both_outcomes"]]
    keys, ascending = TASK_SORTS[sort]
    if "task_id" not in keys:
        keys, ascending = [*keys, "task_id"], [*ascending, True]
    return df.sort_values(keys, ascending=ascending, na_position="last").reset_index(drop=True)


def task_label(row: Mapping[str, Any]) -> str:
    """The picker's line for a tree: task id, size, success rate, branching, instruction."""
    rate = row.get("success_rate")
    rate_s = "–" if rate is None or pd.isna(rate) else f"{rate:.0%}"
    instr = _SPACE.sub(" ", str(row.get("instruction") or ""))[:70]
    return (f"{row['task_id']} · {plural(row['n_nodes'], 'node')} · {rate_s} success · "
            f"{plural(row['n_branching'], 'branch')} · {instr}")


def root_mcts_note(g: nx.DiGraph, node: int) -> str | None:
    """Why the root shows no MCTS visits and no Q after a search, or None where that is not the
    case: the released rule (`uct`, as mcts_demo.py) backs up every node of a path but the root."""
    if node != 0 or not g.graph.get("mcts_iterations") or g.nodes[0].get("mcts_visits"):
        return None
    return ("The root has no MCTS visits and no Q by design: the released MCTS rule backs up every node "
            "of an iteration's path except the root, where every iteration starts. Its children's "
            "visits add up to the iterations; the best path starts here all the same.")
