"""Env slots in Ray actors: `--executor ray` (optional: `pip install 'w2stree[ray]'`).

`RaySlots` starts `n` actors (one CPU each, on the Ray cluster at `address`, else on a Ray
started here for this run and shut down with it); slot s lives on actor s % n, in a
`core.env_slots.SlotEnvs` that rebuilds its env every `recycle` episodes. One `run` call sends
each actor its ops at once and waits for all, so the actors step in parallel while the policy
stays in the driver, which alone writes the store (the trajectories are built here from the
outcomes). An actor that dies (killed, out of memory, its node lost) is replaced by a new one and
`run` raises `core.env_slots.SlotsLost` naming every slot it hosted, with the other ops' outcomes:
the episode runner starts those episodes over. This is the only module that imports Ray.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError

from core.env_slots import Op, SlotEnvs, WorkerSlots, answer
from core.errors import UserError


def process_tree_usage(pid: int | None = None) -> tuple[int, float]:
    """(resident bytes, CPU seconds so far) of process `pid` (default: this one) and all its
    live descendants (an env's JVM or game processes), from /proc; (0, 0.0) where there is none."""
    pid = pid or os.getpid()
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    rss, ticks, todo = 0, 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            rss += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return rss, ticks / os.sysconf("SC_CLK_TCK")


@ray.remote
class EnvActor:
    """A Ray actor hosting env slots: `run` ops, `task_index`, `usage`, `close`; every answer is
    `core.env_slots.answer`'s (ok, payload) or (error, (user exception, traceback))."""

    def __init__(self, env_name: str, env_kwargs: dict[str, Any], recycle: int) -> None:
        self.envs = SlotEnvs(env_name, env_kwargs, recycle)

    def run(self, ops: list[Op]) -> tuple[str, Any]:
        return answer(lambda: self.envs.apply(ops))

    def task_index(self) -> tuple[str, Any]:
        return answer(self.envs.task_index)

    def usage(self) -> tuple[int, float]:
        """(resident bytes, CPU seconds) of this actor and its env processes."""
        return process_tree_usage()

    def rebuilt(self) -> int:
        """How many env instances this actor has rebuilt (recycled)."""
        return self.envs.rebuilt

    def close(self) -> None:
        self.envs.close()


class RaySlots(WorkerSlots):
    """Env slots in `n` Ray actors; slot s lives on actor s % n (see the module docstring). A dead
    actor is replaced as `core.env_slots.WorkerSlots` says; `replaced` counts the replacements."""

    def __init__(self, env_name: str, env_kwargs: dict[str, Any], n: int, *, address: str | None = None,
                 recycle: int = 0) -> None:
        super().__init__(env_name, env_kwargs, n, recycle)
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            try:
                ray.init(address=address, include_dashboard=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UserError(f"--ray-address {address}: cannot connect to a Ray cluster there ({exc}); "
                                "start one with `ray start --head` or leave --ray-address out") from None
        self.actors: list[Any] = []
        try:
            cpus = ray.cluster_resources().get("CPU", 0)
            if cpus < n:
                raise UserError(f"--workers {n}: the Ray cluster has {cpus:g} CPUs and each env actor takes one; "
                                f"use --workers {int(cpus)} or fewer, or add nodes")
            self.actors = [self._start_actor() for _ in range(n)]
        except BaseException:
            self.close()
            raise

    def _start_actor(self) -> Any:
        # no restarts by Ray: a restarted actor would have fresh envs under episodes half played
        return EnvActor.options(num_cpus=1, max_restarts=0).remote(self.env_name, self.env_kwargs, self.recycle)

    def _send(self, worker: int, msg: tuple) -> Any:
        actor = self.actors[worker]
        return actor.run.remote(msg[1]) if msg[0] == "ops" else actor.task_index.remote()

    def _receive(self, worker: int, handle: Any) -> tuple[str, Any] | None:
        try:
            return ray.get(handle)
        except RayActorError:
            return None

    def _restart(self, worker: int) -> None:
        ray.kill(self.actors[worker])  # no-op on a dead actor; frees a stuck one's CPU
        self.actors[worker] = self._start_actor()

    def _end(self, worker: int) -> str:
        return "see the Ray logs for why"

    def usage(self) -> list[tuple[int, float]]:
        """(resident bytes, CPU seconds) of each actor with its env processes (JVMs)."""
        return ray.get([a.usage.remote() for a in self.actors])

    def rebuilt(self) -> int:
        """Env instances rebuilt (recycled) by the live actors."""
        return sum(ray.get([a.rebuilt.remote() for a in self.actors]))

    def close(self) -> None:
        try:
            if self.actors:
                ray.wait([a.close.remote() for a in self.actors], num_returns=len(self.actors), timeout=30)
            for a in self.actors:
                ray.kill(a)
            self.actors = []
        finally:
            if self.owns_ray:
                ray.shutdown()
