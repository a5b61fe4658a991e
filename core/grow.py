"""Targeted growth: spend a budget of extra episodes where the trees' decisions are undecided.

With 4-6 trajectories per task, an action-prefix tree pairs little more than the first divergence:
the decisive mistakes (a wrong product, a wrong option, buying too early) sit lower, in chains
without a sibling, so no pair is cut there. `grow` picks nodes by a rule, continues K episodes
from each with the explorer (the weak model: the method stays weak-to-strong; `core.explore`
replays the node's prefix and stores every continuation with its start node), and grows the
trees in place (their MCTS rerun), so that the chosen decisions get siblings and, where one of
them succeeds, pairs.

Rules (every rule looks only at nodes where a failed trajectory passes, that have children, i.e.
a state where the episode went on, and that leave at least one step before the episode cap):

- `deepest-failure`: nodes whose whole subtree failed (no success below), deepest first;
- `value-drop`: nodes with the largest drop from their value to their worst failing child's (the
  decision that lost most; MCTS values when the tree has them, else data values), deepest first
  among equal drops; a tree without any success has no drop and is not chosen;
- `pair-check`: the failing side of a pair (a node whose whole subtree failed while a sibling's
  succeeded: the rejected child of a step pair), shallowest first. If the weak model can still win
  from there, the pair was luck, not the decision, and it dissolves (both sides now succeed); if
  it cannot, the pair stands, and the continuations add pairs below it;
- `ucb`: MCTS's own selection score over the tree, Q + c * sqrt(ln N(parent) / N(node)) on the
  MCTS statistics (the data's when the tree has none; N(parent) is the sum of its children's
  visits, as in `core.mcts`): little-visited nodes of promising branches first.

The nodes of all trees are ranked together; a tree gives at most `per_tree` nodes, and
`budget // k` nodes are explored. The settings are `core.settings.GrowSettings`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.console import plural
from core.env_slots import Pool
from core.errors import UserError
from core.explore import ExploreResult, ExploreSpec, explore_nodes
from core.settings import GrowSettings
from core.store import Store
from core.tree_data import Tree


def _values(tree: Tree) -> np.ndarray:
    """Per-node value: MCTS's mean where the tree has MCTS statistics, else the data mean."""
    visits, total = (tree.mcts_visits, tree.mcts_value_sum) if tree.mcts_visits.any() else (tree.visits, tree.value_sum)
    return np.divide(total, visits, out=np.zeros(tree.n_nodes), where=visits > 0)


def node_scores(tree: Tree, settings: GrowSettings) -> list[tuple[float, int]]:
    """(score, node) for every node the rule may choose in `tree`, higher scores first."""
    n_children = np.bincount(tree.parent[1:], minlength=tree.n_nodes)
    eligible = (tree.failures > 0) & (n_children > 0) & (tree.depth < settings.max_steps)
    depth = tree.depth.astype(float)
    if settings.rule == "deepest-failure":
        eligible &= tree.successes == 0
        score = depth
    elif settings.rule == "value-drop":
        value = _values(tree)
        worst = np.full(tree.n_nodes, np.inf)
        kids = np.arange(1, tree.n_nodes)
        failing = kids[tree.failures[kids] > 0]
        np.minimum.at(worst, tree.parent[failing], value[failing])
        drop = value - np.where(np.isfinite(worst), worst, value)
        eligible &= drop > 0
        score = drop + depth * 1e-6  # deeper first among equal drops
    elif settings.rule == "pair-check":
        won = np.bincount(tree.parent[1:], weights=tree.successes[1:] > 0, minlength=tree.n_nodes)
        eligible &= (tree.successes == 0) & (tree.parent >= 0)
        eligible &= won[np.maximum(tree.parent, 0)] > 0  # a sibling succeeded
        score = -depth  # shallowest first
    else:
        visits = (tree.mcts_visits if tree.mcts_visits.any() else tree.visits).astype(float)
        # N(parent) as MCTS counts it: the sum of the parent's children's visits (the root
        # itself is never counted by MCTS, so its own N is that sum over its children too)
        below = np.bincount(tree.parent[1:], weights=visits[1:], minlength=tree.n_nodes)
        visits[0] = below[0]
        parent_visits = np.where(tree.parent >= 0, below[np.maximum(tree.parent, 0)], below[0])
        with np.errstate(divide="ignore", invalid="ignore"):
            bonus = settings.c * np.sqrt(np.log(np.maximum(parent_visits, 1)) / visits)
        score = _values(tree) + np.where(visits > 0, bonus, np.inf)
    nodes = np.flatnonzero(eligible)
    order = sorted(zip((-score[nodes]).tolist(), nodes.tolist()))
    return [(-s, n) for s, n in order]


def choose_nodes(trees: Sequence[Tree], settings: GrowSettings) -> list[tuple[str, int, float]]:
    """(tree id, node, score) of the `budget // k` best nodes over all trees, at most `per_tree`
    of each, best first (ties: tree id, then node id)."""
    settings.check()
    ranked = [(score, tree.tree_id, node) for tree in trees
              for score, node in node_scores(tree, settings)[: settings.per_tree]]
    ranked.sort(key=lambda r: (-r[0], r[1], r[2]))
    return [(tree_id, node, score) for score, tree_id, node in ranked[: settings.budget // settings.k]]


@dataclass
class GrowReport:
    """What one growth did: the nodes explored and the result of each."""

    rule: str
    nodes: list[tuple[str, int, float]]
    results: list[ExploreResult]

    @property
    def episodes(self) -> int:
        return sum(len(r.traj_ids) for r in self.results)

    @property
    def successes(self) -> int:
        return sum(sum(x >= 1.0 for x in r.rewards) for r in self.results)

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        new = sum(len(r.new_nodes) for r in self.results)
        return (f"grew {plural(len(self.nodes), 'node')} by rule {self.rule}: {plural(self.episodes, 'episode')}, "
                f"{self.successes} successful, {plural(new, 'new node')}")


def grow(store: Store, env: str, policy: str, settings: GrowSettings, tree_ids: Sequence[str] | None = None,
         progress: Callable[[int, int, str], None] | None = None,
         should_stop: Callable[[], bool] | None = None, pool: Pool = Pool(),
         server: str | dict[str, str] | None = None) -> GrowReport:
    """Choose nodes of the stored trees of `env` (or exactly `tree_ids`) by the rule and explore K
    continuations from each with `policy`; every tree is grown in place. `progress(done, total,
    line)` is told as continuations end; `should_stop()` ends it early (finished continuations are
    kept and grow their trees). `pool`: where the continuations' envs run (`core.env_slots.Pool`);
    `server`: completions servers that run a model policy (`core.agents.server`)."""
    settings.check()
    trees = store.load_trees(tree_ids=list(tree_ids)) if tree_ids is not None else store.load_trees(env=env)
    if not trees:
        raise UserError(f"no stored trees of {env!r}; build them with `w2stree tree --env {env}`")
    chosen = choose_nodes(trees, settings)
    by_id = {t.tree_id: t for t in trees}
    specs = [ExploreSpec(env=env, task_id=by_id[tree_id].task_id, node=node, policy=policy, k=settings.k,
                         schedule="paper", max_steps=max(1, settings.max_steps - int(by_id[tree_id].depth[node])),
                         seed=settings.seed, pool=pool, server=server)
             for tree_id, node, _ in chosen]
    # all chosen nodes' continuations in one episode runner: a model answers them in batches
    results = explore_nodes(store, specs, progress=progress, should_stop=should_stop)
    return GrowReport(settings.rule, chosen, results)
