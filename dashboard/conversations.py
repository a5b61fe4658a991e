"""Pairs and episodes as conversations, for the Pairs and Compare pages: a stored pair's shared
prefix, both sides and where they part; evaluation episodes step by step side by side. Plain
functions, no Streamlit; the pages show every text as text (it is untrusted).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from core import methods
from core.console import plural
from core.pairs import GRANULARITIES
from core.trajectory import Trajectory
from core.tree import normalize_action


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
