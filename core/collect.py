"""Collect trajectories: run a policy on tasks of an environment and store every episode.

Episodes run in lockstep: at each step ONE `policy.act` call answers all live episodes (what
makes batched LLM generation fast). Up to `batch_size` episodes are live at once, each in its
own env instance (a "slot"); a finished episode's slot starts the next pending
(task, sampling) pair right away. With `workers > 1` the env instances live in worker
processes (spawned; slot s is on worker s % W) while the policy stays here: ScienceWorld runs
one JVM per env, and this spreads them over processes. Workers are spawned, so a script that
calls `collect(workers>1)` needs the usual `if __name__ == "__main__":` guard.

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

import contextlib
import json
import multiprocessing as mp
import signal
import time
import traceback
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.agents.base import Policy, Request, Sampling
from core.agents.prompt import env_prefix, format_assistant, format_observation, parse_reply, task_message
from core.console import plural
from core.envs.base import (
    Env,
    UnknownEnvError,
    canonical_env_name,
    env_class,
    known_env,
    list_envs,
    make_env,
    parse_env_name,
)
from core.errors import UserError
from core.trajectory import Run, Step, Task, Trajectory, new_id

if TYPE_CHECKING:  # spawned env workers import this module: keep DuckDB/pandas out of them
    from core.store import Store

DEFAULT_BATCH = 32
#: Default episodes per worker for envs whose every instance is a process (a ScienceWorld JVM of
#: ~300 MB, an ALFWorld game): 32 of them at once would exhaust a laptop.
SLOTS_PER_WORKER = {"sciworld": 4, "alfworld": 8}

# -- env slots, in this process or in workers ------------------------------------------------
# An op is (slot, "reset", task_id) or (slot, "step", action); its outcome is
# ("reset", observation, instruction, step_limit, valid_actions) or
# ("step", observation, reward, done, info, valid_actions).
Op = tuple[int, str, str]


def _apply_ops(envs: dict[int, Env], env_name: str, env_kwargs: dict[str, Any], ops: list[Op]) -> list[tuple]:
    out: list[tuple] = []
    for slot, kind, arg in ops:
        env = envs.get(slot)
        if env is None:  # built on first use: a JVM per slot only when the slot is used
            env = envs[slot] = make_env(env_name, **env_kwargs)
        if kind == "reset":
            obs, instruction = env.reset(arg)
            out.append(("reset", obs, instruction, env.max_steps(arg), env.valid_actions()))
        else:
            r = env.step(arg)
            out.append(("step", r.observation, float(r.reward), bool(r.done), dict(r.info), env.valid_actions()))
    return out


def _task_index(envs: dict[int, Env], env_name: str, env_kwargs: dict[str, Any]) -> dict[str, Task]:
    env = envs.get(0)
    if env is None:
        env = envs[0] = make_env(env_name, **env_kwargs)
    index: dict[str, Task] = {}
    for split in env.splits():
        for t in env.tasks(split):
            index.setdefault(t.task_id, t)
    return index


def _close_envs(envs: dict[int, Env]) -> None:
    for env in envs.values():
        try:
            env.close()
        except Exception:  # closing is best effort: the others must still close
            traceback.print_exc()
    envs.clear()


class _LocalPool:
    """Env slots in this process."""

    def __init__(self, env_name: str, env_kwargs: dict[str, Any]) -> None:
        self.env_name, self.env_kwargs = env_name, env_kwargs
        self.envs: dict[int, Env] = {}

    def run(self, ops: list[Op]) -> list[tuple]:
        return _apply_ops(self.envs, self.env_name, self.env_kwargs, ops)

    def task_index(self) -> dict[str, Task]:
        return _task_index(self.envs, self.env_name, self.env_kwargs)

    def close(self) -> None:
        _close_envs(self.envs)


def _worker_main(conn: Any, env_name: str, env_kwargs: dict[str, Any]) -> None:
    """A worker process: hosts env slots and answers ("ops", [...]) / ("tasks",) / ("close",)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes us cleanly
    envs: dict[int, Env] = {}
    try:
        while True:
            try:
                msg = conn.recv()
            except EOFError:  # the parent went away
                break
            if msg[0] == "close":
                break
            try:
                if msg[0] == "ops":
                    conn.send(("ok", _apply_ops(envs, env_name, env_kwargs, msg[1])))
                else:
                    conn.send(("ok", _task_index(envs, env_name, env_kwargs)))
            except Exception as exc:
                user = isinstance(exc, UserError | UnknownEnvError)
                conn.send(("error", (exc if user else None, traceback.format_exc())))
    finally:
        _close_envs(envs)
        conn.close()


class _ProcessPool:
    """Env slots in `n` spawned worker processes; slot s lives on worker s % n."""

    def __init__(self, env_name: str, env_kwargs: dict[str, Any], n: int) -> None:
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        try:
            for _ in range(n):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(child, env_name, env_kwargs), daemon=True)
                proc.start()
                child.close()
                self.conns.append(parent)
                self.procs.append(proc)
        except BaseException:
            self.close()
            raise

    def _ask(self, worker: int) -> Any:
        try:
            status, payload = self.conns[worker].recv()
        except (EOFError, OSError) as exc:
            proc = self.procs[worker]
            proc.join(timeout=5)
            raise RuntimeError(
                f"env worker {worker} died (exit code {proc.exitcode}); a script that calls "
                "collect(workers>1) needs an `if __name__ == '__main__':` guard (workers are spawned)"
            ) from exc
        if status == "error":
            exc, tb = payload
            if exc is not None:
                raise exc
            raise RuntimeError(f"env worker {worker} failed:\n{tb}")
        return payload

    def run(self, ops: list[Op]) -> list[tuple]:
        n = len(self.conns)
        by_worker: dict[int, list[int]] = {}
        for i, (slot, _, _) in enumerate(ops):
            by_worker.setdefault(slot % n, []).append(i)
        for w, idx in by_worker.items():  # send to all first, so the workers step in parallel
            self.conns[w].send(("ops", [ops[i] for i in idx]))
        out: list[tuple] = [()] * len(ops)
        for w, idx in by_worker.items():
            for i, res in zip(idx, self._ask(w)):
                out[i] = res
        return out

    def task_index(self) -> dict[str, Task]:
        self.conns[0].send(("tasks",))
        return self._ask(0)

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):  # a worker that already died
                conn.send(("close",))
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for conn in self.conns:
            conn.close()
        self.conns, self.procs = [], []


# -- episodes --------------------------------------------------------------------------------
@dataclass
class _Episode:
    task_id: str
    sampling: Sampling
    seed: int
    seq: int  # the (task, sampling) pair's place in the run: task order, then schedule order
    instruction: str = ""
    initial_observation: str = ""
    limit: int = 0
    valid: list[str] | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    n_invalid: int = 0
    done: bool = False
    success: bool | None = None


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
    (env instances) run in lockstep (default: 32, or `SLOTS_PER_WORKER[env] * workers` for envs
    whose instances are processes); `workers > 1` hosts the envs in that many processes.
    `model` is the name stored with the trajectories (default: the policy's name).
    `resume=True` continues `run_id`, skipping the pairs it already stored; it refuses a run of
    another policy or another world. `env` and `env_kwargs` together name the world, stored
    under its canonical name (`canonical_env_name`).
    """
    if not known_env(env):
        raise UnknownEnvError(f"unknown env {env!r}; available: {', '.join(list_envs())}")
    env = canonical_env_name(env, **(env_kwargs or {}))
    if batch_size is None:
        per_worker = SLOTS_PER_WORKER.get(parse_env_name(env)[0])  # `sciworld?reward=best` is a sciworld
        batch_size = per_worker * workers if per_worker else DEFAULT_BATCH
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

    pool: _LocalPool | _ProcessPool = (
        _LocalPool(env, env_kwargs) if workers == 1 else _ProcessPool(env, env_kwargs, workers)
    )
    finished: list[Trajectory] = []  # this call's episodes
    unsaved: list[Trajectory] = []
    status = "failed"
    bar = None
    try:
        index = pool.task_index()
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

        pending = deque((i * len(schedule) + j, t, s) for i, t in enumerate(task_ids)
                        for j, s in enumerate(schedule) if (t, s.name()) not in done_pairs)
        prefix = env_prefix(env)
        slots: list[_Episode | None] = [None] * min(batch_size, max(1, len(pending)))
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pending), unit="ep", desc=f"collect {env}", dynamic_ncols=True)
        last_flush = time.monotonic()

        while pending or any(slots):
            # start episodes in free slots
            starts = []
            for s, ep in enumerate(slots):
                if ep is None and pending:
                    seq, task_id, sampling = pending.popleft()
                    ep_seed = zlib.crc32(f"{seed}/{task_id}/{sampling.name()}".encode())
                    slots[s] = _Episode(task_id, sampling, ep_seed, seq)
                    starts.append((s, "reset", task_id))
            for (s, _, _), (_, obs, instruction, limit, valid) in zip(starts, pool.run(starts) if starts else []):
                ep = slots[s]
                ep.instruction, ep.initial_observation, ep.valid = instruction, obs, valid
                ep.limit = min(limit, max_steps) if max_steps else limit
                ep.messages = [*prefix, {"role": "user", "content": task_message(instruction, obs)}]
            live = [s for s, ep in enumerate(slots) if ep is not None]
            replies = policy.act([
                Request(env=env, task_id=slots[s].task_id, instruction=slots[s].instruction,
                        messages=list(slots[s].messages), history=list(slots[s].steps),
                        valid_actions=slots[s].valid, sampling=slots[s].sampling, seed=slots[s].seed)
                for s in live
            ])
            if len(replies) != len(live):
                raise RuntimeError(f"policy {policy.name!r} answered {len(replies)} of {len(live)} requests")
            actions = []
            for s, reply in zip(live, replies):
                thought, action = parse_reply(reply)
                if action is None:  # unparsable: the raw text is the (invalid) action
                    thought, action = "", reply
                actions.append((s, "step", action))
                slots[s].steps.append(Step(action=action, thought=thought))
            for (s, _, _), (_, obs, rew, done, info, valid) in zip(actions, pool.run(actions)):
                ep = slots[s]
                step = ep.steps[-1]
                step.observation, step.reward, step.score = obs, rew, info.get("score")
                ep.valid = valid
                ep.n_invalid += bool(info.get("invalid"))
                ep.messages += [{"role": "assistant", "content": format_assistant(step.thought, step.action)},
                                {"role": "user", "content": format_observation(obs)}]
                if "success" in info:
                    ep.success = bool(info["success"])
                if done or len(ep.steps) >= ep.limit:
                    ep.done = done
                    traj = _trajectory(ep, env, run_id, source, model, policy.name, env_kwargs, seed)
                    finished.append(traj)
                    unsaved.append(traj)
                    slots[s] = None
                    if bar is not None:
                        bar.update(1)
            if unsaved and time.monotonic() - last_flush >= flush_seconds:
                store.add_trajectories(unsaved)
                unsaved.clear()
                last_flush = time.monotonic()
            if bar is not None and finished:
                bar.set_postfix(reward=f"{sum(t.reward for t in finished) / len(finished):.3f}", refresh=False)
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
            pool.close()
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


def _trajectory(ep: _Episode, env: str, run_id: str, source: str, model: str, policy: str,
                env_kwargs: dict[str, Any], seed: int) -> Trajectory:
    reward = ep.steps[-1].reward if ep.steps else 0.0
    return Trajectory(
        env=env, task_id=ep.task_id, instruction=ep.instruction, steps=ep.steps, reward=reward,
        success=ep.success if ep.success is not None else reward >= 1.0, source=source, run_id=run_id,
        model=model, temperature=ep.sampling.temperature, top_p=ep.sampling.top_p,
        meta={"initial_observation": ep.initial_observation, "sampling": ep.sampling.name(), "seq": ep.seq,
              "policy": policy, "env_kwargs": env_kwargs, "seed": seed, "episode_seed": ep.seed,
              "step_limit": ep.limit, "truncated": not ep.done, "n_invalid": ep.n_invalid,
              **env_meta(env, ep.task_id)},
    )


def env_meta(env: str, task_id: str) -> dict[str, Any]:
    """The env class's `trajectory_meta` (e.g. ALFWorld's game file), without building an env."""
    cls = env_class(env)
    return cls.trajectory_meta(task_id) if cls is not None and hasattr(cls, "trajectory_meta") else {}
