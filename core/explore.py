"""Explore from a node: grow one stored tree from any of its nodes with a policy.

`explore` takes a node of a stored tree, replays the node's action prefix (the steps of the first
trajectory through it) in fresh envs of the same task and checks that every observation equals
the stored one: a mismatch stops with `ReplayMismatch`, naming the step (the env is not
deterministic there). Then K continuations run with the policy in the episode runner
(`core.episodes.run_episodes`, as in `core.collect`: one batched `policy.act` call per step, or
each continuation on its own through a model server), are
stored as whole trajectories (the prefix plus the continuation) with their provenance (run,
source `explore`, `meta.explore` = tree, node, the prefix's trajectory; policy and sampling as
collected trajectories carry them), and `grow_tree` puts them into the tree and reruns its MCTS.

Policies: `expert` is the env's expert *from the current state* (`Env.replan`: the shop plans
from any page; ScienceWorld continues its gold path only from nodes on it; ALFWorld's handcoded
expert tracks the game from its start and has no re-planning here), `noisy-expert` replaces the
re-planned step by a random valid action with probability `noise x temperature`, `random`, or any
registered model (as `collect --policy`).

The CLI verb (`w2stree explore`) and the job kind `explore` (`core.explore_job`, the dashboard's
"Explore from here") share `explore`.
"""

from __future__ import annotations

import shlex
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.agents.base import Policy, Request
from core.agents.prompt import format_assistant
from core.agents.registry import SCRIPTED, make_policy
from core.agents.scripted import RandomPolicy
from core.agents.server import server_urls
from core.console import plural
from core.env_slots import Pool, SlotPlanner
from core.envs.base import known_env, list_envs, parse_env_name
from core.episodes import DEFAULT_BATCH, Episode, episode_slots, run_episodes
from core.errors import UserError
from core.mcts import run_mcts
from core.names import env_option, stored_world_hint
from core.settings import ExploreSettings, MCTSSettings, TreeSettings
from core.slot_pools import open_slots
from core.state_merge import store_spliced, unfold
from core.store import StaleTreeError, Store
from core.trajectory import Run, Trajectory, new_id, tree_id
from core.tree import build_tree
from core.tree_data import Tree

NOISE = 0.25  # the noisy expert's noise, as the pipeline's quick explorer
SOURCE = "explore"
JOB_KIND = "explore"
GROW_ATTEMPTS = 3


@dataclass
class ExploreSpec(ExploreSettings):
    """What to explore: a node of the tree of (env, task_id) and a policy, with the exploration
    settings (`core.settings.ExploreSettings`: K, sampling, step budget, seed)."""

    env: str
    task_id: str
    node: int
    policy: str = "expert"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    server: str | dict[str, str] | None = None  # completions servers of a model policy (`core.agents.server`)
    pool: Pool = field(default_factory=Pool)  # where the continuations' envs live (`core.env_slots`)

    def __post_init__(self) -> None:
        if isinstance(self.pool, dict):  # read back from a job's config
            self.pool = Pool(**self.pool)

    @property
    def tree_id(self) -> str:
        return tree_id(self.env, self.task_id)

    def check(self) -> None:
        """UserError on a bad field, before anything runs."""
        if not known_env(self.env):
            raise UserError(f"unknown env {self.env!r}; available: {', '.join(list_envs())}")
        if not self.policy.strip():
            raise UserError(f"name a policy: {', '.join(SCRIPTED)} or a registered model")
        if self.server:
            server_urls(self.server)
            if self.policy in SCRIPTED:
                raise UserError(f"a model server runs a model; policy {self.policy!r} is scripted "
                                "(clear the server or pick a model)")
        super().check()
        self.pool.check()


@dataclass
class ExploreResult:
    """What one `explore` did: its run, new trajectories (ids, rewards) and the new node ids."""

    run_id: str
    traj_ids: list[str]
    rewards: list[float]
    new_nodes: list[int]
    n_nodes: int
    status: str = "finished"

    def line(self, spec: ExploreSpec) -> str:
        """The one-line summary the CLI prints and the job logs."""
        ok = sum(r >= 1.0 for r in self.rewards)
        return (f"explored {spec.tree_id} from node {spec.node} with {spec.policy}: "
                f"{plural(len(self.traj_ids), 'continuation')}, {ok} successful, rewards "
                f"{', '.join(f'{r:.2f}' for r in self.rewards) or '-'}; {plural(len(self.new_nodes), 'new node')} "
                f"(tree now {plural(self.n_nodes, 'node')}; run {self.run_id})")


# -- the node and its prefix ---------------------------------------------------------------------

def load_node(store: Store, env: str, task_id: str, node: int) -> tuple[Tree, Trajectory, int]:
    """(the stored tree, the first trajectory through `node`, the node's depth); UserError when
    the tree or the node does not exist."""
    name = tree_id(env, task_id)
    try:
        tree = store.load_tree(name)
    except KeyError:
        raise UserError(f"no tree {name!r}; build it with `w2stree tree {env_option(env)} --task "
                        f"{shlex.quote(task_id)}`{stored_world_hint(store, env)}") from None
    if not 0 <= node < tree.n_nodes:
        raise UserError(f"tree {name} has no node {node}; its nodes are 0-{tree.n_nodes - 1}")
    ids = tree.traj_ids[tree.trajs[node]].tolist()
    trajs = store.trajectories(traj_ids=ids[:1]) if ids else []
    if not trajs:
        raise UserError(f"tree {name} records no stored trajectory through node {node}; rebuild it "
                        "with `w2stree tree`")
    return tree, trajs[0], int(tree.depth[node])


# -- policies --------------------------------------------------------------------------------------

class ReplanningExpert(Policy):
    """The env's expert from the current state of each episode (`Env.replan`), optionally noisy:
    with probability `noise x temperature` a random valid action instead (greedy is pure expert).
    `envs` maps each request's episode seed to its env slot's planner (set by `explore` as episodes
    start; the env may live in a worker)."""

    batched = False

    def __init__(self, noise: float = 0.0, seed: int = 0) -> None:
        self.name = "noisy-expert" if noise else "expert"
        self.noise, self.seed, self.random = noise, seed, RandomPolicy(seed)
        self.envs: dict[int, SlotPlanner] = {}

    def act(self, requests: list[Request]) -> list[str]:
        out = []
        for req, rand in zip(requests, self.random.act(requests), strict=True):
            draw = zlib.crc32(f"{self.seed}/{req.seed}/{req.task_id}/{len(req.history)}".encode()) / 2**32
            if draw < self.noise * req.sampling.temperature:
                out.append(rand)
                continue
            plan = self.envs[req.seed].replan()
            if plan is None:
                raise UserError(f"the {parse_env_name(req.env)[0]} expert cannot plan from this state (the shop "
                                "re-plans anywhere, ScienceWorld only continues its gold path, ALFWorld not "
                                "at all); explore from a node on the gold path, or with random or a model")
            out.append(format_assistant(plan[0].thought, plan[0].action) if plan
                       else "Thought: the expert has nothing left to do.\nAction: ")
        return out


def make_explore_policy(spec: ExploreSpec, store: Store) -> Policy:
    """The policy of a spec: the re-planning (noisy) expert, random, or a model."""
    if spec.policy in ("expert", "noisy-expert"):
        return ReplanningExpert(NOISE if spec.policy == "noisy-expert" else 0.0, spec.seed)

    return make_policy(spec.policy, spec.env, seed=spec.seed, store=store, env_kwargs=spec.env_kwargs,
                       server=spec.server)


# -- the continuations ----------------------------------------------------------------------------

Progress = Callable[[int, int, str], None]


def explore(store: Store, spec: ExploreSpec, *, progress: Progress | None = None,
            should_stop: Callable[[], bool] | None = None) -> ExploreResult:
    """Replay the node's prefix, run K continuations with the policy, store them and grow the
    tree (see the module docstring). `progress(done, k, message)` is told as continuations end;
    `should_stop()` ends the run early (finished continuations are kept)."""
    return explore_nodes(store, [spec], progress=progress, should_stop=should_stop)[0]


@dataclass
class _Node:
    """One spec's node while its continuations run: where they start and what they became."""

    spec: ExploreSpec
    source: Trajectory  # the first trajectory through the node: the prefix replayed
    depth: int
    run_id: str
    n_before: int  # the tree's node count before
    finished: list[Trajectory] = field(default_factory=list)


def explore_nodes(store: Store, specs: Sequence[ExploreSpec], *, progress: Progress | None = None,
                  should_stop: Callable[[], bool] | None = None) -> list[ExploreResult]:
    """`explore` for several nodes with one policy: their continuations share the episode runner,
    so a model answers episodes of different nodes (and tasks) in one batch. Every spec gets its
    own run; the specs must agree on env, policy, server, env arguments, seed and pool. Returns one
    result per spec, in order."""
    if not specs:
        return []
    first = specs[0]
    for spec in specs:
        spec.check()
        if (spec.env, spec.policy, spec.server, spec.env_kwargs, spec.seed, spec.pool) != \
                (first.env, first.policy, first.server, first.env_kwargs, first.seed, first.pool):
            raise UserError("explore_nodes takes nodes of one env, policy, server, env arguments, seed and pool")
    nodes = []
    for spec in specs:
        g, source, depth = load_node(store, spec.env, spec.task_id, spec.node)
        nodes.append(_Node(spec, source, depth, new_id("run-"), g.n_nodes))
    say = progress or (lambda done, k, msg: None)
    policy = make_explore_policy(first, store)
    for n in nodes:
        store.add_run(Run(run_id=n.run_id, kind=JOB_KIND, env=n.spec.env, policy=policy.name, model=policy.name,
                          settings={"source": SOURCE, "tree_id": n.spec.tree_id, "node": n.spec.node, "k": n.spec.k,
                                    "schedule": [vars(s) for s in n.spec.samplings()],
                                    "max_steps": n.spec.max_steps, "seed": n.spec.seed,
                                    "env_kwargs": n.spec.env_kwargs, **n.spec.pool.settings(),
                                    **policy.run_settings()}))
    # every slot's env replays a prefix again for each continuation it runs
    slots = open_slots(first.env, first.env_kwargs, first.pool)
    episodes, owner = [], {}
    for n in nodes:
        for seq, s in enumerate(n.spec.samplings()):
            seed = zlib.crc32(f"{n.spec.seed}/{n.spec.tree_id}/{n.spec.node}/{s.name()}".encode())
            episodes.append(Episode(n.spec.task_id, s, seed, seq))
            owner[id(episodes[-1])] = n
    total, done = len(episodes), 0
    statuses = ["failed"] * len(nodes)
    try:
        # one node: all K at once (where the env allows); several: a generation batch of them
        batch = max(first.k, min(total, DEFAULT_BATCH))
        width = min(episode_slots(first.env, first.pool.workers, batched=policy.batched, default=batch), total)

        def start(items: list[tuple[int, Episode]]) -> None:
            starts = slots.replay([(s, (owner[id(ep)].source, owner[id(ep)].depth, owner[id(ep)].spec.node))
                                   for s, ep in items])
            for (s, ep), (obs0, instruction, limit, valid) in zip(items, starts):
                n = owner[id(ep)]
                ep.begin(n.spec.env, instruction, obs0, limit, valid,
                         max_steps=n.spec.max_steps, prefix=n.source.steps[:n.depth])
                # stored as the source trajectory has them (an imported one may word them otherwise)
                ep.instruction = n.source.instruction
                ep.initial_observation = (n.source.meta or {}).get("initial_observation", "")
                if isinstance(policy, ReplanningExpert):
                    policy.envs[ep.seed] = slots.planner(s)
                say(done, total, f"replayed {plural(n.depth, 'step')} to node {n.spec.node} of {n.spec.tree_id}")

        def on_end(ep: Episode) -> None:
            nonlocal done
            n = owner[id(ep)]
            extra = {"explore": {"tree_id": n.spec.tree_id, "node": n.spec.node, "from_traj": n.source.traj_id,
                                 "prefix_steps": n.depth}}
            n.finished.append(ep.trajectory(n.spec.env, run_id=n.run_id, source=SOURCE, model=policy.name,
                                            policy=policy.name, env_kwargs=n.spec.env_kwargs, seed=n.spec.seed,
                                            extra=extra))
            done += 1
            say(done, total, f"continuation {ep.seq + 1} ended with reward {n.finished[-1].reward:.2f}")

        run_episodes(policy, first.env, episodes, slots, width, start=start, on_end=on_end, should_stop=should_stop)
        for i, n in enumerate(nodes):
            n.finished.sort(key=lambda t: t.meta["seq"])  # stored and put into the tree in continuation order
            statuses[i] = "stopped" if len(n.finished) < n.spec.k else "finished"
    except KeyboardInterrupt:
        statuses = ["interrupted"] * len(nodes)
        raise
    finally:
        policy.close()
        slots.close()
        finished = [t for n in nodes for t in n.finished]
        if finished:
            store.add_trajectories(finished)
        for n, status in zip(nodes, statuses):
            store.finish_run(n.run_id, status)
    grown: dict[str, tuple[list[int], int]] = {}
    for n in nodes:  # one growth per tree, with all its new continuations
        if n.spec.tree_id not in grown:
            ids = [t.traj_id for m in nodes if m.spec.tree_id == n.spec.tree_id for t in m.finished]
            grown[n.spec.tree_id] = grow_tree(store, n.spec.env, n.spec.task_id, ids) if ids else ([], n.n_before)
    results = []
    for n, status in zip(nodes, statuses):
        new_nodes, n_nodes = grown[n.spec.tree_id]
        results.append(ExploreResult(n.run_id, [t.traj_id for t in n.finished], [t.reward for t in n.finished],
                                     new_nodes, n_nodes, status))
    return results


# -- the tree ------------------------------------------------------------------------------------

def grow_tree(store: Store, env: str, task_id: str, traj_ids: Sequence[str]) -> tuple[list[int], int]:
    """Add stored trajectories `traj_ids` to the tree of (env, task_id) in place (`Tree.extend`:
    every old node keeps its id, the other trees are not touched), rerun its MCTS with the tree's
    own rule, iterations and c (`MCTSSettings.of_tree`: the defaults where it has none) and save it in one
    write. A tree of the semantic or the state rule cannot grow in place and is rebuilt from all its
    trajectories (the state rule's state paths unfolded again with the new ones, spliced paths
    stored). Returns (the new node ids, the tree's node count)."""
    for attempt in range(1, GROW_ATTEMPTS + 1):
        try:
            old = store.load_tree(tree_id(env, task_id))
        except KeyError:
            old = None
        n_old = old.n_nodes if old is not None else 0
        settings = dict(old.settings) if old is not None else {}
        if old is not None and old.merge not in ("semantic", "state"):
            tree = old
            tree.extend(store.trajectories(traj_ids=list(traj_ids)))
        else:
            ids = list(dict.fromkeys([*(old.traj_ids.tolist() if old is not None else []), *traj_ids]))
            built = TreeSettings.of_tree(old.merge if old else None, settings)
            trajs = store.trajectories(traj_ids=ids)
            if built.merge == "state":
                trajs = unfold(trajs).paths
                store_spliced(store, trajs)
            tree = build_tree(trajs, merge=built.merge, threshold=built.threshold)
            if old is not None:
                tree.version = old.version
        mcts = MCTSSettings.of_tree(settings)
        run_mcts(tree, iterations=mcts.iterations, c=mcts.c, rule=mcts.rule)
        try:
            store.save_trees([tree])
        except StaleTreeError:  # another process saved the tree meanwhile: grow its new version
            if attempt == GROW_ATTEMPTS:
                raise
            continue
        return list(range(n_old, tree.n_nodes)), tree.n_nodes
    raise AssertionError("unreachable")

