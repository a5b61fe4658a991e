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
assistant turn. ``continuation``: the rest of a real trajectory below each child, multi-turn
(observation user turns between assistant turns, none after the last): for the chosen side the
trajectory through the winning child with the highest final reward, for the rejected side the one
through the losing child with the lowest (ties to the earliest inserted), so the chosen side is a
path that really reached the winning child's best outcome.

A pair whose chosen and rejected sides read the same (possible when ``--merge observation`` or
``semantic`` keeps two children with one action and thought) teaches nothing and is never emitted.

``eto_pairs`` is the ablation baseline, whole trajectories of one task with no shared prefix
(prompt = the task message only):

* ``mode="expert"`` (default), as the release builds it (ETO's ``construct_preference.py``): the
  task's expert trajectory against every explored trajectory of the same task with another final
  reward. The higher reward is chosen: explored below the expert gives (expert, explored) with the
  explored side cut at the expert's length + 5 assistant turns (the release keeps
  ``len(golden) + 5*2`` conversation turns); explored above it gives (explored, expert), neither
  side cut; equal rewards are dropped;
* ``mode="weak"``: a successful against a failed explored trajectory (no expert needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import TYPE_CHECKING

from core.agents.prompt import Message, format_assistant, step_messages, task_message
from core.errors import UserError
from core.trajectory import Pair, Step, Trajectory
from core.tree_data import Tree

if TYPE_CHECKING:
    from core.store import Store

TREE_GRANULARITIES = ("step", "continuation")  # cut from a tree
GRANULARITIES = (*TREE_GRANULARITIES, "trajectory")  # every stored pair's (trajectory: ETO baseline)
VALUE_KINDS = ("data", "mcts")
ETO_MODES = ("expert", "weak")
#: The release cuts a rejected explored trajectory at the expert's length plus this many turns.
ETO_EXTRA_TURNS = 5


def tree_pairs(g: Tree, granularity: str = "step", value: str = "data",
               min_margin: float | None = None) -> list[Pair]:
    """The preference pairs of one tree, by branching node (ascending id), then child pairs in
    insertion order."""
    if granularity not in TREE_GRANULARITIES:
        raise UserError(f"unknown tree pair granularity {granularity!r}; use {' or '.join(TREE_GRANULARITIES)}")
    if value not in VALUE_KINDS:
        raise UserError(f"unknown pair value {value!r}; use {' or '.join(VALUE_KINDS)}")
    if min_margin is not None and not min_margin >= 0:
        raise UserError(f"--min-margin must be >= 0, got {min_margin!r}")
    if value == "mcts" and g.n_nodes > 1 and not g.mcts_visits.any():
        raise UserError(f"tree {g.tree_id} has no MCTS statistics; run `w2stree mcts` "
                        "first or use --value data")
    task = [{"role": "user", "content": task_message(g.instruction, g.initial_observation)}]
    pairs: list[Pair] = []
    ends = None  # g.trajectory_ends(), computed on the first continuation pair
    branching = g.branching().tolist()
    if not branching:
        return pairs
    kid_index = g.child_index()
    successes = g.successes.tolist()
    for b in branching:
        kids = kid_index[b]
        val = {k: g.node_value(k, value) for k in kids}
        ok = {k: successes[k] > 0 for k in kids}
        cut = []
        for i, j in combinations(kids, 2):
            if min_margin is None:
                if ok[i] != ok[j]:
                    cut.append((i, j) if ok[i] else (j, i))
            elif val[i] != val[j] and abs(val[i] - val[j]) >= min_margin:
                cut.append((i, j) if val[i] > val[j] else (j, i))
        if not cut:
            continue
        prompt = task + step_messages([_step(g, n) for n in g.path_to(b)[1:]])
        if granularity == "continuation" and ends is None:
            ends = g.trajectory_ends()
        for win, lose in cut:
            chosen, rejected = _completion(g, win, ends), _completion(g, lose, ends, worst=True)
            if chosen == rejected:
                continue
            pairs.append(Pair(
                env=g.env, task_id=g.task_id, prompt=list(prompt),
                chosen=chosen, rejected=rejected, chosen_value=val[win], rejected_value=val[lose],
                granularity=granularity, value_kind=value, tree_id=g.tree_id, node_id=int(b), chosen_node=int(win),
                rejected_node=int(lose), chosen_success=ok[win], rejected_success=ok[lose],
            ))
    return pairs


def eto_pairs(explored: Sequence[Trajectory], experts: Sequence[Trajectory] | None = None,
              mode: str = "expert", max_pairs_per_task: int | None = None) -> list[Pair]:
    """ETO-style whole-trajectory pairs per task (see the module docstring for the two modes).

    `experts` (mode `expert`, required there): the expert trajectories; a task's first one is its
    expert, tasks without one give no pairs. Pairs are listed per task in the order of the
    explored trajectories; `mode="weak"` lists them round-robin (success i with failure i, i+1,
    ...), so a cap (`max_pairs_per_task`) keeps pairs with distinct failures first.
    """
    if mode not in ETO_MODES:
        raise UserError(f"unknown ETO baseline {mode!r}; use {' or '.join(ETO_MODES)}")
    if mode == "expert" and experts is None:
        raise UserError("the ETO baseline `expert` compares each task's expert trajectory with explored "
                        "ones: pass the expert trajectories, or use the `weak` baseline")
    if max_pairs_per_task is not None and max_pairs_per_task < 0:
        raise UserError(f"max_pairs_per_task must be >= 0, got {max_pairs_per_task}")
    groups: dict[tuple[str, str], list[Trajectory]] = {}
    for t in explored:
        groups.setdefault((t.env, t.task_id), []).append(t)
    expert_of: dict[tuple[str, str], Trajectory] = {}
    for t in experts or ():
        expert_of.setdefault((t.env, t.task_id), t)
    pairs: list[Pair] = []
    for key, trajs in groups.items():
        if mode == "expert":
            if key not in expert_of:
                continue
            best = expert_of[key]
            cut = len(best.steps) + ETO_EXTRA_TURNS
            order = [(best, t, t.steps[:cut]) if t.reward < best.reward else (t, best, best.steps)
                     for t in trajs if t.reward != best.reward]
        else:
            wins = [t for t in trajs if t.success]
            losses = [t for t in trajs if not t.success]
            order = [(w, losses[(i + off) % len(losses)], losses[(i + off) % len(losses)].steps)
                     for off in range(len(losses)) for i, w in enumerate(wins)]
        kept = 0
        for win, lose, lose_steps in order:
            if max_pairs_per_task is not None and kept >= max_pairs_per_task:
                break
            chosen = step_messages(win.steps, final_observation=False)
            rejected = step_messages(lose_steps, final_observation=False)
            if chosen == rejected:
                continue
            kept += 1
            pairs.append(Pair(
                env=key[0], task_id=key[1],
                prompt=[{"role": "user", "content": task_message(
                    win.instruction, str((win.meta or {}).get("initial_observation", "")))}],
                chosen=chosen, rejected=rejected,
                chosen_value=float(win.reward), rejected_value=float(lose.reward),
                granularity="trajectory", value_kind="reward", tree_id="",
                chosen_success=bool(win.success), rejected_success=bool(lose.success),
            ))
    return pairs


def pair_blocker(store: Store, env: str | None = None, task_id: str | None = None) -> str | None:
    """What keeps the stored trees (of `env` / `task_id`) from yielding any pair, as a phrase;
    None when some tree holds both a success and a failure (pairs may exist there).

    A pair needs a task explored with both outcomes: expert demonstrations alone all succeed."""
    roots = store.tree_roots(env=env or None, task_id=task_id or None)
    if roots.empty:
        return "there are no trees; run `w2stree tree` first"
    trees = f"{len(roots)} tree{'s' if len(roots) != 1 else ''}"
    if ((roots["successes"] > 0) & (roots["successes"] < roots["visits"])).any():
        return None
    if (roots["successes"] >= roots["visits"]).all():
        models = set(store.collected_models(env=env or None, task_id=task_id or None))
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


def _step(g: Tree, n: int) -> Step:
    """A node as a step: its action with the first thought and observation seen there."""
    thought, action, observation = g.step(n)
    return Step(action=action, thought=thought, observation=observation)


def _completion(g: Tree, child: int, ends: dict[str, tuple[int, float]] | None,
                worst: bool = False) -> list[Message]:
    """The child's assistant turn (`ends` None: step granularity), or the rest of the trajectory
    through it with the best (`worst`: the worst) final reward, from the child down."""
    if ends is None:
        s = _step(g, child)
        return [{"role": "assistant", "content": format_assistant(s.thought, s.action)}]
    path = g.path_to(ends[g.pick_trajectory(child, ends, worst=worst)][0])
    return step_messages([_step(g, n) for n in path[path.index(child):]], final_observation=False)
