"""How long the rest of a run takes, predicted from rates measured on this machine.

A run is a list of `Phase`s, each a list of `Item`s (units of `core.work`) run side by side, at most
`parallel` at a time, in list order as their dependencies allow: `makespan` replays that schedule.
An item is `amount` of one kind of work (training steps of `per` rows each, or episodes); `Rates`
holds the seconds one row or episode of each kind takes on a reference machine (`priors`) and on
this one (`measured`, from the run's own first steps and episodes), plus the seconds an item takes
to start (a process, a model load) by stage (the first word of its name: train, eval, explore),
and after each phase (`phase`: work between the phases, in the caller's process).
A kind not measured yet costs its prior times the machine factor: the geometric mean of
measured / prior over the kinds measured so far. `Forecast` follows a run through its phases and
says the seconds left.

Pure: no clock and no I/O; the caller passes the elapsed times in (`core.run_clock` does, for the
pipeline).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Item:
    """One unit of work: `amount` steps (of `per` rows each) or episodes of `kind`."""

    name: str  # the unit's name; its first word is its stage (train, eval, explore)
    kind: str  # what its rate is measured in, e.g. "sft:weak", "eval:strong"
    amount: float  # training steps, or episodes
    per: float = 1.0  # rows per step (a rate is per row, so that batch sizes may differ)
    deps: tuple[str, ...] = ()

    @property
    def stage(self) -> str:
        return self.name.split(" ")[0]


@dataclass(frozen=True)
class Phase:
    """Items run side by side, at most `parallel` at a time (one `core.work.run_units` call)."""

    items: tuple[Item, ...]
    parallel: int = 1


@dataclass
class Rates:
    """Seconds per row or episode by kind, and seconds to start an item by stage: the reference
    machine's (`priors`, `overheads`) and this machine's (`measured`, `measured_overheads`)."""

    priors: Mapping[str, float]
    overheads: Mapping[str, float]
    measured: dict[str, float] = field(default_factory=dict)
    measured_overheads: dict[str, float] = field(default_factory=dict)

    def factor(self) -> float | None:
        """This machine's time over the reference's: the geometric mean of measured / prior over
        the measured kinds (None before any)."""
        ratios = [v / self.priors[k] for k, v in self.measured.items() if k in self.priors and v > 0]
        return math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None

    def per(self, kind: str) -> float:
        """Seconds per row (or episode) of `kind`: measured, else the prior times the factor."""
        if kind in self.measured:
            return self.measured[kind]
        return self.priors[kind] * (self.factor() or 1.0)

    def overhead(self, stage: str) -> float:
        """Seconds an item of `stage` takes beyond its rows or episodes."""
        if stage in self.measured_overheads:
            return self.measured_overheads[stage]
        return self.overheads.get(stage, 0.0) * (self.factor() or 1.0)

    def left(self, item: Item, done: float = 0.0, elapsed: float = 0.0) -> float:
        """Seconds until `item` ends, `done` of its amount done after `elapsed` seconds (its start
        counts only while nothing is done)."""
        work = max(item.amount - done, 0.0) * item.per * self.per(item.kind)
        return work + (0.0 if done > 0 else max(self.overhead(item.stage) - elapsed, 0.0))


def makespan(items: Sequence[Item], parallel: int, cost: Callable[[Item], float],
             running: Mapping[str, float] | None = None, done: Collection[str] = ()) -> float:
    """Seconds until the last of `items` ends, run as `core.work.run_units` runs units: in list
    order as their dependencies allow (one on a name outside `items` counts as met), at most
    `parallel` at a time, each taking `cost(item)`; those in `running` end after their given
    seconds, those in `done` are over."""
    names = {i.name for i in items}
    finished = set(done)
    ends = dict(running or {})  # name -> when it ends
    pending = [i for i in items if i.name not in finished and i.name not in ends]
    now = 0.0
    while pending or ends:
        for item in [i for i in pending if all(d in finished or d not in names for d in i.deps)]:
            if len(ends) >= max(parallel, 1):
                break
            pending.remove(item)
            ends[item.name] = now + cost(item)
        if not ends:
            raise ValueError(f"items wait on circular dependencies: {[i.name for i in pending]}")
        name = min(ends, key=lambda n: ends[n])
        now = ends.pop(name)
        finished.add(name)
    return now


@dataclass
class Forecast:
    """A run's phases and where it stands: `begin` the next phase (with its items as they really
    are), report items' progress with `update` and their ends with `finish`; `left` is the
    seconds until the whole run ends."""

    phases: list[Phase]
    rates: Rates
    current: int = -1  # the phase running now (-1: none yet)
    progress: dict[str, tuple[float, float]] = field(default_factory=dict)  # running: (done, elapsed)
    finished: set[str] = field(default_factory=set)

    def begin(self, phase: Phase) -> None:
        """The next phase starts, made of `phase` (replacing the planned one)."""
        self.current += 1
        if self.current < len(self.phases):
            self.phases[self.current] = phase
        else:  # more phases than planned: counted from now on
            self.phases.append(phase)
        self.progress.clear()
        self.finished.clear()

    def update(self, name: str, done: float, elapsed: float) -> None:
        """Item `name` of the current phase runs: `done` of its amount after `elapsed` seconds."""
        self.progress[name] = (done, elapsed)

    def resize(self, name: str, amount: float) -> None:
        """Item `name` of the current phase turns out to be `amount` steps or episodes."""
        phase = self.phases[self.current]
        self.phases[self.current] = Phase(tuple(dataclasses.replace(i, amount=amount) if i.name == name else i
                                                for i in phase.items), phase.parallel)

    def finish(self, name: str) -> None:
        """Item `name` of the current phase is over (ran, or was reused)."""
        self.progress.pop(name, None)
        self.finished.add(name)

    def left(self) -> float:
        """Seconds until the run ends: the current phase's rest, then every later phase (each
        followed by the `phase` overhead)."""
        total = self.rates.overhead("phase") * max(len(self.phases) - max(self.current, 0), 0)
        if 0 <= self.current < len(self.phases):
            phase = self.phases[self.current]
            by_name = {i.name: i for i in phase.items}
            running = {n: self.rates.left(by_name[n], d, e) for n, (d, e) in self.progress.items() if n in by_name}
            total += makespan(phase.items, phase.parallel, self.rates.left, running, self.finished)
        return total + sum(makespan(p.items, p.parallel, self.rates.left) for p in self.phases[self.current + 1:])


def duration_text(seconds: float) -> str:
    """`45 s`, `12m05s`, `1h02m`: a duration as the progress line shows it."""
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
