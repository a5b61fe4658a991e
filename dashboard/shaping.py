"""Data shaping for the dashboard pages: plain functions from store frames and trees to what a
page shows. No Streamlit here; every function is unit-tested on hand-made inputs.

Text that comes from trajectories (actions, thoughts, observations, instructions) is untrusted:
`escape` makes it safe for Plotly labels, which interpret a few HTML tags.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import pandas as pd

from core import methods
from core.console import plural
from core.names import env_option
from core.pairs import GRANULARITIES
from core.results import has_training_data, own_numbers
from core.trajectory import Trajectory
from core.tree import normalize_action, path_to

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


# -- pairs ------------------------------------------------------------------------------------
def messages(value: Any) -> list[dict[str, str]]:
    """A stored conversation (JSON text or list) as a list of {role, content}."""
    if isinstance(value, str):
        value = json.loads(value) if value else []
    return [{"role": str(m.get("role", "")), "content": str(m.get("content", ""))} for m in value or []]


def first_difference(a: Sequence[Any], b: Sequence[Any]) -> int | None:
    """Index of the first position where two sequences differ (a shorter one differs where it
    ends); None when they are equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@dataclass
class PairView:
    """One pair ready to show: the shared prefix, both continuations, where they diverge."""

    prompt: list[dict[str, str]]
    chosen: list[dict[str, str]]
    rejected: list[dict[str, str]]
    diverge: int | None  # index in chosen/rejected of the first differing message
    chosen_value: float
    rejected_value: float
    chosen_success: bool
    rejected_success: bool


def pair_view(row: Mapping[str, Any]) -> PairView:
    """Shape a row of Store.pairs_frame for display."""
    chosen, rejected = messages(row["chosen"]), messages(row["rejected"])
    return PairView(
        prompt=messages(row["prompt"]), chosen=chosen, rejected=rejected,
        diverge=first_difference([m["content"] for m in chosen], [m["content"] for m in rejected]),
        chosen_value=float(row["chosen_value"]), rejected_value=float(row["rejected_value"]),
        chosen_success=bool(row["chosen_success"]), rejected_success=bool(row["rejected_success"]),
    )


def tree_pairs_first(pairs: pd.DataFrame) -> pd.DataFrame:
    """Pairs in the order the Pairs page offers them: TreeDPO pairs (cut at a tree node: step,
    then continuation) before the ETO baseline's whole-trajectory pairs, then by env, task, node."""
    rank = pairs["granularity"].map({g: i for i, g in enumerate(GRANULARITIES)}).fillna(len(GRANULARITIES))
    order = pairs.assign(_rank=rank).sort_values(["_rank", "env", "task_id", "node_id", "pair_id"], kind="stable")
    return order.drop(columns="_rank")


def pair_scope(node_id: int, n_prompt: int) -> str:
    """Where a pair's sides part, in the words of its shared prefix of `n_prompt` turns."""
    shared = plural(n_prompt, "turn")
    if node_id >= 0:
        return f"cut at node {node_id}: both sides continue the same {shared}"
    return f"whole trajectories: they share only the task's opening ({shared})"


def pair_label(row: Mapping[str, Any]) -> str:
    """A pair's line in the picker."""
    return (f"{row['task_id']} · node {int(row['node_id'])} · {row['granularity']} · "
            f"margin {float(row['margin']):.2f} · {row['pair_id']}")


# -- compare ----------------------------------------------------------------------------------
def first_divergence(action_lists: Sequence[Sequence[str]]) -> int | None:
    """First step index where the episodes' (normalized) actions are not all equal, counting an
    episode that has already ended as different; None when all are identical (or fewer than 2)."""
    if len(action_lists) < 2:
        return None
    norm = [[normalize_action(a) for a in acts] for acts in action_lists]
    longest = max(len(a) for a in norm)
    for i in range(longest):
        if len({a[i] if i < len(a) else None for a in norm}) > 1:
            return i
    return None


def compare_rows(episodes: Sequence[Trajectory]) -> list[list[dict[str, str] | None]]:
    """Step-aligned rows: row i holds, for each episode, its step i as {thought, action,
    observation, reward}, or None once that episode has ended."""
    longest = max((len(e.steps) for e in episodes), default=0)
    rows = []
    for i in range(longest):
        row: list[dict[str, str] | None] = []
        for e in episodes:
            if i < len(e.steps):
                s = e.steps[i]
                row.append({"thought": s.thought, "action": s.action,
                            "observation": s.observation, "reward": f"{s.reward:.2f}"})
            else:
                row.append(None)
        rows.append(row)
    return rows


def default_compare_models(available: Sequence[str], results: pd.DataFrame) -> list[str]:
    """Up to four models to compare by default: the methods of the paper's Figure 5 (SFT-weak,
    SFT-strong, TreeDPO and MCTS, `core.methods.figure_methods`), found as the results table's model
    of that method, or an evaluated model named by its label (the pipeline stores eval episodes
    under labels such as `sft-weak` or `treedpo-s1`); else the first four."""
    by_method: dict[str, str] = {}
    if not results.empty and {"method", "model"} <= set(results.columns):
        latest = results.sort_values("created_at") if "created_at" in results else results
        by_method = {found.label: mod for m, mod in zip(latest["method"], latest["model"], strict=True)
                     if (found := methods.find(str(m))) is not None}
    picked: list[str] = []
    for key in (m.label for m in methods.figure_methods()):
        named = [m for m in available if m == key or m.startswith(key + "-s")]
        for cand in (by_method.get(key), *named):
            if cand in available and cand not in picked:
                picked.append(cand)
                break
    return picked or list(available[:4])


# -- results ----------------------------------------------------------------------------------
def latest_experiment(results: pd.DataFrame) -> str | None:
    """The experiment id of the most recent results row."""
    if results.empty:
        return None
    return str(results.sort_values("created_at")["experiment_id"].iloc[-1])


def untrained_methods(results: pd.DataFrame) -> list[str]:
    """Methods (first-appearance order) none of whose rows had training data."""
    if results.empty:
        return []
    trained = has_training_data(results).groupby(results["method"], sort=False).any()
    return trained[~trained].index.tolist()


def no_data_reasons(untrained: Sequence[str]) -> str:
    """What the untrained methods were missing, where the method table says it (core.methods):
    "no tree pairs, no best paths"; "" for methods it does not know."""
    found = (methods.find(m) for m in untrained)
    return ", ".join(dict.fromkeys(m.no_data for m in found if m is not None and m.no_data))


def largest_k_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of the largest trajectories-per-task setting of each method and env, with the
    numbers of a method without training data there set to NaN."""
    df = results.copy()
    df["trajs_per_task"] = df["trajs_per_task"].fillna(-1)
    top = df.groupby(["method", "env"])["trajs_per_task"].transform("max")
    return own_numbers(df[df["trajs_per_task"] == top])


def method_wide(rows: pd.DataFrame, agg: pd.DataFrame) -> pd.DataFrame:
    """Per-(method, env) values `agg` (columns avg_reward, success_rate) as the method table:
    methods in the first-appearance order of `rows`, columns `<env> reward`, `<env> success`."""
    wide = agg.unstack("env")
    wide.columns = [f"{env} {'reward' if col == 'avg_reward' else 'success'}" for col, env in wide.columns]
    order = list(dict.fromkeys(rows["method"]))
    envs = list(dict.fromkeys(rows["env"]))
    cols = [f"{e} {k}" for e in envs for k in ("reward", "success")]
    return wide.reindex(index=order, columns=cols)


def score_curves(steps: pd.DataFrame) -> pd.DataFrame:
    """Mean score per time step and model (the paper's Figure 3). `steps` has columns
    model, traj_id, idx, score; an episode that ended keeps its last score for later steps.
    Returns columns model, step (1-based), score."""
    if steps.empty:
        return pd.DataFrame(columns=["model", "step", "score"])
    s = steps.dropna(subset=["score"])
    if s.empty:
        return pd.DataFrame(columns=["model", "step", "score"])
    wide = s.pivot_table(index="traj_id", columns="idx", values="score", aggfunc="last")
    wide = wide.reindex(columns=range(int(s["idx"].max()) + 1)).ffill(axis=1)
    model = s.drop_duplicates("traj_id").set_index("traj_id")["model"]
    wide["model"] = model.reindex(wide.index)
    long = wide.groupby("model").mean().stack().rename("score").reset_index()
    long.columns = ["model", "step", "score"]
    long["step"] = long["step"].astype(int) + 1
    return long


# -- training ---------------------------------------------------------------------------------
def data_spec(source: str, env: str, arg: str = "", tasks: int = 0, min_margin: float = 0.0) -> str:
    """A training data SPEC (core.train.data grammar) from the form's choices: `pairs` takes the
    granularity as `arg`, `successes` the model; options tasks=N and min_margin=X when set."""
    head = f"{source}:{env}" + (f":{arg}" if source in ("pairs", "successes") else "")
    opts = []
    if tasks:
        opts.append(f"tasks={int(tasks)}")
    if source == "pairs" and min_margin:
        opts.append(f"min_margin={min_margin:g}")
    # options after the env's own parameters (`shop?n_products=200`) join them with "&"
    return head + (("&" if "?" in head else "?") + "&".join(opts) if opts else "")


EMPTY_DATA = {
    "expert": "no expert demonstrations of {env} are stored (`w2stree collect {env_option} --policy expert`)",
    "successes": "{arg} has no successful trajectory in {env}",
    "best-paths": "no tree of {env} has an MCTS best path (`w2stree mcts`)",
    "pairs": "no {arg} pairs of {env} are stored",
}


def empty_data_reason(source: str, env: str, arg: str, count: int, why: str = "") -> str | None:
    """Why the Train page's Start is disabled when the chosen data holds no example (one
    sentence naming the data and, when known, why it is empty); None when there is data."""
    if count:
        return None

    what = EMPTY_DATA.get(source, "the data holds no example").format(env=env, arg=arg, env_option=env_option(env))
    return f"Start is disabled: the chosen data is empty (0 examples): {what}" + (f"; {why}" if why else "") + "."


def duration(seconds: float | None) -> str:
    """1h 02m / 3m 05s / 12s; a dash when unknown."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def progress_text(status: Mapping[str, Any]) -> str:
    """The progress bar's line: status, step / max steps, ETA."""
    step, top = int(status.get("step") or 0), status.get("max_steps")
    text = f"{status.get('status', '?')} · step {step}" + (f" / {int(top)}" if top else "")
    if status.get("status") == "running":
        text += f" · ETA {duration(status.get('eta_s'))}"
    return text


def gpu_memory(nvidia_smi_csv: str) -> list[tuple[int, int]]:
    """(used MiB, total MiB) per GPU from
    `nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader,nounits`."""
    out = []
    for line in nvidia_smi_csv.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            out.append((int(parts[0]), int(parts[1])))
    return out


LOSS_METRICS = ["loss", "eval_loss"]


def dpo_metric_names(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(reward curves, accuracy curves) among logged metric names: rewards/chosen, rejected,
    margins on one chart; rewards/accuracies (in [0, 1]) on another."""
    rewards = [n for n in names if n.startswith("rewards/") and "accurac" not in n]
    acc = [n for n in names if n.startswith("rewards/") and "accurac" in n]
    return sorted(rewards), sorted(acc)
