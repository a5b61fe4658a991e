"""The stages of the method: the one implementation the CLI, the pipeline and the dashboard call.

    env --run_policy--> trajectories --grow_trees--> trees --score_trees--> scored trees
        --cut_pairs--> pairs --save_tree_data--> store
    data spec --training_rows--> rows --core.train--> model --evaluate--> results

Each stage is a plain function on in-memory objects, so the pipeline can run them for a K it does
not store. The `*_stored` functions run the tree stages over the store in chunks of `CHUNK` trees
(the `w2stree tree / mcts / pairs` commands), with the same functions inside.

Pairs are replaced per (env, task, granularity): cutting `step` pairs of a task never deletes its
`continuation` or `trajectory` pairs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.agents.base import Sampling
from core.agents.registry import make_policy
from core.envs.base import make_env, select_tasks
from core.errors import UserError
from core.evaluate import EvalResult, evaluate
from core.mcts import DEFAULT_RULE, check_rule, run_mcts_all
from core.pairs import ETO_MODES, GRANULARITIES, VALUE_KINDS, eto_pairs, tree_pairs
from core.store import StaleTreeError
from core.train.data import build_rows as training_rows
from core.trajectory import Pair, Trajectory
from core.tree import MERGE_RULES, build_trees, build_trees_from_tables
from core.tree_data import Tree

if TYPE_CHECKING:
    from core.collect import EpisodeTick
    from core.store import Store

__all__ = [
    "CHUNK", "EvalResult", "MCTSSettings", "PairSettings", "TreeSettings", "cut_pairs", "cut_pairs_stored",
    "demonstrations", "evaluate", "expert_trajectories", "grow_trees", "grow_trees_stored", "replace_pairs", "run_policy",
    "save_tree_data", "score_trees", "score_trees_stored", "select_tasks", "split_tasks",
    "training_rows",
]

CHUNK = 500  # trees built / scored / cut per store write
MCTS_ATTEMPTS = 3  # scoring passes over trees that another process keeps rebuilding

Tick = Callable[[int], None]  # called with the number of trees just handled (a progress bar)


@dataclass(frozen=True)
class TreeSettings:
    """How trajectories merge into a tree (`core.tree`)."""

    merge: str = "action"  # action, observation or semantic (MERGE_RULES)
    threshold: float = 0.9  # cosine threshold of the semantic rule

    def check(self) -> None:
        """A one-line UserError for an unknown merge rule."""
        if self.merge not in MERGE_RULES:
            raise UserError(f"unknown merge rule {self.merge!r}; use one of {', '.join(MERGE_RULES)}")


@dataclass(frozen=True)
class MCTSSettings:
    """Offline MCTS over a stored tree (`core.mcts`)."""

    iterations: int = 1000  # iterations per tree
    c: float = 1.41  # exploration constant
    rule: str = DEFAULT_RULE  # uct, early-release, puct or mean (core.mcts.RULES)

    def check(self) -> None:
        """A one-line UserError for an unknown rule or a non-positive iteration count."""
        check_rule(self.rule)
        if self.iterations < 1:
            raise UserError(f"--iterations must be at least 1, got {self.iterations}")


@dataclass(frozen=True)
class PairSettings:
    """Which preference pairs to cut (`core.pairs`)."""

    granularity: str = "step"  # step / continuation (from trees) or trajectory (the ETO baseline)
    value: str = "data"  # children compared by data mean (data) or MCTS Q (mcts); tree pairs only
    min_margin: float | None = None  # least value difference (None: one side succeeds, the other not)
    baseline: str = "expert"  # trajectory pairs: expert vs explored, or weak success vs failure

    def check(self) -> None:
        """A one-line UserError for an unknown granularity, value or baseline."""
        for name, value, allowed in (("granularity", self.granularity, GRANULARITIES),
                                     ("value", self.value, VALUE_KINDS), ("baseline", self.baseline, ETO_MODES)):
            if value not in allowed:
                raise UserError(f"unknown pair {name} {value!r}; use one of {', '.join(allowed)}")


# -- selecting data ------------------------------------------------------------------------------

def split_tasks(env: str, split: str = "train", tasks: int | None = None,
                task_ids: Sequence[str] | None = None) -> list[str]:
    """`select_tasks` on the env called `env` (opened and closed here)."""
    with make_env(env) as e:
        return select_tasks(e, split, tasks, task_ids)


def expert_trajectories(store: Store, env: str | None = None, task: str | None = None) -> list[Trajectory]:
    """The stored expert demonstrations (model `expert`, no evaluation episodes)."""
    return [t for t in store.trajectories(env=env, task_id=task, model="expert") if t.source != "eval"]


# -- running a policy ----------------------------------------------------------------------------

def run_policy(store: Store, env: str, policy: str, task_ids: list[str],
               schedule: Sequence[Sampling] = (Sampling(),), *, label: str | None = None, seed: int = 0,
               max_steps: int | None = None, batch_size: int | None = None, workers: int = 1,
               source: str = "collect", progress: bool | EpisodeTick = False, server: str | None = None) -> str:
    """Run the policy called `policy` (`core.agents.registry`) on `task_ids` with every setting of
    `schedule`, store the episodes (as `source`) under the model name `label` (default: the
    policy's name) and return the run id. `batch_size`: episodes in lockstep (default:
    collect's), which is also a model's generation batch (default 16); `workers`: env processes;
    `server`: completions servers that run the model (`core.agents.server`)."""
    from core.collect import collect

    agent = make_policy(policy, env, seed=seed, batch_size=batch_size or 16, store=store, server=server)
    try:
        return collect(store, env, agent, task_ids, schedule=schedule, max_steps=max_steps, workers=workers,
                       batch_size=batch_size, source=source, model=label or agent.name, seed=seed,
                       progress=progress).run_id
    finally:
        agent.close()


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

def grow_trees(trajs: Sequence[Trajectory], settings: TreeSettings = TreeSettings()) -> list[Tree]:
    """One tree per (env, task) of `trajs`, steps merged by `settings.merge`."""
    settings.check()
    return build_trees(list(trajs), merge=settings.merge, threshold=settings.threshold)


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


def save_tree_data(store: Store, trees: Sequence[Tree], pairs: Mapping[str, Sequence[Pair]] | None = None
                   ) -> None:
    """Store `trees` (replacing earlier trees of the same tasks) and, per granularity in `pairs`,
    that granularity's pairs, replacing the earlier pairs of exactly that granularity for the
    trees' tasks (other granularities stay)."""
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
    heads, steps = store.tree_tables(env=env, task_id=task, source=source, model=model)
    trees = build_trees_from_tables(heads, steps, merge=settings.merge, threshold=settings.threshold)
    del steps  # the trees hold what they need; free the step texts before writing
    for chunk in _chunks(trees):
        store.save_trees(chunk)
        _tick(progress, len(chunk))
    return len(trees), sum(t.n_nodes for t in trees), heads.num_rows


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
