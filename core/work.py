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
of its steps, its rate and time left (from the job's status.json), a collecting stage call's
episodes of its episodes, rate and time left (a stage that takes `progress` is given an
`EpisodeCount`, which writes them to a file that the poll reads), another call's time so far; with
a reporter's `clock` (`core.run_clock.RunClock`, the pipeline's), the whole run's ETA after them. On
a terminal that line is rewritten in place; in a log it is written as a plain line whenever
nothing else was said for `LIVE_EVERY_S` seconds, so the console is never silent for longer.
Between units (a stage in this process: models, demonstrations, trees, MCTS, pairs) a printing
reporter's heartbeat thread keeps that line on what was said last and how long ago (and the run's ETA),
until the reporter reaches fraction 1 or is gone. A reporter with a callback gets the live line
too, at most every `CALLBACK_EVERY_S` seconds (the dashboard's fill job shows it).
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import sys
import tempfile
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
from core.eta import duration_text
from core.store import Store
from core.train import job_alive, job_log_tail, job_status, start_job, stop_job, sync_job

Progress = Callable[[float, str], None]  # (fraction of the whole done, what happens now)
POLL_S = 0.5  # how often running units are checked
LIVE_EVERY_S = 8.0  # a log (not a terminal) never stays silent 10 s (polls and beats add up to 1 s)
BEAT_S = 0.5  # the heartbeat's period; it speaks when nothing updated the live line for 2 periods
FIRST_EPISODES = 20  # episodes counted before a collecting call's rate is shown and used
CALLBACK_EVERY_S = 1.0  # how often a callback gets the live line (the dashboard refreshes every second)


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
        self._called = self.t0  # when the callback last got the live line
        self.clock: Any = None  # a whole-run prediction (core.run_clock.RunClock) that run_units feeds
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
        if not text:
            return
        now = time.monotonic()
        if self.callback is not None and now - self._called >= CALLBACK_EVERY_S:
            self._called = now
            self.callback(self.fraction, text)
        if not self.echo:
            return
        with self._lock:
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
                eta = rep.clock.eta_now(now) if rep.clock is not None else ""
                rep.live(f"{rep._last} · {now - rep._last_at:.0f}s" + (f" · {eta}" if eta else ""), beat=True)
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


@dataclass
class EpisodeCount:
    """A stage's `progress` in a worker process (picklable): called with (episodes done, of
    total), it writes them, the time and the count of its first call, to the JSON file `path`
    (at most every `every_s` seconds, and the last episode)."""

    path: str
    every_s: float = 0.5
    first: tuple[float, int] | None = None
    written: float = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.time()
        if self.first is None:
            self.first = (now, done)
        elif done < total and now - self.written < self.every_s:
            return
        self.written = now
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as fh:
            json.dump({"done": done, "total": total, "t0": self.first[0], "done0": self.first[1], "t": now}, fh)
        os.replace(tmp, self.path)  # the poll never reads half a file


def read_count(path: str | Path) -> dict[str, Any] | None:
    """What an `EpisodeCount` wrote last, with `each_s` (seconds per episode since its first
    call, see `_each`), else None."""
    try:
        count = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    count["each_s"] = _each(count["t0"], count["done0"], count["t"], count["done"], count["total"])
    return count


def _each(t0: float, done0: int, t: float, done: int, total: int) -> float | None:
    """Seconds per episode from (t0, done0) to (t, done); None before `FIRST_EPISODES` of them
    ended (or all): episodes run in lockstep batches, so the first few end in a burst or alone."""
    n = done - done0
    return (t - t0) / n if n > 0 and n >= min(FIRST_EPISODES, total - done0) else None


class LiveCount:
    """A collecting stage's `progress` in this process: the reporter's live line shows its
    episodes (`episodes_text`; the dashboard's fill job shows that line too)."""

    def __init__(self, rep: Reporter, name: str) -> None:
        self.rep, self.name = rep, name
        self.first: tuple[float, int] | None = None

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        self.first = self.first or (now, done)
        self.rep.live(episodes_text(self.name, done, total, _each(*self.first, now, done, total)))


def episodes_text(name: str, done: int, total: int, each_s: float | None) -> str:
    """`explore 340/800 episodes, 12.3/s, ETA 39 s` (the rate and ETA once measured)."""
    text = f"{name} {done}/{plural(total, 'episode')}"
    if each_s:
        text += f", {1 / each_s:.3g}/s, ETA {duration_text((total - done) * each_s)}"
    return text


def running_text(name: str, since: float, status: dict[str, Any] | None = None,
                 count: dict[str, Any] | None = None) -> str:
    """One running unit in the live line: a training job's `train TreeDPO 40/60 steps (2.5
    steps/s, 0m08s left)` from its status (step, max_steps, the trainer's eta_s), a collecting
    call's episodes from its `read_count`, else `name 12s`."""
    if count:
        return episodes_text(name, count["done"], count["total"], count["each_s"])
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


def _counted(u: Unit, folder: str) -> tuple[dict[str, Any], str | None]:
    """A call's kwargs with an `EpisodeCount` as its `progress` when its stage takes one (a
    collecting stage), and the count's file."""
    if "progress" in u.kwargs or "progress" not in inspect.signature(u.stage).parameters:
        return u.kwargs, None
    fd, path = tempfile.mkstemp(suffix=".json", dir=folder)  # empty until the first count: read as none
    os.close(fd)
    return {**u.kwargs, "progress": EpisodeCount(path)}, path


def _outcome(unit: Unit, future: Any, done: dict[str, Unit]) -> Any:
    """A finished call's result; its error raised naming the unit (a UserError stays one: bad
    input found inside a unit still reaches the user as one line)."""
    try:
        return future.result()
    except UserError as exc:
        raise UserError(f"{unit.name}: {exc}") from exc
    except Exception as exc:
        raise UnitFailed(f"{unit.name} failed: {type(exc).__name__}: {exc}", unit.name, done) from exc


def _clock_job(clock: Any, name: str, status: dict[str, Any], t0: float) -> None:
    """A running training job's step, steps and seconds per step (from the trainer's ETA) to the
    reporter's clock."""
    if clock is None:
        return
    step, total, eta = status.get("step") or 0, status.get("max_steps"), status.get("eta_s")
    each = eta / (total - step) if step and total and total > step and isinstance(eta, int | float) and eta > 0 else None
    clock.update(name, step, total, each, time.monotonic() - t0)


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
    counts = tempfile.mkdtemp(prefix="w2stree-counts-")  # the episode counts of running calls
    clock = rep.clock
    if clock is not None:
        clock.begin(units, parallel)
    pool = ProcessPoolExecutor(max_workers=parallel, mp_context=mp.get_context("spawn"), initializer=_worker_init)
    try:
        while pending or running:
            reused = False
            for u in [u for u in pending if all(d in done for d in u.deps)]:
                if reuse and u.name not in looked and (earlier := reuse_records.lookup(u, store)) is not None:
                    pending.remove(u)
                    u.result, done[u.name], reused = earlier, u, True
                    rep.say(None, f"reuse {u.name}: identical inputs already gave {earlier}")
                    if clock is not None:
                        clock.finish(u.name)
                    continue
                looked.add(u.name)
                if len(running) >= parallel:
                    break
                pending.remove(u)
                if u.kind:
                    handle: Any = start_job(u.kind, u.config, store, detach=True)
                    rep.say(None, f"start {u.name} ({u.kind}, {plural(u.n_examples, 'example')}, job {handle})")
                else:
                    kwargs, count_file = _counted(u, counts)
                    handle = (pool.submit(_call, str(store.path), u.stage, kwargs), count_file)
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
                        _clock_job(clock, name, status, t0)
                        continue
                    sync_job(store, handle)
                    if status["status"] != "succeeded":
                        raise UnitFailed(f"training job {handle} ({u.name}) {status['status']}: "
                                         f"{status.get('error')}\n{job_log_tail(handle, 20)}", u.name, done)
                    u.result = Path(status["output_path"])
                else:
                    future, count_file = handle
                    if not future.done():
                        count = read_count(count_file) if count_file else None
                        live.append(running_text(name, t0, count=count))
                        if clock is not None and count:
                            clock.update(name, count["done"], count["total"], count["each_s"], time.monotonic() - t0)
                        continue
                    u.result = _outcome(u, future, done)
                del running[name]
                done[name] = u
                reuse_records.record(u, store)
                rep.timed(name.split(" ")[0], t0)
                rep.say(None, f"done {u.name} in {time.monotonic() - t0:.0f}s")
                if clock is not None:
                    clock.finish(name, time.monotonic() - t0)
            if clock is not None:
                if (line := clock.announce()) is not None:
                    rep.say(None, line)
                live.append(clock.text())
            rep.live(" · ".join(t for t in live if t))
    finally:
        shutil.rmtree(counts, ignore_errors=True)
        rep.end_live()
        for u, handle, _ in running.values():
            if u.kind:
                stop_job(handle, store, grace=5.0)
        pool.shutdown(wait=True, cancel_futures=True)
    return done
