"""Env slots: the env instances live episodes run in, in this process or in worker processes.

A slot holds one env instance, built on first use (a ScienceWorld JVM only when the slot is
used) and reused by every episode that runs in it. `LocalSlots` keeps them in this process;
`ProcessSlots` in `n` spawned worker processes (slot s on worker s % n) that step in parallel:
ScienceWorld runs one JVM per env, and this spreads them over processes. Workers are spawned, so
a script whose episodes use them needs the usual `if __name__ == "__main__":` guard. Spawned
workers import this module: it keeps DuckDB and pandas out.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import traceback
from abc import ABC, abstractmethod
from typing import Any

from core.envs.base import Env, UnknownEnvError, make_env
from core.errors import UserError
from core.trajectory import Task

# An op is (slot, "reset", task_id) or (slot, "step", action); its outcome is a `Start` tuple
# (observation, instruction, step_limit, valid_actions) or an `Outcome` tuple
# (observation, reward, done, info, valid_actions).
Op = tuple[int, str, str]
Start = tuple[str, str, int, "list[str] | None"]
Outcome = tuple[str, float, bool, "dict[str, Any]", "list[str] | None"]


def _apply_ops(envs: dict[int, Env], env_name: str, env_kwargs: dict[str, Any], ops: list[Op]) -> list[tuple]:
    out: list[tuple] = []
    for slot, kind, arg in ops:
        env = _slot_env(envs, slot, env_name, env_kwargs)
        if kind == "reset":
            obs, instruction = env.reset(arg)
            out.append((obs, instruction, env.max_steps(arg), env.valid_actions()))
        else:
            r = env.step(arg)
            out.append((r.observation, float(r.reward), bool(r.done), dict(r.info), env.valid_actions()))
    return out


def _slot_env(envs: dict[int, Env], slot: int, env_name: str, env_kwargs: dict[str, Any]) -> Env:
    env = envs.get(slot)
    if env is None:  # built on first use: a JVM per slot only when the slot is used
        env = envs[slot] = make_env(env_name, **env_kwargs)
    return env


def _task_index(envs: dict[int, Env], env_name: str, env_kwargs: dict[str, Any]) -> dict[str, Task]:
    env = _slot_env(envs, 0, env_name, env_kwargs)
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


class EnvSlots(ABC):
    """Env instances by slot: reset and step many slots in one call; `task_index`; `close`."""

    @abstractmethod
    def run(self, ops: list[Op]) -> list[tuple]:
        """The outcome of every op, in order."""

    def reset(self, items: list[tuple[int, str]]) -> list[Start]:
        """Reset slot s to task t for every (s, t): (observation, instruction, step limit, valid actions)."""
        return self.run([(s, "reset", task_id) for s, task_id in items])

    def step(self, items: list[tuple[int, str]]) -> list[Outcome]:
        """Play action a in slot s for every (s, a): (observation, reward, done, info, valid actions)."""
        return self.run([(s, "step", action) for s, action in items])

    @abstractmethod
    def task_index(self) -> dict[str, Task]:
        """Every task of the env by id (the first split that has it)."""

    @abstractmethod
    def close(self) -> None:
        """Close every env instance (and worker)."""


class LocalSlots(EnvSlots):
    """Env slots in this process; `env(slot)` is the live instance (a re-planning expert reads it)."""

    def __init__(self, env_name: str, env_kwargs: dict[str, Any]) -> None:
        self.env_name, self.env_kwargs = env_name, env_kwargs
        self.envs: dict[int, Env] = {}

    def env(self, slot: int) -> Env:
        """The env instance of `slot`, built on first use."""
        return _slot_env(self.envs, slot, self.env_name, self.env_kwargs)

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


class ProcessSlots(EnvSlots):
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


def open_slots(env_name: str, env_kwargs: dict[str, Any], workers: int = 1) -> EnvSlots:
    """Env slots of `env_name`: in this process (`workers == 1`) or in that many worker processes."""
    return LocalSlots(env_name, env_kwargs) if workers == 1 else ProcessSlots(env_name, env_kwargs, workers)
