"""Collect trajectories: run a policy on tasks of an environment and store every episode.

One episode per (task, sampling) pair runs through `core.episodes.run_episodes`: in lockstep, ONE
`policy.act` call per step answers all live episodes (a model server's episodes advance
independently instead, each as its own reply comes in); up to `batch_size` are live at once, each
in its own env slot, and a finished episode's slot starts the next pending pair right away. With
`workers > 1` the env slots live in worker processes, or in Ray actors with `pool=Pool(W, "ray")`
(`core.env_slots`), while the policy stays here and this process alone writes the store; workers
are spawned, so a script that calls `collect(workers>1)` needs the usual
`if __name__ == "__main__":` guard.

Every episode is stored with all its steps (thought, action, observation, reward, score), its
sampling settings, model name, run id and `meta["seq"]` (its place in the run: task order, then
schedule order, whatever order episodes finish in; the store lists a run's trajectories by it, so
trees insert them in the same order for the same seed), as it finishes (batched into one write at most every
`flush_seconds`). A `runs` row tracks the invocation: running → finished / interrupted / failed;
a run whose process was killed outright reads as interrupted (the store checks its process).
An interrupted run keeps what it finished and resumes with `resume=True` (CLI `--resume RUN`),
which skips the (task, sampling) pairs the run already stored.

Many machines, one store: `shard=(I, N)` runs every N-th task of the list from the I-th (each
episode keeps its place `seq` in the whole list, so N shards together equal one unsharded run),
and `spool=FILE` writes the run to a spool file (`core.spool`) instead of the store, each episode
appended as it finishes, for `w2stree import jsonl` on the machine that holds the store.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.agents.base import Policy, Sampling
from core.console import plural
from core.env_slots import Pool
from core.envs.base import UnknownEnvError, canonical_env_name, known_env, list_envs
from core.episodes import Episode, episode_slots, reset_starter, run_episodes
from core.errors import UserError
from core.slot_pools import open_slots
from core.spool import Spool, spooled_run
from core.trajectory import Run, Trajectory, new_id

if TYPE_CHECKING:
    from core.store import Store

EpisodeTick = Callable[[int, int], None]  # (episodes done, of total)


@dataclass
class CollectResult:
    """What one `collect` call did (its own episodes; a resumed run's earlier ones not included)."""

    run_id: str
    n_episodes: int
    avg_reward: float
    success_rate: float
    traj_ids: list[str]
    status: str = "finished"


def collect(store: Store | None, env: str, policy: Policy, task_ids: list[str],
            schedule: Sequence[Sampling] = (Sampling(),), *, max_steps: int | None = None,
            workers: int = 1, batch_size: int | None = None, source: str = "collect", model: str | None = None,
            run_id: str | None = None, resume: bool = False, env_kwargs: dict | None = None,
            seed: int = 0, progress: bool | EpisodeTick = True, flush_seconds: float = 1.0,
            shard: tuple[int, int] | None = None, spool: str | Path | None = None,
            pool: Pool | None = None) -> CollectResult:
    """Run one episode per (task, sampling) with `policy` and store them as they finish.

    `max_steps` caps episodes below the env's own limit; `batch_size` is how many episodes
    (env instances) run in lockstep (default: `core.episodes.episode_slots`: 32, or 4 per worker on
    sciworld, 8 on alfworld); `workers > 1` hosts the envs in that many processes; `pool` (instead
    of `workers`) names the executor too (`core.env_slots.Pool`: local, process or ray).
    `model` is the name stored with the trajectories (default: the policy's name).
    `resume=True` continues `run_id`, skipping the pairs it already stored; it refuses a run of
    another policy or another world. `env` and `env_kwargs` together name the world, stored
    under its canonical name (`canonical_env_name`). `shard=(I, N)` runs tasks I, I+N, I+2N, ...
    of `task_ids` only; `spool` writes the run to that spool file and leaves `store` (may be None)
    alone; a resume then continues the run from the spool. `progress`: a bar on stderr (True), or
    a function called with (episodes done, of total) before the first and after each episode.
    """
    if not known_env(env):
        raise UnknownEnvError(f"unknown env {env!r}; available: {', '.join(list_envs())}")
    env = canonical_env_name(env, **(env_kwargs or {}))
    pool = pool or Pool(workers)
    pool.check()
    if batch_size is None:
        batch_size = episode_slots(env, pool.workers)
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1 (got {batch_size})")
    if max_steps is not None and max_steps < 1:
        raise UserError(f"max steps must be >= 1 (got {max_steps})")
    schedule = list(schedule)
    labels = [s.name() for s in schedule]
    if not schedule or len(set(labels)) != len(labels):
        raise UserError(f"the sampling schedule needs one or more settings with distinct names, got {labels}")
    task_ids = list(dict.fromkeys(task_ids))
    if not task_ids:
        raise UserError("no tasks to collect; pass --tasks N or --task-ids ...")
    mine = shard_tasks(task_ids, shard) if shard else task_ids
    env_kwargs = dict(env_kwargs or {})
    model = model or policy.name
    kind = "eval" if source == "eval" else "collect"

    done_pairs: set[tuple[str, str]] = set()
    if spool is not None:
        if resume:
            record, done_pairs = spooled_run(spool, run_id or "")
            _check_same_run(record, env, policy.name)
    elif resume:
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

    slots = open_slots(env, env_kwargs, pool)
    sink: Store | Spool | None = store if spool is None else None  # where finished trajectories go
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
        settings = {"schedule": [vars(s) for s in schedule], "max_steps": max_steps, **pool.settings(),
                    "batch_size": batch_size, "seed": seed, "env_kwargs": env_kwargs, "source": source,
                    "n_tasks": len(task_ids), **({"shard": f"{shard[0]}/{shard[1]}"} if shard else {}),
                    **({"spool": Path(spool).name} if spool is not None else {}), **policy.run_settings()}
        run = Run(run_id=run_id, kind=kind, env=env, policy=policy.name, model=model, settings=settings)
        if spool is not None:
            sink = Spool(spool, run, {t: index[t].split for t in mine})
            flush_seconds = 0.0  # every episode is in the file as soon as it finishes
        else:
            store.upsert_tasks(index[t] for t in mine)
            if resume:
                store.claim_run(run_id)
            else:
                store.add_run(run)

        # seq: the pair's place in the run (task order, then schedule order)
        ours = set(mine)
        pending = [Episode(t, s, zlib.crc32(f"{seed}/{t}/{s.name()}".encode()), i * len(schedule) + j)
                   for i, t in enumerate(task_ids) if t in ours
                   for j, s in enumerate(schedule) if (t, s.name()) not in done_pairs]
        tick = progress if callable(progress) else None
        if tick is not None:
            tick(0, len(pending))
        elif progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pending), unit="ep", desc=f"collect {env}", dynamic_ncols=True)
        last_flush = time.monotonic()

        def on_end(ep: Episode) -> None:
            nonlocal last_flush
            traj = ep.trajectory(env, run_id=run_id, source=source, model=model, policy=policy.name,
                                 env_kwargs=env_kwargs, seed=seed)
            finished.append(traj)
            unsaved.append(traj)
            if tick is not None:
                tick(len(finished), len(pending))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(reward=f"{sum(t.reward for t in finished) / len(finished):.3f}", refresh=False)
            if time.monotonic() - last_flush >= flush_seconds:
                sink.add_trajectories(unsaved)
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
            if unsaved and sink is not None:
                sink.add_trajectories(unsaved)
            if spool is None:
                store.finish_run(run_id, status)  # no-op when the run row was never written
            elif sink is not None:
                sink.close()
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


def parse_shard(text: str) -> tuple[int, int]:
    """`"I/N"` -> (I, N): this collector's share of the tasks (N collectors, I from 0 to N-1);
    UserError naming `--shard` and the fix for anything else."""
    i, sep, n = text.partition("/")
    try:
        shard = (int(i), int(n)) if sep else None
    except ValueError:
        shard = None
    if shard is None or shard[1] < 1:
        raise UserError(f"--shard {text!r} is not I/N; e.g. --shard 0/3, --shard 1/3 and --shard 2/3 "
                        "on three machines")
    if not 0 <= shard[0] < shard[1]:
        raise UserError(f"--shard {text}: I must be 0 to {shard[1] - 1} (N collectors are numbered "
                        f"0/{shard[1]} to {shard[1] - 1}/{shard[1]})")
    return shard


def shard_tasks(task_ids: Sequence[str], shard: tuple[int, int]) -> list[str]:
    """The tasks of shard (I, N): every N-th of `task_ids` from the I-th (N shards partition the
    list); UserError when it gets none."""
    i, n = shard
    mine = list(task_ids[i::n])
    if not mine:
        raise UserError(f"--shard {i}/{n} gets no task of {plural(len(task_ids), 'task')}; use at most "
                        f"{len(task_ids)} shards")
    return mine


def _check_same_run(run: dict[str, Any], env: str, policy: str) -> None:
    """UserError unless the stored run `run` was collected by `policy` on `env`: a resume
    continues the same policy in the same world only."""
    for what, stored, given, flag in (("env", run["env"], env, "--env"), ("policy", run["policy"], policy, "--policy")):
        if stored != given:
            raise UserError(f"run {run['run_id']!r} was collected with {what} {stored!r}, not {given!r}; "
                            f"resume it with {flag} {stored} or start a new run without --resume")
