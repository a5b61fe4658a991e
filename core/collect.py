"""Collect trajectories: run a policy on tasks of an environment and store every episode.

One episode per (task, sampling) pair runs through `core.episodes.run_episodes`: in lockstep, ONE
`policy.act` call per step answers all live episodes; up to `batch_size` are live at once, each in
its own env slot, and a finished episode's slot starts the next pending pair right away. With
`workers > 1` the env slots live in worker processes (`core.env_slots`) while the policy stays
here; workers are spawned, so a script that calls `collect(workers>1)` needs the usual
`if __name__ == "__main__":` guard.

Every episode is stored with all its steps (thought, action, observation, reward, score), its
sampling settings, model name, run id and `meta["seq"]` (its place in the run: task order, then
schedule order, whatever order episodes finish in; the store lists a run's trajectories by it, so
trees insert them in the same order for the same seed), as it finishes (batched into one write at most every
`flush_seconds`). A `runs` row tracks the invocation: running → finished / interrupted / failed;
a run whose process was killed outright reads as interrupted (the store checks its process).
An interrupted run keeps what it finished and resumes with `resume=True` (CLI `--resume RUN`),
which skips the (task, sampling) pairs the run already stored.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.agents.base import Policy, Sampling
from core.console import plural
from core.env_slots import open_slots
from core.envs.base import UnknownEnvError, canonical_env_name, known_env, list_envs
from core.episodes import Episode, episode_slots, reset_starter, run_episodes
from core.errors import UserError
from core.trajectory import Run, Trajectory, new_id

if TYPE_CHECKING:
    from core.store import Store


@dataclass
class CollectResult:
    """What one `collect` call did (its own episodes; a resumed run's earlier ones not included)."""

    run_id: str
    n_episodes: int
    avg_reward: float
    success_rate: float
    traj_ids: list[str]
    status: str = "finished"


def collect(store: Store, env: str, policy: Policy, task_ids: list[str],
            schedule: Sequence[Sampling] = (Sampling(),), *, max_steps: int | None = None,
            workers: int = 1, batch_size: int | None = None, source: str = "collect", model: str | None = None,
            run_id: str | None = None, resume: bool = False, env_kwargs: dict | None = None,
            seed: int = 0, progress: bool = True, flush_seconds: float = 1.0) -> CollectResult:
    """Run one episode per (task, sampling) with `policy` and store them as they finish.

    `max_steps` caps episodes below the env's own limit; `batch_size` is how many episodes
    (env instances) run in lockstep (default: `core.episodes.episode_slots`: 32, or 4 per worker on
    sciworld, 8 on alfworld); `workers > 1` hosts the envs in that many processes.
    `model` is the name stored with the trajectories (default: the policy's name).
    `resume=True` continues `run_id`, skipping the pairs it already stored; it refuses a run of
    another policy or another world. `env` and `env_kwargs` together name the world, stored
    under its canonical name (`canonical_env_name`).
    """
    if not known_env(env):
        raise UnknownEnvError(f"unknown env {env!r}; available: {', '.join(list_envs())}")
    env = canonical_env_name(env, **(env_kwargs or {}))
    if batch_size is None:
        batch_size = episode_slots(env, workers)
    if workers < 1 or batch_size < 1:
        raise UserError(f"workers and batch size must be >= 1 (got workers={workers}, batch_size={batch_size})")
    if max_steps is not None and max_steps < 1:
        raise UserError(f"max steps must be >= 1 (got {max_steps})")
    schedule = list(schedule)
    labels = [s.name() for s in schedule]
    if not schedule or len(set(labels)) != len(labels):
        raise UserError(f"the sampling schedule needs one or more settings with distinct names, got {labels}")
    task_ids = list(dict.fromkeys(task_ids))
    if not task_ids:
        raise UserError("no tasks to collect; pass --tasks N or --task-ids ...")
    env_kwargs = dict(env_kwargs or {})
    model = model or policy.name
    kind = "eval" if source == "eval" else "collect"

    done_pairs: set[tuple[str, str]] = set()
    if resume:
        if not run_id or not store.has_run(run_id):
            raise UserError(f"no run {run_id!r} to resume; see `w2stree stats` or start a new run")
        if store.run_owner_alive(run_id):
            raise UserError(f"run {run_id!r} is still running in another process; stop it first")
        _check_same_run(store.run_record(run_id), env, policy.name)
        for meta in store.trajectory_index(run_id=run_id)[["task_id", "meta"]].itertuples(index=False):
            done_pairs.add((meta.task_id, json.loads(meta.meta or "{}").get("sampling", "")))
    elif run_id and store.has_run(run_id):
        raise UserError(f"run {run_id!r} already exists; pass --resume {run_id} to continue it")
    run_id = run_id or new_id("run-")

    slots = open_slots(env, env_kwargs, workers)
    finished: list[Trajectory] = []  # this call's episodes
    unsaved: list[Trajectory] = []
    status = "failed"
    bar = None
    try:
        index = slots.task_index()
        unknown = [t for t in task_ids if t not in index]
        if unknown:
            some = ", ".join(list(index)[:5])
            raise UnknownEnvError(f"env {env!r} has no task(s) {', '.join(map(repr, unknown[:5]))}; "
                                  f"it has {plural(len(index), 'task')}, e.g. {some}")
        store.upsert_tasks(index[t] for t in task_ids)
        settings = {"schedule": [vars(s) for s in schedule], "max_steps": max_steps, "workers": workers,
                    "batch_size": batch_size, "seed": seed, "env_kwargs": env_kwargs, "source": source,
                    "n_tasks": len(task_ids)}
        if resume:
            store.claim_run(run_id)
        else:
            store.add_run(Run(run_id=run_id, kind=kind, env=env, policy=policy.name, model=model,
                              settings=settings))

        # seq: the pair's place in the run (task order, then schedule order)
        pending = [Episode(t, s, zlib.crc32(f"{seed}/{t}/{s.name()}".encode()), i * len(schedule) + j)
                   for i, t in enumerate(task_ids) for j, s in enumerate(schedule) if (t, s.name()) not in done_pairs]
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pending), unit="ep", desc=f"collect {env}", dynamic_ncols=True)
        last_flush = time.monotonic()

        def on_end(ep: Episode) -> None:
            nonlocal last_flush
            traj = ep.trajectory(env, run_id=run_id, source=source, model=model, policy=policy.name,
                                 env_kwargs=env_kwargs, seed=seed)
            finished.append(traj)
            unsaved.append(traj)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(reward=f"{sum(t.reward for t in finished) / len(finished):.3f}", refresh=False)
            if time.monotonic() - last_flush >= flush_seconds:
                store.add_trajectories(unsaved)
                unsaved.clear()
                last_flush = time.monotonic()

        run_episodes(policy, env, pending, slots, batch_size, start=reset_starter(env, slots, max_steps),
                     on_end=on_end)
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        try:
            if unsaved:
                store.add_trajectories(unsaved)
            store.finish_run(run_id, status)  # no-op when the run row was never written
        finally:
            if bar is not None:
                bar.close()
            slots.close()
    n = len(finished)
    return CollectResult(
        run_id=run_id, n_episodes=n,
        avg_reward=sum(t.reward for t in finished) / n if n else 0.0,
        success_rate=sum(bool(t.success) for t in finished) / n if n else 0.0,
        traj_ids=[t.traj_id for t in finished], status=status,
    )


def _check_same_run(run: dict[str, Any], env: str, policy: str) -> None:
    """UserError unless the stored run `run` was collected by `policy` on `env`: a resume
    continues the same policy in the same world only."""
    for what, stored, given, flag in (("env", run["env"], env, "--env"), ("policy", run["policy"], policy, "--policy")):
        if stored != given:
            raise UserError(f"run {run['run_id']!r} was collected with {what} {stored!r}, not {given!r}; "
                            f"resume it with {flag} {stored} or start a new run without --resume")
