"""TreeDPO preference pairs cut at a tree's branching nodes, and the ETO-style baseline.

At every node with two or more children, each pair of its children is compared:

* default (``min_margin=None``): a pair when exactly one of the two subtrees holds a successful
  trajectory (``successes > 0``); the successful side is chosen. Its value may still be lower
  (a subtree with one success among many failures against one with high partial rewards).
* ``min_margin=X``: a pair when the children's values differ by at least X (and are not equal);
  the higher value is chosen.

Values are the children's data means (``value="data"``: mean final reward of the trajectories
through the child) or MCTS Q (``value="mcts"``: ``mcts_value_sum / mcts_visits``; run MCTS first).

The prompt is the task message (instruction + initial observation) followed by the assistant /
observation turns of the path down to the branching node; each node contributes its first-seen
thought and observation. ``step`` granularity: chosen and rejected are the child's single
assistant turn. ``continuation``: the rest of a path, multi-turn (observation user turns between
assistant turns, none after the last): the chosen side follows the highest-value child at each
level down to a leaf, the rejected side the lowest (ties to the earliest child).

``eto_pairs`` is the ablation baseline: a whole successful trajectory against a whole failed one
of the same task, with no shared prefix (prompt = the task message only).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import TYPE_CHECKING

import networkx as nx

from core.agents.prompt import Message, format_assistant, step_messages, task_message
from core.errors import UserError
from core.trajectory import Pair, Step, Trajectory
from core.tree import children, node_value, path_to

if TYPE_CHECKING:
    from core.store import Store

GRANULARITIES = ("step", "continuation")
VALUE_KINDS = ("data", "mcts")


def tree_pairs(g: nx.DiGraph, granularity: str = "step", value: str = "data",
               min_margin: float | None = None) -> list[Pair]:
    """The preference pairs of one tree, by branching node (ascending id), then child pairs in
    insertion order."""
    if granularity not in GRANULARITIES:
        raise UserError(f"unknown pair granularity {granularity!r}; use step or continuation")
    if value not in VALUE_KINDS:
        raise UserError(f"unknown pair value {value!r}; use data or mcts")
    if min_margin is not None and not min_margin >= 0:
        raise UserError(f"--min-margin must be >= 0, got {min_margin!r}")
    if value == "mcts" and g.number_of_nodes() > 1 and not any(
            d.get("mcts_visits") for _, d in g.nodes(data=True)):
        raise UserError(f"tree {g.graph.get('tree_id')} has no MCTS statistics; run `w2stree mcts` "
                        "first or use --value data")
    nodes = g.nodes
    task = [{"role": "user", "content": task_message(g.graph.get("instruction", ""),
                                                      g.graph.get("initial_observation", ""))}]
    pairs: list[Pair] = []
    for b in sorted(n for n, kids in g.succ.items() if len(kids) > 1):
        kids = children(g, b)
        val = {k: node_value(g, k, value) for k in kids}
        ok = {k: nodes[k]["successes"] > 0 for k in kids}
        cut = []
        for i, j in combinations(kids, 2):
            if min_margin is None:
                if ok[i] != ok[j]:
                    cut.append((i, j) if ok[i] else (j, i))
            elif val[i] != val[j] and abs(val[i] - val[j]) >= min_margin:
                cut.append((i, j) if val[i] > val[j] else (j, i))
        if not cut:
            continue
        prompt = task + step_messages([_step(g, n) for n in path_to(g, b)[1:]])
        for win, lose in cut:
            pairs.append(Pair(
                env=g.graph["env"], task_id=g.graph["task_id"], prompt=list(prompt),
                chosen=_completion(g, win, granularity, value, best=True),
                rejected=_completion(g, lose, granularity, value, best=False),
                chosen_value=val[win], rejected_value=val[lose], granularity=granularity,
                value_kind=value, tree_id=g.graph["tree_id"], node_id=int(b), chosen_node=int(win),
                rejected_node=int(lose), chosen_success=ok[win], rejected_success=ok[lose],
            ))
    return pairs


def eto_pairs(trajectories: Sequence[Trajectory], max_pairs_per_task: int | None = None) -> list[Pair]:
    """ETO-style pairs: every (successful, failed) trajectory pair of a task, whole trajectories.

    Pairs are listed round-robin (success i with failure i, i+1, ...), so a cap keeps pairs with
    distinct failures first.
    """
    if max_pairs_per_task is not None and max_pairs_per_task < 0:
        raise UserError(f"max_pairs_per_task must be >= 0, got {max_pairs_per_task}")
    groups: dict[tuple[str, str], list[Trajectory]] = {}
    for t in trajectories:
        groups.setdefault((t.env, t.task_id), []).append(t)
    pairs: list[Pair] = []
    for (env, task_id), trajs in groups.items():
        wins = [t for t in trajs if t.success]
        losses = [t for t in trajs if not t.success]
        cap = len(wins) * len(losses) if max_pairs_per_task is None else max_pairs_per_task
        order = [(w, losses[(i + off) % len(losses)]) for off in range(len(losses))
                 for i, w in enumerate(wins)][:cap]
        for w, lose in order:
            pairs.append(Pair(
                env=env, task_id=task_id,
                prompt=[{"role": "user", "content": task_message(
                    w.instruction, str((w.meta or {}).get("initial_observation", "")))}],
                chosen=step_messages(w.steps, final_observation=False),
                rejected=step_messages(lose.steps, final_observation=False),
                chosen_value=float(w.reward), rejected_value=float(lose.reward),
                granularity="trajectory", value_kind="reward", tree_id="",
                chosen_success=True, rejected_success=False,
            ))
    return pairs


def pair_blocker(store: Store, env: str | None = None, task_id: str | None = None) -> str | None:
    """What keeps the stored trees (of `env` / `task_id`) from yielding any pair, as a phrase;
    None when some tree holds both a success and a failure (pairs may exist there).

    A pair needs a task explored with both outcomes: expert demonstrations alone all succeed."""
    cond = " AND ".join(c for c, v in (("t.env = ?", env), ("t.task_id = ?", task_id)) if v) or "TRUE"
    params = [v for v in (env, task_id) if v]
    roots = store.query(f"SELECT n.visits, n.successes FROM trees t JOIN nodes n USING (tree_id) "
                        f"WHERE n.node_id = 0 AND {cond}", params)
    if roots.empty:
        return "there are no trees; run `w2stree tree` first"
    trees = f"{len(roots)} tree{'s' if len(roots) != 1 else ''}"
    if ((roots["successes"] > 0) & (roots["successes"] < roots["visits"])).any():
        return None
    if (roots["successes"] >= roots["visits"]).all():
        models = set(store.query(f"SELECT DISTINCT model FROM trajectories t WHERE source <> 'eval' "
                                 f"AND {cond}", params)["model"])
        if models and models <= {"expert"}:
            return (f"the {trees} hold only expert demonstrations, which all succeed; a pair needs a failed "
                    "continuation beside a successful one: explore the tasks first (`w2stree collect`)")
        return (f"every trajectory in the {trees} succeeds; a pair needs a failed continuation beside a "
                "successful one: explore the tasks with a weaker or hotter model (`w2stree collect`)")
    if (roots["successes"] == 0).all():
        return f"no trajectory in the {trees} succeeds; a pair needs a successful continuation to prefer"
    return f"no task has both a success and a failure in the {trees}; a pair needs both in one tree"


def no_pair_reason(store: Store, env: str | None = None, task_id: str | None = None,
                   min_margin: float | None = None) -> str:
    """Why pair cutting found nothing, as a phrase (for `w2stree pairs` and `export pairs`)."""
    blocker = pair_blocker(store, env, task_id)
    if blocker:
        return blocker
    if min_margin:
        return f"no branching node has children whose values differ by at least {min_margin:g}"
    return ("no branching node has one child leading to a success and another without: the successes "
            "and failures part only where a trajectory stops")


def _step(g: nx.DiGraph, n: int) -> Step:
    """A node as a step: its action with the first thought and observation seen there."""
    d = g.nodes[n]
    return Step(action=d["action"], thought=d["thoughts"][0] if d["thoughts"] else "",
                observation=d["observations"][0] if d["observations"] else "")


def _completion(g: nx.DiGraph, child: int, granularity: str, value: str, best: bool) -> list[Message]:
    if granularity == "step":
        s = _step(g, child)
        return [{"role": "assistant", "content": format_assistant(s.thought, s.action)}]
    path = [child]
    pick = max if best else min  # both keep the first of equal values: ties to the earliest child
    while kids := children(g, path[-1]):
        path.append(pick(kids, key=lambda k: node_value(g, k, value)))
    return step_messages([_step(g, n) for n in path], final_observation=False)
