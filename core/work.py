"""Units of work run side by side: training jobs and stage calls in worker processes.

A `Unit` is either a training job (`kind` + `config`: its own process and folder, see
`core.train.jobs`) or a call `stage(Store(path), **kwargs)` of a module-level function (a stage of
`core.stages`) in a worker process; a Store does not cross processes, so the worker opens the same
file. `run_units` starts the units in list order as their `deps` allow, at most `parallel` at a
time (jobs and calls counted together; on a CPU machine each gets one torch thread), says when
each starts and ends through a `Reporter` and adds its wall time to the reporter's timing of its
stage, the first word of its name (`train`, `eval`, `explore`). The first failure stops the rest
(running training jobs are stopped) and is raised naming its unit.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.console import plural
from core.errors import UserError

if TYPE_CHECKING:
    from core.store import Store

Progress = Callable[[float, str], None]  # (fraction of the whole done, what happens now)
POLL_S = 0.5  # how often running units are checked


class Reporter:
    """Stage timings plus progress lines (to a callback, stderr, or nowhere)."""

    def __init__(self, progress: Progress | bool | None) -> None:
        self.callback = progress if callable(progress) else None
        self.echo = progress is True
        self.timings: dict[str, float] = {}
        self.t0 = time.monotonic()
        self.fraction = 0.0

    def say(self, fraction: float | None, text: str) -> None:
        """Report `text`; `fraction` of the whole done (None: unchanged)."""
        if fraction is not None:
            self.fraction = min(max(fraction, 0.0), 1.0)
        if self.callback is not None:
            self.callback(self.fraction, text)
        if self.echo:
            print(f"[{time.monotonic() - self.t0:7.1f}s] {text}", file=sys.stderr, flush=True)

    def timed(self, stage: str, start: float) -> None:
        """Add the time since `start` (time.monotonic) to `stage`'s total."""
        self.timings[stage] = self.timings.get(stage, 0.0) + time.monotonic() - start


@dataclass
class Unit:
    """A training job (`kind` + `config`) or a call `stage(Store(path), **kwargs)` in a worker
    process. Starts once the units named in `deps` are done; `result` is then filled: a job's
    output model folder, or what the stage returned."""

    name: str
    kind: str = ""
    config: Any = None
    stage: Callable[..., Any] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    n_examples: int = 0  # a job's training rows, for the progress line
    reusable: bool = False  # a call whose result (a run id) `core.reuse` may take from an identical earlier one
    result: Any = None


class UnitFailed(RuntimeError):
    """A unit failed; the message names it. `done` holds the units that had finished, results
    filled (their episodes, models and jobs are in the store as well)."""

    def __init__(self, message: str, unit: str, done: dict[str, Unit]) -> None:
        super().__init__(message)
        self.unit = unit
        self.done = dict(done)


def _worker_init() -> None:
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # one core per unit: `parallel` units share the machine


def _call(db: str, stage: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """In the worker: the stage on the store at `db`."""
    from core.store import Store

    return stage(Store(db), **kwargs)


def _outcome(unit: Unit, future: Any, done: dict[str, Unit]) -> Any:
    """A finished call's result; its error raised naming the unit (a UserError stays one: bad
    input found inside a unit still reaches the user as one line)."""
    try:
        return future.result()
    except UserError as exc:
        raise UserError(f"{unit.name}: {exc}") from exc
    except Exception as exc:
        raise UnitFailed(f"{unit.name} failed: {type(exc).__name__}: {exc}", unit.name, done) from exc


def run_units(units: list[Unit], store: Store, parallel: int, rep: Reporter, reuse: bool = False
              ) -> dict[str, Unit]:
    """Run the units, at most `parallel` at a time, in list order as their dependencies allow;
    returns them by name with `result` filled. With `reuse`, a training job or a reusable call
    that already ran on identical inputs is not run again (`core.reuse`); every finished one is
    recorded for that. The first failure stops the rest and raises UnitFailed naming the unit (a
    training job's: with its error and log tail)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from core import reuse as reuse_records
    from core.train import job_alive, job_log_tail, job_status, start_job, stop_job, sync_job

    parallel = max(1, parallel)
    pending, running, done = list(units), {}, {}
    pool = ProcessPoolExecutor(max_workers=parallel, mp_context=mp.get_context("spawn"), initializer=_worker_init)
    try:
        while pending or running:
            reused = False
            for u in [u for u in pending if all(d in done for d in u.deps)]:
                if reuse and (earlier := reuse_records.lookup(u, store)) is not None:
                    pending.remove(u)
                    u.result, done[u.name], reused = earlier, u, True
                    rep.say(None, f"reuse {u.name}: identical inputs already gave {earlier}")
                    continue
                if len(running) >= parallel:
                    break
                pending.remove(u)
                if u.kind:
                    handle: Any = start_job(u.kind, u.config, store, detach=True)
                    rep.say(None, f"start {u.name} ({u.kind}, {plural(u.n_examples, 'example')}, job {handle})")
                else:
                    handle = pool.submit(_call, str(store.path), u.stage, u.kwargs)
                    rep.say(None, f"start {u.name}")
                running[u.name] = (u, handle, time.monotonic())
            if reused:
                continue  # units waiting on a reused one may start now
            if not running:
                missing = sorted({d for u in pending for d in u.deps} - set(done) - {u.name for u in pending})
                raise RuntimeError(f"units wait on unknown or circular dependencies {missing}")
            time.sleep(POLL_S)
            for name, (u, handle, t0) in list(running.items()):
                if u.kind:
                    status = job_status(handle)
                    if status["status"] in ("queued", "running") or job_alive(handle):
                        continue
                    sync_job(store, handle)
                    if status["status"] != "succeeded":
                        raise UnitFailed(f"training job {handle} ({u.name}) {status['status']}: "
                                         f"{status.get('error')}\n{job_log_tail(handle, 20)}", u.name, done)
                    u.result = Path(status["output_path"])
                else:
                    if not handle.done():
                        continue
                    u.result = _outcome(u, handle, done)
                del running[name]
                done[name] = u
                reuse_records.record(u, store)
                rep.timed(name.split(" ")[0], t0)
                rep.say(None, f"done {u.name} in {time.monotonic() - t0:.0f}s")
    finally:
        for u, handle, _ in running.values():
            if u.kind:
                stop_job(handle, store, grace=5.0)
        pool.shutdown(wait=True, cancel_futures=True)
    return done
