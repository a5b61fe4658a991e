"""Env slots: the env instances live episodes run in, in this process, in worker processes or in
Ray actors.

A slot holds one env instance, built on first use (a ScienceWorld JVM only when the slot is
used) and reused by every episode that runs in it, and rebuilt (closed and created again) after
`recycle` episodes, so a leaking env (ScienceWorld's JVM grows) is bounded. `LocalSlots` keeps
them in this process; `ProcessSlots` in `n` spawned worker processes (slot s on worker s % n)
that step in parallel: ScienceWorld runs one JVM per env, and this spreads them over processes.
`core.ray_slots.RaySlots` puts them in Ray actors, on one machine or a cluster. `Pool` names which
(`open_slots`). Workers are spawned, so a script whose episodes use them needs the usual
`if __name__ == "__main__":` guard. Spawned workers import this module: it keeps DuckDB and
pandas out.

A pool whose worker can die (`WorkerSlots`: a process or a Ray actor killed, out of memory, an env
that exits) replaces it and raises `SlotsLost` from `run`: the slots whose env was lost and the
outcomes of the other ops; the episode runner starts the lost slots' episodes over. A worker that
keeps dying ends the run with one line (`MAX_REPLACEMENTS`).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.envs.base import Env, UnknownEnvError, make_env, parse_env_name
from core.errors import UserError
from core.node_replay import replay_prefix
from core.trajectory import Task

# An op is (slot, kind, arg): "reset" a task id, "step" an action, "replay" (trajectory, depth,
# node) of a node's prefix, "replan" None. Its outcome: a `Start` tuple (observation, instruction,
# step_limit, valid_actions) for reset and replay, an `Outcome` tuple (observation, reward, done,
# info, valid_actions) for step, the expert's next steps from the slot's state for replan.
Op = tuple[int, str, Any]
Start = tuple[str, str, int, "list[str] | None"]
Outcome = tuple[str, float, bool, "dict[str, Any]", "list[str] | None"]
EXECUTORS = ("local", "process", "ray")
#: Episodes a slot's env serves before it is rebuilt, by env; the others are never rebuilt by
#: default. ScienceWorld's JVM grows slowly (+40 MB on 2 actors over 300 short episodes here) and a
#: rebuild costs a JVM start (~5 s), so every 500 episodes bounds a long run for a few % of its time.
RECYCLE = {"sciworld": 500}


def default_recycle(env_name: str) -> int:
    """Episodes per env instance before it is rebuilt (0: never), by the env's registry name."""
    return RECYCLE.get(parse_env_name(env_name)[0], 0)


@dataclass(frozen=True)
class Pool:
    """Where env slots live: `executor` local (this process), process (`workers` spawned
    processes) or ray (`workers` Ray actors, on the cluster at `ray_address`, else a Ray started
    here); `recycle`: episodes per env instance before it is rebuilt (None: the env's default,
    0: never). The default executor: local for one worker, process for several."""

    workers: int = 1
    executor: str | None = None
    ray_address: str | None = None
    recycle: int | None = None

    @property
    def kind(self) -> str:
        """The executor this pool runs on."""
        return self.executor or ("local" if self.workers == 1 else "process")

    def check(self) -> None:
        """UserError on a pool that cannot run, before anything starts."""
        if self.kind not in EXECUTORS:
            raise UserError(f"unknown executor {self.kind!r}; use one of {', '.join(EXECUTORS)}")
        if self.workers < 1:
            raise UserError(f"--workers must be >= 1 (got {self.workers})")
        if self.kind == "local" and self.workers != 1:
            raise UserError(f"--executor local runs one env worker (this process), not {self.workers}; "
                            "use --executor process or ray for several")
        if self.ray_address and self.kind != "ray":
            raise UserError("--ray-address needs --executor ray")
        if self.recycle is not None and self.recycle < 0:
            raise UserError(f"--recycle must be >= 0 (0: never), got {self.recycle}")

    def settings(self) -> dict[str, Any]:
        """What a run records of its pool."""
        return {"workers": self.workers, "executor": self.kind,
                **({"ray_address": self.ray_address} if self.ray_address else {}),
                **({"recycle": self.recycle} if self.recycle is not None else {})}


class SlotEnvs:
    """The env instances of the slots one process hosts: built on first use, rebuilt after
    `recycle` episodes (0: never); `apply` runs ops on them."""

    def __init__(self, env_name: str, env_kwargs: dict[str, Any], recycle: int = 0) -> None:
        self.env_name, self.env_kwargs, self.recycle = env_name, env_kwargs, recycle
        self.envs: dict[int, Env] = {}
        self.served: dict[int, int] = {}  # episodes started in each slot's current env
        self.rebuilt = 0

    def env(self, slot: int) -> Env:
        """The env instance of `slot`, built on first use: a JVM per slot only when it is used."""
        env = self.envs.get(slot)
        if env is None:
            env = self.envs[slot] = make_env(self.env_name, **self.env_kwargs)
            self.served[slot] = 0
        return env

    def _episode_env(self, slot: int) -> Env:
        """The env a new episode of `slot` starts in: a fresh one after `recycle` episodes."""
        if self.recycle and self.served.get(slot, 0) >= self.recycle:
            _close(self.envs.pop(slot))
            self.rebuilt += 1
        env = self.env(slot)
        self.served[slot] += 1
        return env

    def apply(self, ops: list[Op]) -> list[Any]:
        """The outcome of every op, in order."""
        out: list[Any] = []
        for slot, kind, arg in ops:
            if kind == "reset":
                env = self._episode_env(slot)
                obs, instruction = env.reset(arg)
                out.append((obs, instruction, env.max_steps(arg), env.valid_actions()))
            elif kind == "replay":
                env = self._episode_env(slot)
                traj, depth, node = arg
                obs0, instruction, valid = replay_prefix(env, traj, depth, node)
                out.append((obs0, instruction, env.max_steps(traj.task_id), valid))
            elif kind == "replan":
                plan = self.env(slot).replan()
                out.append(plan[:1] if plan else plan)
            else:
                env = self.env(slot)
                r = env.step(arg)
                out.append((r.observation, float(r.reward), bool(r.done), dict(r.info), env.valid_actions()))
        return out

    def task_index(self) -> dict[str, Task]:
        """Every task of the env by id (the first split that has it)."""
        env = self.env(0)
        index: dict[str, Task] = {}
        for split in env.splits():
            for t in env.tasks(split):
                index.setdefault(t.task_id, t)
        return index

    def close(self) -> None:
        """Close every env instance (best effort: the others still close when one fails)."""
        for env in self.envs.values():
            _close(env)
        self.envs.clear()


def _close(env: Env) -> None:
    try:
        env.close()
    except Exception:  # closing is best effort: the others must still close
        traceback.print_exc()


def answer(call: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", what `call` returns), or ("error", (the exception if it is the user's, else None,
    its traceback)): how a worker process or actor hands its outcome back."""
    try:
        return "ok", call()
    except Exception as exc:
        user = isinstance(exc, UserError | UnknownEnvError)
        return "error", (exc if user else None, traceback.format_exc())


def unwrap(status: str, payload: Any, worker: str) -> Any:
    """The payload of an `answer`, or its exception raised here."""
    if status == "error":
        exc, tb = payload
        if exc is not None:
            raise exc
        raise RuntimeError(f"env worker {worker} failed:\n{tb}")
    return payload


class SlotsLost(Exception):
    """A worker died and was replaced: the env state of `slots` is gone. `results` holds the
    outcome of every op of the call, None for an op of a lost slot."""

    def __init__(self, slots: set[int], results: list[Any]) -> None:
        super().__init__(f"env slots {sorted(slots)} lost with their worker")
        self.slots, self.results = slots, results


class EnvSlots(ABC):
    """Env instances by slot: reset, replay to a node, step and re-plan many slots in one call;
    `task_index`; `close`."""

    @abstractmethod
    def run(self, ops: list[Op]) -> list[Any]:
        """The outcome of every op, in order (SlotsLost where a worker died)."""

    def reset(self, items: list[tuple[int, str]]) -> list[Start]:
        """Reset slot s to task t for every (s, t): (observation, instruction, step limit, valid actions)."""
        return self.run([(s, "reset", task_id) for s, task_id in items])

    def replay(self, items: list[tuple[int, tuple[Any, int, int]]]) -> list[Start]:
        """Replay (trajectory, depth, node)'s prefix in slot s for every (s, prefix)
        (`core.node_replay.replay_prefix`): (first observation, instruction, step limit, valid actions)."""
        return self.run([(s, "replay", prefix) for s, prefix in items])

    def step(self, items: list[tuple[int, str]]) -> list[Outcome]:
        """Play action a in slot s for every (s, a): (observation, reward, done, info, valid actions)."""
        return self.run([(s, "step", action) for s, action in items])

    def planner(self, slot: int) -> SlotPlanner:
        """What re-plans from `slot`'s current state (`Env.replan`, its first step), wherever the env lives."""
        return SlotPlanner(self, slot)

    @abstractmethod
    def task_index(self) -> dict[str, Task]:
        """Every task of the env by id (the first split that has it)."""

    @abstractmethod
    def close(self) -> None:
        """Close every env instance (and worker)."""


@dataclass
class SlotPlanner:
    """The expert of one slot: `replan()` is its env's `Env.replan`, cut to the next step."""

    slots: EnvSlots
    slot: int

    def replan(self) -> list[Any] | None:
        return self.slots.run([(self.slot, "replan", None)])[0]


class LocalSlots(EnvSlots):
    """Env slots in this process; `env(slot)` is the live instance."""

    def __init__(self, env_name: str, env_kwargs: dict[str, Any], recycle: int = 0) -> None:
        self.envs = SlotEnvs(env_name, env_kwargs, recycle)

    def env(self, slot: int) -> Env:
        """The env instance of `slot`, built on first use."""
        return self.envs.env(slot)

    def run(self, ops: list[Op]) -> list[Any]:
        return self.envs.apply(ops)

    def task_index(self) -> dict[str, Task]:
        return self.envs.task_index()

    def close(self) -> None:
        self.envs.close()


#: Replacements of one worker before the run gives up: an env that kills its worker every time
#: (cannot start, crashes on a state) must end the run, not loop.
MAX_REPLACEMENTS = 3


class WorkerSlots(EnvSlots):
    """Env slots spread over `n` workers that can die (processes, Ray actors); slot s lives on
    worker s % n. A dead worker is replaced (`_restart`) and `run` raises `SlotsLost` naming every
    slot it hosted, with the other ops' outcomes; the episode runner starts those episodes over. A
    worker replaced `MAX_REPLACEMENTS` times that dies again ends the run with one UserError line
    naming the env. Subclasses say how a message reaches a worker and how one is started."""

    def __init__(self, env_name: str, env_kwargs: dict[str, Any], n: int, recycle: int = 0) -> None:
        self.env_name, self.env_kwargs, self.recycle, self.n = env_name, env_kwargs, recycle, n
        self.hosted: list[set[int]] = [set() for _ in range(n)]  # slots whose env lives on each worker
        self.replaced = 0  # workers started in place of dead ones
        self._replacements = [0] * n

    @abstractmethod
    def _send(self, worker: int, msg: tuple) -> Any:
        """Hand ("ops", ops) or ("tasks",) to `worker`: a handle for `_receive` (None: it is dead)."""

    @abstractmethod
    def _receive(self, worker: int, handle: Any) -> tuple[str, Any] | None:
        """The worker's `answer` to the message `handle` stands for; None when the worker died."""

    @abstractmethod
    def _restart(self, worker: int) -> None:
        """Clear dead `worker` away and start a new one in its place."""

    @abstractmethod
    def _end(self, worker: int) -> str:
        """How dead `worker` ended and where to look for why (for the line that gives up)."""

    def _lose(self, worker: int) -> set[int]:
        """Replace dead `worker`; the slots it hosted (their envs are gone)."""
        self._replacements[worker] += 1
        if self._replacements[worker] > MAX_REPLACEMENTS:
            raise UserError(f"env {self.env_name!r}: its worker {worker} died {self._replacements[worker]} times "
                            f"({self._end(worker)}); run the env in this process to see why (--executor local) "
                            "and fix that")
        self._restart(worker)
        self.replaced += 1
        lost, self.hosted[worker] = self.hosted[worker], set()
        return lost

    def run(self, ops: list[Op]) -> list[Any]:
        by_worker = by_host(ops, self.n)
        # hand every worker its ops first, so that they step in parallel
        handles = {w: self._send(w, ("ops", [ops[i] for i in idx])) for w, idx in by_worker.items()}
        out: list[Any] = [None] * len(ops)
        lost: set[int] = set()
        for w, idx in by_worker.items():
            self.hosted[w].update(ops[i][0] for i in idx)
            reply = self._receive(w, handles[w])
            if reply is None:
                lost |= self._lose(w)
                continue
            for i, res in zip(idx, unwrap(*reply, str(w))):
                out[i] = res
        if lost:
            raise SlotsLost(lost, out)
        return out

    def task_index(self) -> dict[str, Task]:
        while (reply := self._receive(0, self._send(0, ("tasks",)))) is None:
            self._lose(0)  # raises once worker 0 keeps dying
        return unwrap(*reply, "0")


def _worker_main(conn: Any, env_name: str, env_kwargs: dict[str, Any], recycle: int) -> None:
    """A worker process: hosts env slots and answers ("ops", [...]) / ("tasks",) / ("close",)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes us cleanly
    envs = SlotEnvs(env_name, env_kwargs, recycle)
    try:
        while True:
            try:
                msg = conn.recv()
            except EOFError:  # the parent went away
                break
            if msg[0] == "close":
                break
            conn.send(answer(lambda msg=msg: envs.apply(msg[1]) if msg[0] == "ops" else envs.task_index()))
    finally:
        envs.close()
        conn.close()


class ProcessSlots(WorkerSlots):
    """Env slots in `n` spawned worker processes; slot s lives on worker s % n. A worker process
    that dies (killed, out of memory, an env that exits) is replaced (`WorkerSlots`)."""

    def __init__(self, env_name: str, env_kwargs: dict[str, Any], n: int, recycle: int = 0) -> None:
        super().__init__(env_name, env_kwargs, n, recycle)
        self.ctx = mp.get_context("spawn")
        self.conns: list[Any] = []
        self.procs: list[Any] = []
        try:
            for w in range(n):
                self.conns.append(None)
                self.procs.append(None)
                self._start(w)
        except BaseException:
            self.close()
            raise

    def _start(self, worker: int) -> None:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker_main, daemon=True,
                                args=(child, self.env_name, self.env_kwargs, self.recycle))
        proc.start()
        child.close()
        self.conns[worker], self.procs[worker] = parent, proc

    def _send(self, worker: int, msg: tuple) -> Any:
        try:
            self.conns[worker].send(msg)
        except OSError:  # it died since its last answer
            return None
        return True

    def _receive(self, worker: int, handle: Any) -> tuple[str, Any] | None:
        if handle is None:
            return None
        try:
            return self.conns[worker].recv()
        except (EOFError, OSError):
            return None

    def _restart(self, worker: int) -> None:
        self._stop(worker)
        self._start(worker)

    def _end(self, worker: int) -> str:
        proc = self.procs[worker]
        proc.join(timeout=5)
        # a worker answers its envs' errors, it does not die of them: exit code 1 is a worker that
        # failed as it started (its traceback is printed above), as in a script without the guard
        return f"exit code {proc.exitcode}" + ("; a script that starts workers needs an `if __name__ == "
                                               "'__main__':` guard: they are spawned" if proc.exitcode == 1 else "")

    def _stop(self, worker: int) -> None:
        """Close `worker`'s pipe and end its process (a dead one is only reaped)."""
        conn, proc = self.conns[worker], self.procs[worker]
        if conn is not None:
            with contextlib.suppress(OSError):  # a worker that already died
                conn.send(("close",))
        if proc is not None:
            proc.join(timeout=30 if proc.is_alive() else 5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for w in range(len(self.procs)):
            self._stop(w)
        self.conns, self.procs = [], []


def by_host(ops: list[Op], n: int) -> dict[int, list[int]]:
    """The indices of `ops` by the worker that hosts their slot (slot s on worker s % n)."""
    out: dict[int, list[int]] = {}
    for i, (slot, _, _) in enumerate(ops):
        out.setdefault(slot % n, []).append(i)
    return out
