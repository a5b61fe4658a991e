"""The stages of the method: the one implementation the CLI, the pipeline and the dashboard call.

    env --run_policy--> trajectories --grow_trees--> trees --score_trees--> scored trees
        --cut_pairs--> pairs --save_tree_data--> store
    data spec --training_rows--> rows --core.train--> model --evaluate--> results

Each stage is a plain function on in-memory objects, so the pipeline can run them for a K it does
not store. The `*_stored` functions run the tree stages over the store in chunks of `CHUNK` trees
(the `w2stree tree / mcts / pairs` commands), with the same functions inside.

Their settings are the typed dataclasses of `core.settings` (re-exported here).

Pairs are replaced per (env, task, granularity): cutting `step` pairs of a task never deletes its
`continuation` or `trajectory` pairs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from core.envs.base import EnvSpec, select_tasks
from core.evaluate import EvalResult, evaluate
from core.mcts import run_mcts_all
from core.pairs import eto_pairs, tree_pairs
from core.policy_run import run_policy
from core.settings import MCTSSettings, PairSettings, TreeSettings
from core.state_merge import SPLICE, StatePaths, store_spliced, unfold
from core.store import StaleTreeError
from core.train.data import build_rows as training_rows
from core.trajectory import Pair, Trajectory
from core.tree import build_trees, build_trees_from_tables
from core.tree_data import Tree

if TYPE_CHECKING:
    from core.store import Store

__all__ = [
    "CHUNK", "EvalResult", "MCTSSettings", "PairSettings", "TreeSettings", "cut_pairs", "cut_pairs_stored",
    "demonstrations", "evaluate", "expert_trajectories", "grow_trees", "grow_trees_stored", "replace_pairs", "run_policy",
    "save_tree_data", "score_trees", "score_trees_stored", "select_tasks", "split_tasks",
    "training_rows", "tree_trajectories",
]

CHUNK = 500  # trees built / scored / cut per store write
MCTS_ATTEMPTS = 3  # scoring passes over trees that another process keeps rebuilding

Tick = Callable[[int], None]  # called with the number of trees just handled (a progress bar)


# -- selecting data ------------------------------------------------------------------------------

def split_tasks(env: str, split: str = "train", tasks: int | None = None,
                task_ids: Sequence[str] | None = None) -> list[str]:
    """`select_tasks` on the env called `env` (opened and closed here): `EnvSpec.tasks`."""
    return EnvSpec.parse(env, split).tasks(tasks, task_ids)


def expert_trajectories(store: Store, env: str | None = None, task: str | None = None) -> list[Trajectory]:
    """The stored expert demonstrations (model `expert`, no evaluation episodes)."""
    return [t for t in store.trajectories(env=env, task_id=task, model="expert") if t.source != "eval"]


# -- running a policy ----------------------------------------------------------------------------

def demonstrations(store: Store, env: str, task_ids: list[str]) -> list[Trajectory]:
    """Expert demonstrations of `task_ids`, in that order: the stored ones, plus the missing ones
    collected now (model `expert`)."""
    have = {t.task_id: t for t in store.trajectories(env=env, source="collect", model="expert")}
    missing = [t for t in task_ids if t not in have]
    if missing:
        run_id = run_policy(store, env, "expert", missing, label="expert")
        for t in store.trajectories(run_id=run_id):
            have.setdefault(t.task_id, t)
    return [have[t] for t in task_ids if t in have]


# -- trees, MCTS, pairs (in memory) ----------------------------------------------------------------

def tree_trajectories(trajs: Sequence[Trajectory], settings: TreeSettings = TreeSettings()) -> list[Trajectory]:
    """The trajectories the trees of `trajs` are made of: `trajs` themselves, or under the state
    merge their state paths (`core.state_merge`: episodes replayed, merged where they reach one
    state, spliced paths added; store the spliced ones beside the trees: `save_tree_data`)."""
    settings.check()
    if settings.merge != "state" or isinstance(trajs, StatePaths):
        return list(trajs)
    return unfold(trajs).paths


def grow_trees(trajs: Sequence[Trajectory], settings: TreeSettings = TreeSettings()) -> list[Tree]:
    """One tree per (env, task) of `trajs`, steps merged by `settings.merge` (the state merge
    unfolds raw episodes first, `tree_trajectories`)."""
    paths = tree_trajectories(trajs, settings)
    return build_trees(paths, merge=settings.merge, threshold=settings.threshold)


def score_trees(trees: Sequence[Tree], settings: MCTSSettings = MCTSSettings()) -> list[Tree]:
    """Run offline MCTS on every tree in place (visit statistics and best path; one compiled call
    for all of them); returns them."""
    settings.check()
    run_mcts_all(trees, iterations=settings.iterations, c=settings.c, rule=settings.rule)
    return list(trees)


def cut_pairs(trees: Sequence[Tree], settings: PairSettings = PairSettings(),
              trajectories: Sequence[Trajectory] = (), experts: Sequence[Trajectory] | None = None) -> list[Pair]:
    """The preference pairs of one granularity. `step` / `continuation`: cut at the trees'
    branching nodes. `trajectory` (the ETO baseline): whole trajectories of the trees' tasks,
    from `trajectories` (expert ones left out: they are the other side) and, with the `expert`
    baseline, `experts`."""
    settings.check()
    if settings.granularity != "trajectory":
        return [p for g in trees for p in tree_pairs(g, granularity=settings.granularity, value=settings.value,
                                                     min_margin=settings.min_margin)]
    explored = [t for t in trajectories if t.model != "expert"]
    pairs = eto_pairs(explored, experts, mode=settings.baseline)
    if settings.min_margin is not None:
        pairs = [p for p in pairs if p.margin >= settings.min_margin]
    return pairs


def save_tree_data(store: Store, trees: Sequence[Tree], pairs: Mapping[str, Sequence[Pair]] | None = None,
                   paths: Sequence[Trajectory] = ()) -> None:
    """Store `trees` (replacing earlier trees of the same tasks) and, per granularity in `pairs`,
    that granularity's pairs, replacing the earlier pairs of exactly that granularity for the
    trees' tasks (other granularities stay). `paths`: the trees' trajectories
    (`tree_trajectories`), whose spliced state paths are stored once."""
    store_spliced(store, paths)
    store.save_trees(trees)
    for granularity, found in (pairs or {}).items():
        replace_pairs(store, trees, granularity, found)


def replace_pairs(store: Store, trees: Sequence[Tree], granularity: str, pairs: Sequence[Pair]) -> int:
    """Store `pairs` in place of the earlier `granularity` pairs of the trees' tasks (the other
    granularities stay); returns the number stored."""
    tasks = sorted({(g.env, g.task_id) for g in trees})
    return store.save_pairs(pairs, replace_tasks=[(env, task, granularity) for env, task in tasks])


# -- the same stages over the store, in chunks ---------------------------------------------------------

def _chunks(items: list[Any], n: int = CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _tick(progress: Tick | None, n: int) -> None:
    if progress is not None:
        progress(n)


def grow_trees_stored(store: Store, settings: TreeSettings = TreeSettings(), *, env: str | None = None,
                      task: str | None = None, source: str | None = None, model: str | None = None,
                      progress: Tick | None = None) -> tuple[int, int, int]:
    """Grow the trees of the stored trajectories that match (evaluation episodes only when
    `source` asks for them) straight from the steps table's Arrow columns, and store them,
    `CHUNK` per write; returns (trees, nodes, trajectories)."""
    settings.check()
    if settings.merge == "state":  # replayed and unfolded from Trajectory objects
        trees, n_trajs = _state_trees_stored(store, settings, env, task, source, model)
    else:
        heads, steps = store.tree_tables(env=env, task_id=task, source=source, model=model)
        trees, n_trajs = build_trees_from_tables(heads, steps, merge=settings.merge,
                                                 threshold=settings.threshold), heads.num_rows
        del steps  # the trees hold what they need; free the step texts before writing
    for chunk in _chunks(trees):
        store.save_trees(chunk)
        _tick(progress, len(chunk))
    return len(trees), sum(t.n_nodes for t in trees), n_trajs


def _state_trees_stored(store: Store, settings: TreeSettings, env: str | None, task: str | None,
                        source: str | None, model: str | None) -> tuple[list[Tree], int]:
    """The state-merged trees of the matching stored episodes (their spliced paths stored), and
    the number of episodes read."""
    episodes = [t for t in store.trajectories(env=env, task_id=task, source=source, model=model)
                if source is not None or t.source not in ("eval", SPLICE)]  # as tree_tables reads them
    paths = tree_trajectories(episodes, settings)
    store_spliced(store, paths)
    return grow_trees(paths, settings), len(episodes)


def score_trees_stored(store: Store, tree_ids: list[str], settings: MCTSSettings = MCTSSettings(),
                       progress: Tick | None = None) -> None:
    """Score the stored trees `tree_ids` with MCTS, `CHUNK` per write. A tree rebuilt by another
    process while it was scored is never overwritten: its chunk is loaded and scored again
    (StaleTreeError after MCTS_ATTEMPTS)."""
    settings.check()
    for chunk in _chunks(tree_ids):
        for attempt in range(1, MCTS_ATTEMPTS + 1):
            # MCTS reads structure and statistics only: the node texts stay in the store
            trees = score_trees(store.load_trees(tree_ids=chunk, numeric_only=True), settings)
            try:
                store.save_scores(trees)  # only the scores: the nodes' texts are unchanged
                break
            except StaleTreeError as exc:
                if attempt == MCTS_ATTEMPTS:
                    raise
                print(f"w2stree: {len(exc.tree_ids)} tree(s) were rebuilt while MCTS ran; scoring them again",
                      file=sys.stderr)
        _tick(progress, len(chunk))


def cut_pairs_stored(store: Store, tree_ids: list[str], settings: PairSettings = PairSettings(),
                     experts: Sequence[Trajectory] | None = None, progress: Tick | None = None,
                     keep: Callable[[list[Pair]], list[Pair]] | None = None) -> int:
    """Cut pairs of one granularity from the stored trees `tree_ids` and store them, replacing
    that granularity's earlier pairs of the trees' tasks; returns the number stored. The
    trajectory granularity takes the trees' own trajectories as the explored side. `keep`
    filters each chunk's pairs before they are stored (`--hard-for`: `PairScorer.ranked_wrong`)."""
    settings.check()
    total = 0
    for chunk in _chunks(tree_ids):
        trees = store.load_trees(tree_ids=chunk)
        trajs: list[Trajectory] = []
        if settings.granularity == "trajectory":
            trajs = store.trajectories(traj_ids=[str(t) for g in trees for t in g.traj_ids])
        found = cut_pairs(trees, settings, trajs, experts)
        total += replace_pairs(store, trees, settings.granularity, keep(found) if keep else found)
        _tick(progress, len(chunk))
    return total
