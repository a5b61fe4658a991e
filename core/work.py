"""Units of work run side by side: training jobs and stage calls in worker processes.

A `Unit` is either a training job (`kind` + `config`: its own process and folder, see
`core.train.jobs`) or a call `stage(Store(path), **kwargs)` of a module-level function (a stage of
`core.stages`) in a worker process; a Store does not cross processes, so the worker opens the same
file. `run_units` starts the units in list order as their `deps` allow, at most `parallel` at a
time (jobs and calls counted together; on a CPU machine each gets one torch thread), says when
each starts and ends through a `Reporter` and adds its wall time to the reporter's timing of its
stage, the first word of its name (`train`, `eval`, `explore`). The first failure stops the rest
(running training jobs are stopped) and is raised naming its unit.

While units run, the reporter keeps a live line of them (`Reporter.live`): a training job's step
of its steps, its rate and time left (from the job's status.json), a stage call's time so far. On
a terminal that line is rewritten in place; in a log it is written as a plain line whenever
nothing else was said for `LIVE_EVERY_S` seconds, so the console is never silent for longer.
Between units (a stage in this process: models, demonstrations, trees, MCTS, pairs) a printing
reporter's heartbeat thread keeps that line on what was said last and how long ago, until the
reporter reaches fraction 1 or is gone.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import reuse as reuse_records
from core.console import plural
from core.errors import UserError
from core.store import Store
from core.train import job_alive, job_log_tail, job_status, start_job, stop_job, sync_job

Progress = Callable[[float, str], None]  # (fraction of the whole done, what happens now)
POLL_S = 0.5  # how often running units are checked
LIVE_EVERY_S = 8.0  # a log (not a terminal) never stays silent 10 s (polls and beats add up to 1 s)
BEAT_S = 0.5  # the heartbeat's period; it speaks when nothing updated the live line for 2 periods


class Reporter:
    """Stage timings plus progress lines (to a callback, stderr, or nowhere)."""

    def __init__(self, progress: Progress | bool | None) -> None:
        self.callback = progress if callable(progress) else None
        self.echo = progress is True
        self.timings: dict[str, float] = {}
        self.t0 = time.monotonic()
        self.fraction = 0.0
        self.tty = self.echo and sys.stderr is not None and sys.stderr.isatty()
        self._shown = False  # a live line is on the terminal's last line
        self._said = self.t0  # when a line was last written
        self._last, self._last_at, self._live_at = "", self.t0, self.t0  # the last said text; live's last call
        self._lock = threading.Lock()  # the heartbeat writes too
        if self.echo:
            threading.Thread(target=Reporter._beat, args=(weakref.ref(self),), daemon=True).start()

    def say(self, fraction: float | None, text: str) -> None:
        """Report `text`; `fraction` of the whole done (None: unchanged)."""
        if fraction is not None:
            self.fraction = min(max(fraction, 0.0), 1.0)
        if self.callback is not None:
            self.callback(self.fraction, text)
        if self.echo:
            with self._lock:
                self._end_live()
                print(f"[{time.monotonic() - self.t0:7.1f}s] {text}", file=sys.stderr, flush=True)
                self._said = self._last_at = self._live_at = time.monotonic()
                self._last = text

    def live(self, text: str, *, beat: bool = False) -> None:
        """Show what runs now: on a terminal one line rewritten in place (cut to its width), in a
        log a plain line when nothing was written for LIVE_EVERY_S seconds."""
        if not self.echo or not text:
            return
        with self._lock:
            now = time.monotonic()
            if not beat:
                self._live_at = now
            line = f"[{now - self.t0:7.1f}s] {text}"
            if self.tty:
                width = shutil.get_terminal_size((100, 20)).columns - 1
                sys.stderr.write("\r\033[K" + line[:width])
                sys.stderr.flush()
                self._shown = True
            elif now - self._said >= LIVE_EVERY_S:
                print(line, file=sys.stderr, flush=True)
                self._said = now

    def end_live(self) -> None:
        """Take the live line off the terminal (nothing runs any more, or a line of its own follows)."""
        with self._lock:
            self._end_live()

    def _end_live(self) -> None:
        if self._shown:
            sys.stderr.write("\r\033[K")
            self._shown = False

    @staticmethod
    def _beat(ref: weakref.ref[Reporter]) -> None:
        """The heartbeat thread (holding no reference between beats, so a reporter that is gone
        ends it): while nothing else keeps the live line, it shows the last said text and its age."""
        while True:
            time.sleep(BEAT_S)
            rep = ref()
            if rep is None or rep.fraction >= 1.0:
                return
            now = time.monotonic()
            if rep._last and now - rep._live_at >= 2 * BEAT_S:
                rep.live(f"{rep._last} · {now - rep._last_at:.0f}s", beat=True)
            del rep

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


def running_text(name: str, since: float, status: dict[str, Any] | None = None) -> str:
    """One running unit in the live line: a training job's `train TreeDPO 40/60 steps (2.5
    steps/s, 0m08s left)` from its status (step, max_steps, the trainer's eta_s), else `name 12s`."""
    total = (status or {}).get("max_steps")
    if not total:
        return f"{name} {time.monotonic() - since:.0f}s"
    step, eta = status.get("step") or 0, status.get("eta_s")
    text = f"{name} {step}/{total} steps"
    if isinstance(eta, int | float) and eta > 0 and step < total:
        text += f" ({(total - step) / eta:.2g} steps/s, {int(eta) // 60}m{int(eta) % 60:02d}s left)"
    return text


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

    parallel = max(1, parallel)
    pending, running, done = list(units), {}, {}
    looked: set[str] = set()  # units already looked up in the reuse records (a miss stays a miss)
    pool = ProcessPoolExecutor(max_workers=parallel, mp_context=mp.get_context("spawn"), initializer=_worker_init)
    try:
        while pending or running:
            reused = False
            for u in [u for u in pending if all(d in done for d in u.deps)]:
                if reuse and u.name not in looked and (earlier := reuse_records.lookup(u, store)) is not None:
                    pending.remove(u)
                    u.result, done[u.name], reused = earlier, u, True
                    rep.say(None, f"reuse {u.name}: identical inputs already gave {earlier}")
                    continue
                looked.add(u.name)
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
            live = []
            for name, (u, handle, t0) in list(running.items()):
                if u.kind:
                    status = job_status(handle)
                    if status["status"] in ("queued", "running") or job_alive(handle):
                        live.append(running_text(name, t0, status))
                        continue
                    sync_job(store, handle)
                    if status["status"] != "succeeded":
                        raise UnitFailed(f"training job {handle} ({u.name}) {status['status']}: "
                                         f"{status.get('error')}\n{job_log_tail(handle, 20)}", u.name, done)
                    u.result = Path(status["output_path"])
                else:
                    if not handle.done():
                        live.append(running_text(name, t0))
                        continue
                    u.result = _outcome(u, handle, done)
                del running[name]
                done[name] = u
                reuse_records.record(u, store)
                rep.timed(name.split(" ")[0], t0)
                rep.say(None, f"done {u.name} in {time.monotonic() - t0:.0f}s")
            rep.live(" · ".join(live))
    finally:
        rep.end_live()
        for u, handle, _ in running.values():
            if u.kind:
                stop_job(handle, store, grace=5.0)
        pool.shutdown(wait=True, cancel_futures=True)
    return done
