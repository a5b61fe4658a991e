"""Explore from a node: grow one stored tree from any of its nodes with a policy.

`explore` takes a node of a stored tree, replays the node's action prefix (the steps of the first
trajectory through it) in fresh envs of the same task and checks that every observation equals
the stored one: a mismatch stops with `ReplayMismatch`, naming the step (the env is not
deterministic there). Then K continuations run with the policy in lockstep (one batched
`policy.act` call per step, as in `core.collect`), are stored as whole trajectories (the prefix
plus the continuation) with their provenance (run, source `explore`, `meta.explore` = tree, node,
the prefix's trajectory; policy and sampling as collected trajectories carry them), and
`grow_tree` puts them into the tree and reruns its MCTS.

Policies: `expert` is the env's expert *from the current state* (`Env.replan`: the shop plans
from any page; ScienceWorld continues its gold path only from nodes on it; ALFWorld's handcoded
expert tracks the game from its start and has no re-planning here), `noisy-expert` replaces the
re-planned step by a random valid action with probability `noise x temperature`, `random`, or any
registered model (as `collect --policy`).

The CLI verb (`w2stree explore`) and the dashboard's job (`run_job`, kind `explore` of
`core.train.jobs`) share `explore`.
"""

from __future__ import annotations

import json
import os
import shlex
import traceback
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.agents.base import PAPER_SCHEDULE, Policy, Request, Sampling
from core.agents.prompt import env_prefix, format_assistant, format_observation, parse_reply, task_message
from core.agents.registry import SCRIPTED
from core.agents.scripted import RandomPolicy
from core.console import plural
from core.envs.base import Env, StepResult, known_env, list_envs, make_env, parse_env_name
from core.errors import UserError
from core.store import StaleTreeError, Store
from core.trajectory import Run, Step, Trajectory, new_id
from core.tree_data import Tree

NOISE = 0.25  # the noisy expert's noise, as the pipeline's quick explorer
SOURCE = "explore"
JOB_KIND = "explore"
GROW_ATTEMPTS = 3
#: Envs whose every instance is a process (a ScienceWorld JVM): continuations beyond this many
#: run in rounds, not all at once.
MAX_LIVE = {"sciworld": 4, "alfworld": 8}


class ReplayMismatch(UserError):
    """Replaying a node's prefix gave another observation than the stored one."""


@dataclass
class ExploreSpec:
    """What to explore: a node of the tree of (env, task_id), a policy, K continuations and their
    sampling (`schedule="paper"`, else K samples at (temperature, top_p)), a step budget after
    the node (None: the env's own limit)."""

    env: str
    task_id: str
    node: int
    policy: str = "expert"
    k: int = 4
    schedule: str | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    max_steps: int | None = None
    seed: int = 0
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def tree_id(self) -> str:
        return f"{self.env}/{self.task_id}"

    def samplings(self) -> list[Sampling]:
        """One sampling setting per continuation, with distinct names: the paper schedule cycled
        to K, or K samples of one setting."""
        if self.k < 1:
            raise UserError(f"explore needs K >= 1 continuations, got {self.k}")
        if self.schedule not in (None, "paper"):
            raise UserError(f"unknown schedule {self.schedule!r}; use paper, or a temperature and top-p")
        if self.schedule is None and (self.temperature < 0 or not 0 < self.top_p <= 1):
            raise UserError("need temperature >= 0 and 0 < top-p <= 1")
        base = list(PAPER_SCHEDULE) if self.schedule == "paper" else [Sampling(self.temperature, self.top_p)]
        out = []
        for i in range(self.k):
            s = base[i % len(base)]
            out.append(s if self.k <= len(base) else Sampling(s.temperature, s.top_p, f"{s.name()}#{i}"))
        return out

    def check(self) -> None:
        """UserError on a bad field, before anything runs."""
        if not known_env(self.env):
            raise UserError(f"unknown env {self.env!r}; available: {', '.join(list_envs())}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"--max-steps must be >= 1, got {self.max_steps}")
        if not self.policy.strip():
            raise UserError(f"name a policy: {', '.join(SCRIPTED)} or a registered model")
        self.samplings()


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
    tree_id = f"{env}/{task_id}"
    try:
        tree = store.load_tree(tree_id)
    except KeyError:
        from core.names import env_option, stored_world_hint

        raise UserError(f"no tree {tree_id!r}; build it with `w2stree tree {env_option(env)} --task "
                        f"{shlex.quote(task_id)}`{stored_world_hint(store, env)}") from None
    if not 0 <= node < tree.n_nodes:
        raise UserError(f"tree {tree_id} has no node {node}; its nodes are 0-{tree.n_nodes - 1}")
    ids = tree.traj_ids[tree.trajs[node]].tolist()
    trajs = store.trajectories(traj_ids=ids[:1]) if ids else []
    if not trajs:
        raise UserError(f"tree {tree_id} records no stored trajectory through node {node}; rebuild it "
                        "with `w2stree tree`")
    return tree, trajs[0], int(tree.depth[node])


def replay_steps(env: Env, traj: Trajectory, depth: int, node: int) -> tuple[str, str, StepResult | None]:
    """Reset `env` to the trajectory's task and play its first `depth` actions, checking every
    observation against the stored one. Returns (first observation, instruction, the last step's
    result: None at the root). ReplayMismatch names the first step that differs."""
    obs0, instruction = env.reset(traj.task_id)
    stored0 = (traj.meta or {}).get("initial_observation")
    if stored0 is not None and not env.same_observation(stored0, obs0):
        raise ReplayMismatch(f"replaying node {node}: the first observation of task {traj.task_id} differs from "
                             f"the stored one (trajectory {traj.traj_id}); the env is not deterministic there")
    res = None
    for i, step in enumerate(traj.steps[:depth]):
        res = env.step(step.action)
        if not env.same_observation(step.observation, res.observation):
            raise ReplayMismatch(
                f"replaying node {node}: step {i + 1} ({step.action!r}) answered another observation than "
                f"the stored trajectory {traj.traj_id}; the env is not deterministic there")
    return obs0, instruction, res


def replay_prefix(env: Env, traj: Trajectory, depth: int, node: int) -> tuple[str, str, list[str] | None]:
    """`replay_steps`, for a node to continue from: returns (first observation, instruction, valid
    actions now); UserError when the episode is over at the node."""
    obs0, instruction, last = replay_steps(env, traj, depth, node)
    if last is not None and last.done:
        raise UserError(f"node {node} ends its episode (step {depth}); pick a node above it to explore from")
    return obs0, instruction, env.valid_actions()


def prefix_messages(env: str, instruction: str, obs0: str, steps: Sequence[Step]) -> list[dict[str, str]]:
    """The chat a policy sees at the node: role + one-shot, the task, the prefix's turns."""
    messages = [*env_prefix(env), {"role": "user", "content": task_message(instruction, obs0)}]
    for s in steps:
        messages += [{"role": "assistant", "content": format_assistant(s.thought, s.action)},
                     {"role": "user", "content": format_observation(s.observation)}]
    return messages


# -- policies --------------------------------------------------------------------------------------

class ReplanningExpert(Policy):
    """The env's expert from the current state of each episode (`Env.replan`), optionally noisy:
    with probability `noise x temperature` a random valid action instead (greedy is pure expert).
    `envs` maps each request's episode seed to its live env (set by the episode loop)."""

    def __init__(self, noise: float = 0.0, seed: int = 0) -> None:
        self.name = "noisy-expert" if noise else "expert"
        self.noise, self.seed, self.random = noise, seed, RandomPolicy(seed)
        self.envs: dict[int, Env] = {}

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
    from core.agents.registry import make_policy

    return make_policy(spec.policy, spec.env, seed=spec.seed, store=store, env_kwargs=spec.env_kwargs)


# -- the continuations ----------------------------------------------------------------------------

@dataclass
class _Episode:
    sampling: Sampling
    seed: int
    seq: int
    env: Env
    limit: int
    messages: list[dict[str, str]]
    steps: list[Step]
    valid: list[str] | None
    done: bool = False
    truncated: bool = False
    success: bool | None = None
    n_invalid: int = 0


Progress = Callable[[int, int, str], None]


def explore(store: Store, spec: ExploreSpec, *, progress: Progress | None = None,
            should_stop: Callable[[], bool] | None = None) -> ExploreResult:
    """Replay the node's prefix, run K continuations with the policy, store them and grow the
    tree (see the module docstring). `progress(done, k, message)` is told as continuations end;
    `should_stop()` ends the run early (finished continuations are kept)."""
    spec.check()
    samplings = spec.samplings()
    g, source_traj, depth = load_node(store, spec.env, spec.task_id, spec.node)
    say = progress or (lambda done, k, msg: None)
    policy = make_explore_policy(spec, store)
    run_id = new_id("run-")
    store.add_run(Run(run_id=run_id, kind=JOB_KIND, env=spec.env, policy=policy.name, model=policy.name,
                      settings={"source": SOURCE, "tree_id": spec.tree_id, "node": spec.node, "k": spec.k,
                                "schedule": [vars(s) for s in samplings], "max_steps": spec.max_steps,
                                "seed": spec.seed, "env_kwargs": spec.env_kwargs}))
    finished: list[Trajectory] = []
    envs: list[Env] = []  # reused by every round: an env replays the prefix again for each continuation
    status = "failed"
    try:
        base = parse_env_name(spec.env)[0]
        live_max = MAX_LIVE.get(base, len(samplings))
        if base in MAX_LIVE and isinstance(policy, ReplanningExpert | RandomPolicy):  # no batching to gain: one JVM
            live_max = 1
        for start in range(0, len(samplings), live_max):
            batch = list(enumerate(samplings))[start:start + live_max]
            while len(envs) < len(batch):
                envs.append(make_env(spec.env, **spec.env_kwargs))
            finished += _run_batch(spec, policy, source_traj, depth, batch, envs, run_id, say, len(samplings),
                                   len(finished), should_stop)
            if should_stop and should_stop():
                break
        status = "stopped" if len(finished) < len(samplings) else "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        policy.close()
        for env in envs:
            env.close()
        if finished:
            store.add_trajectories(finished)
        store.finish_run(run_id, status)
    new_nodes, n_nodes = grow_tree(store, spec.env, spec.task_id, [t.traj_id for t in finished]) \
        if finished else ([], g.n_nodes)
    return ExploreResult(run_id, [t.traj_id for t in finished], [t.reward for t in finished], new_nodes,
                         n_nodes, status)


def _run_batch(spec: ExploreSpec, policy: Policy, source: Trajectory, depth: int,
               batch: list[tuple[int, Sampling]], envs: list[Env], run_id: str, say: Progress, k: int,
               n_done: int, should_stop: Callable[[], bool] | None) -> list[Trajectory]:
    """Continuations `batch` in lockstep, one of `envs` each; returns them as trajectories."""
    episodes: list[_Episode] = []
    prefix = [Step(s.action, s.observation, s.thought, s.reward, s.score) for s in source.steps[:depth]]
    for (seq, sampling), env in zip(batch, envs):
        episodes.append(_Episode(sampling, zlib.crc32(f"{spec.seed}/{spec.tree_id}/{spec.node}/"
                                                      f"{sampling.name()}".encode()),
                                 seq, env, 0, [], [], None))
        obs0, instruction, valid = replay_prefix(env, source, depth, spec.node)
        limit = env.max_steps(spec.task_id)
        ep = episodes[-1]
        ep.limit = min(limit, depth + spec.max_steps) if spec.max_steps else limit
        ep.messages = prefix_messages(spec.env, instruction, obs0, prefix)
        ep.steps, ep.valid = [Step(**asdict(s)) for s in prefix], valid
        ep.done = depth >= ep.limit
    if isinstance(policy, ReplanningExpert):
        policy.envs = {ep.seed: ep.env for ep in episodes}
    say(n_done, k, f"replayed {plural(depth, 'step')} to node {spec.node}")
    while not all(ep.done for ep in episodes):
        if should_stop and should_stop():
            return []
        live = [ep for ep in episodes if not ep.done]
        replies = policy.act([Request(env=spec.env, task_id=spec.task_id, instruction=source.instruction,
                                      messages=list(ep.messages), history=list(ep.steps),
                                      valid_actions=ep.valid, sampling=ep.sampling, seed=ep.seed)
                              for ep in live])
        for ep, reply in zip(live, replies, strict=True):
            thought, action = parse_reply(reply)
            if action is None:  # unparsable: the raw text is the (invalid) action
                thought, action = "", reply
            res = ep.env.step(action)
            ep.steps.append(Step(action, res.observation, thought, float(res.reward), res.info.get("score")))
            ep.messages += [{"role": "assistant", "content": format_assistant(thought, action)},
                            {"role": "user", "content": format_observation(res.observation)}]
            ep.valid = ep.env.valid_actions()
            ep.n_invalid += bool(res.info.get("invalid"))
            if "success" in res.info:
                ep.success = bool(res.info["success"])
            if res.done or len(ep.steps) >= ep.limit:
                ep.done, ep.truncated = True, not res.done
                n_done += 1
                say(n_done, k, f"continuation {ep.seq + 1} ended with reward {res.reward:.2f}")
    return [_trajectory(spec, ep, source, depth, run_id, policy.name) for ep in episodes]


def _trajectory(spec: ExploreSpec, ep: _Episode, source: Trajectory, depth: int, run_id: str,
                policy: str) -> Trajectory:
    from core.collect import env_meta

    reward = ep.steps[-1].reward if ep.steps else 0.0
    return Trajectory(
        env=spec.env, task_id=spec.task_id, instruction=source.instruction, steps=ep.steps, reward=reward,
        success=ep.success if ep.success is not None else reward >= 1.0, source=SOURCE, run_id=run_id,
        model=policy, temperature=ep.sampling.temperature, top_p=ep.sampling.top_p,
        meta={"initial_observation": (source.meta or {}).get("initial_observation", ""),
              "sampling": ep.sampling.name(), "seq": ep.seq, "policy": policy, "env_kwargs": spec.env_kwargs,
              "seed": spec.seed, "episode_seed": ep.seed, "step_limit": ep.limit,
              "truncated": ep.truncated, "n_invalid": ep.n_invalid,
              "explore": {"tree_id": spec.tree_id, "node": spec.node, "from_traj": source.traj_id,
                          "prefix_steps": depth},
              **env_meta(spec.env, spec.task_id)},
    )


# -- the tree ------------------------------------------------------------------------------------

def grow_tree(store: Store, env: str, task_id: str, traj_ids: Sequence[str]) -> tuple[list[int], int]:
    """Add stored trajectories `traj_ids` to the tree of (env, task_id) in place (`Tree.extend`:
    every old node keeps its id, the other trees are not touched), rerun its MCTS with the tree's
    own rule, iterations and c (1000 iterations if it had none) and save it in one write. A tree of
    the semantic rule cannot grow in place and is rebuilt from all its trajectories. Returns (the
    new node ids, the tree's node count)."""
    from core.mcts import run_mcts
    from core.tree import build_tree

    tree_id = f"{env}/{task_id}"
    for attempt in range(1, GROW_ATTEMPTS + 1):
        try:
            old = store.load_tree(tree_id)
        except KeyError:
            old = None
        n_old, settings = (old.n_nodes, dict(old.settings)) if old is not None else (0, {})
        if old is not None and old.merge != "semantic":
            tree = old
            tree.extend(store.trajectories(traj_ids=list(traj_ids)))
        else:
            ids = list(dict.fromkeys([*(old.traj_ids.tolist() if old is not None else []), *traj_ids]))
            tree = build_tree(store.trajectories(traj_ids=ids), merge=old.merge if old else "action",
                              threshold=float(settings.get("threshold", 0.9)))
            if old is not None:
                tree.version = old.version
        mcts = settings.get("mcts") or {}
        run_mcts(tree, iterations=int(mcts.get("iterations") or 1000), c=float(mcts.get("c", 1.41)),
                 rule=mcts.get("rule", "uct"))
        try:
            store.save_trees([tree])
        except StaleTreeError:  # another process saved the tree meanwhile: grow its new version
            if attempt == GROW_ATTEMPTS:
                raise
            continue
        return list(range(n_old, tree.n_nodes)), tree.n_nodes
    raise AssertionError("unreachable")


# -- the background job -----------------------------------------------------------------------------

def start_job(spec: ExploreSpec, store: Store) -> str:
    """Check the spec and the node, then start `explore` as a job (its own process; progress,
    stop and re-attach as training jobs). Returns the job id."""
    from core.train.jobs import launch_job, write_job

    spec.check()
    load_node(store, spec.env, spec.task_id, spec.node)
    # the job process writes its trajectories itself, so it is told which store (not the default one)
    job_id = write_job(JOB_KIND, asdict(spec), {"kind": JOB_KIND, "tree_id": spec.tree_id, "db": str(store.path)},
                       store=store, max_steps=spec.k)
    launch_job(job_id, store)
    return job_id


def run_job(job_dir: Path) -> Path:
    """The job process's work: `explore` with the job's spec; status and progress go to the
    job folder (the new node ids and trajectory ids too, for the page to highlight them)."""
    from core.train.jobs import now_iso, update_status

    meta = json.loads((job_dir / "config.json").read_text())
    spec, db = ExploreSpec(**meta["config"]), meta["lineage"].get("db")
    update_status(job_dir, status="running", pid=os.getpid(), started_at=now_iso(), step=0, max_steps=spec.k)
    stop_file = job_dir / "stop"

    def progress(done: int, k: int, message: str) -> None:
        print(message, flush=True)
        update_status(job_dir, step=done, max_steps=k)

    try:
        res = explore(Store(db) if db else Store(), spec, progress=progress, should_stop=stop_file.exists)
    except BaseException as exc:
        lines = [ln for ln in traceback.format_exception_only(exc)[-1].splitlines() if ln.strip()]
        message = str(exc) if isinstance(exc, UserError) else (lines[-1] if lines else type(exc).__name__)
        update_status(job_dir, status="stopped" if isinstance(exc, KeyboardInterrupt) else "failed",
                      error=message, finished_at=now_iso())
        raise
    print(res.line(spec), flush=True)
    update_status(job_dir, status="stopped" if stop_file.exists() else "succeeded", step=len(res.traj_ids),
                  finished_at=now_iso(), new_nodes=res.new_nodes, traj_ids=res.traj_ids, rewards=res.rewards,
                  run_id=res.run_id, summary=res.line(spec))
    return job_dir

