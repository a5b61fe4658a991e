"""The pipeline's whole-run prediction: its plan as `core.eta` phases, fed with the rates that its
own units show while they run (`core.work.run_units` calls a reporter's `clock`).

The plan mirrors `core.pipeline.SeedRun`: per seed, one phase with the SFT baselines, the
exploration and their evaluations, then per K one phase with the strong trainings (longest first)
and their evaluations. A training is `max_steps` steps (or its epochs over the rows it is given, a
guess before the pairs exist) of `batch_size x grad_accum` rows; an exploration is tasks x K
episodes, an evaluation one episode per test task. As each phase starts its plan is replaced by
its real units.

Kinds of work: `<trainer>:<weak|strong>` for training rows (the model it starts from),
`explore:weak` (the SFT-weak model sampling) or `explore:policy` (a scripted explorer),
`eval:weak` and `eval:strong` for evaluation episodes. `PRIORS` are their seconds on this
project's reference machine (2 shared CPU cores, one torch thread per unit, two units side by
side: run 11's seed 2, docs/experiments.md); `OVERHEADS` the seconds a unit takes to start and
end, and the work in this process after each phase (the quick scale's, on the same machine). The first rates measured scale every kind not
yet measured (`core.eta.Rates.factor`), so the first full prediction comes with the first
training steps.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.eta import Forecast, Item, Phase, Rates, duration_text
from core.methods import BASELINES, BY_NAME, training_order
from core.scales import Scale, budget
from core.train import make_config

if TYPE_CHECKING:
    from core.work import Unit

PRIORS: dict[str, float] = {  # seconds per training row / episode on the reference machine
    "sft:weak": 0.0175, "sft:strong": 0.034, "mcts:strong": 0.038, "treedpo:strong": 0.074,
    # whole-trajectory pairs: 24x an SFT-strong row in run 11, 14.5x in the tiny run of 2026-12-07
    # (README, Benchmarks); their geometric mean, 19x
    "eto-dpo:strong": 0.64,
    "explore:weak": 0.25, "explore:policy": 0.03, "eval:weak": 0.18, "eval:strong": 0.22,
}
# seconds to start and end a unit, by stage; "phase": the work in this process after a phase (results, trees)
FIRST_STEPS = 5  # the steps of every running training measured before the first full prediction
OVERHEADS: dict[str, float] = {"train": 9.0, "eval": 5.0, "explore": 2.0, "phase": 3.0}


def model_size(method: str) -> str:
    """`weak` for a method that trains the weak base model, else `strong`."""
    m = BY_NAME.get(method)
    return "weak" if m is not None and m.start == "weak" else "strong"


def train_item(name: str, trainer: str, config: Any, n_rows: int, deps: tuple[str, ...] = ()) -> Item:
    """A training of `config` on `n_rows` rows: its steps (`max_steps`, else epochs of batches)
    of `batch_size x grad_accum` rows."""
    per = config.batch_size * max(config.grad_accum, 1)
    steps = config.max_steps if config.max_steps > 0 else math.ceil(config.epochs * math.ceil(max(n_rows, 1) / per))
    return Item(name, f"{trainer}:{model_size(name.removeprefix('train '))}", steps, per, deps)


def call_item(name: str, n_episodes: int, explorer: str, deps: tuple[str, ...] = ()) -> Item:
    """An exploration or evaluation of `n_episodes` episodes (`explorer`: the scale's scripted
    explorer, "" for the SFT-weak model)."""
    if name == "explore":
        return Item(name, "explore:policy" if explorer else "explore:weak", n_episodes, deps=deps)
    return Item(name, f"eval:{model_size(name.removeprefix('eval '))}", n_episodes, deps=deps)


def plan(cfg: Scale, n_seeds: int, ks: Sequence[int], n_demos: int, n_explore: int, n_test: int) -> list[Phase]:
    """The phases of a pipeline run (module docstring)."""
    def train(m: Any, rows: int, deps: tuple[str, ...] = ()) -> Item:
        return train_item(f"train {m.name}", m.trainer, make_config(m.trainer, cfg.train_preset, **budget(cfg, m)),
                          rows, deps)

    def evaluate(m: Any) -> Item:
        return call_item(f"eval {m.name}", n_test, cfg.explorer, (f"train {m.name}",))

    first = [m for m in BASELINES if m.start in ("weak", "strong")]
    later = [m for m in BASELINES if m not in first]
    baselines = Phase((*(train(m, n_demos) for m in first),
                       call_item("explore", n_explore * max(ks), cfg.explorer, ("train SFT-weak",)),
                       *map(evaluate, first),
                       *(i for m in later for i in (train(m, n_demos, (f"train {m.start}",)), evaluate(m)))),
                      cfg.parallel)
    phases = []
    for _ in range(n_seeds):
        phases.append(baselines)
        for k in ks:  # the strong methods' rows are known once the trees are cut: a guess until then
            rows = min(cfg.max_pairs or n_explore * k, max(n_explore * k // 2, 1))
            order = training_order()
            phases.append(Phase((*(train(m, rows) for m in order), *map(evaluate, order)), cfg.parallel))
    return phases


class RunClock:
    """A pipeline run's prediction as its units run (`core.work.Reporter.clock`)."""

    def __init__(self, cfg: Scale, phases: list[Phase], now: float | None = None) -> None:
        self.explorer = cfg.explorer
        self.forecast = Forecast(phases, Rates(PRIORS, OVERHEADS))
        self.t0 = time.monotonic() if now is None else now
        self.items: dict[str, Item] = {}
        self.ends: dict[str, list[float]] = {}  # per stage: seconds beyond their work of the units that ended
        self.first: tuple[float, float] | None = None  # the first full prediction: (when, whole run's seconds)
        self.last: tuple[float, float] | None = None  # the latest: (when, seconds left)

    def item(self, unit: Unit) -> Item:
        """A unit of `core.work` as the plan's item."""
        if unit.kind:
            return train_item(unit.name, unit.kind, unit.config, unit.n_examples, unit.deps)
        kw = unit.kwargs
        return call_item(unit.name, len(kw.get("task_ids") or ()) * len(kw.get("schedule") or (None,)),
                         self.explorer, unit.deps)

    def begin(self, units: Sequence[Unit], parallel: int) -> None:
        """A `run_units` call starts: the next phase, as these units."""
        items = tuple(map(self.item, units))
        self.items = {i.name: i for i in items}
        self.forecast.begin(Phase(items, parallel))

    def update(self, name: str, done: float, total: float | None, seconds_each: float | None, elapsed: float) -> None:
        """Unit `name` has done `done` of `total` steps or episodes after `elapsed` seconds, at
        `seconds_each` per step or episode (None: not measured yet)."""
        item = self.items.get(name)
        if item is None:
            return
        if total and total != item.amount:  # the trainer's own step count
            item = self.items[name] = dataclasses.replace(item, amount=total)
            self.forecast.resize(name, total)
        rates = self.forecast.rates
        if seconds_each:
            rates.measured[item.kind] = seconds_each / item.per
            if done and item.stage not in self.ends:  # its start, until a unit of its stage has ended
                rates.measured_overheads[item.stage] = max(elapsed - done * seconds_each, 0.0)
        self.forecast.update(name, done, elapsed)

    def finish(self, name: str, wall: float | None = None) -> None:
        """Unit `name` ended after `wall` seconds (None: reused, it did not run)."""
        item = self.items.get(name)
        rates = self.forecast.rates
        if item is not None and wall is not None and item.kind in rates.measured:
            self.ends.setdefault(item.stage, []).append(max(wall - item.amount * item.per * rates.measured[item.kind], 0))
            rates.measured_overheads[item.stage] = sum(self.ends[item.stage]) / len(self.ends[item.stage])
        self.forecast.finish(name)

    def calibrated(self) -> bool:
        """Whether the prediction rests on this machine: a rate measured, and every training
        that runs now past its first `FIRST_STEPS` steps (half of them if it has fewer: the
        first steps are slower), its rate measured."""
        rates, progress = self.forecast.rates, self.forecast.progress
        trainings = [(self.items[n], done) for n, (done, _) in progress.items() if self.items[n].stage == "train"]
        return rates.factor() is not None and all(
            i.kind in rates.measured and done >= min(FIRST_STEPS, math.ceil(i.amount / 2)) for i, done in trainings)

    def text(self, now: float | None = None) -> str:
        """`run ETA 12m30s` (the seconds left of the whole run) from the first full prediction
        on, else ""."""
        now = time.monotonic() if now is None else now
        if self.first is None:
            return ""
        left = self.forecast.left()
        self.last = (now, left)
        return f"run ETA {duration_text(left)}"

    def announce(self, now: float | None = None) -> str | None:
        """The first full prediction's line, once (None before it and after it)."""
        now = time.monotonic() if now is None else now
        if self.first is not None or not self.calibrated():
            return None
        left = self.forecast.left()
        self.first, self.last = (now - self.t0, now - self.t0 + left), (now, left)
        rates = self.forecast.rates
        seen = ", ".join(f"{k} {v * 1000:.1f} ms/{'episode' if k.split(':')[0] in ('eval', 'explore') else 'row'}"
                         for k, v in sorted(rates.measured.items()))
        return (f"predicted: the whole run takes about {duration_text(self.first[1])} on this machine "
                f"(ETA {duration_text(left)}; measured {seen}; other work at {rates.factor():.2f}x "
                "the reference machine's time)")

    def eta_now(self, now: float | None = None) -> str:
        """The latest prediction counted down to `now` (for lines between units), else ""."""
        if self.last is None:
            return ""
        now = time.monotonic() if now is None else now
        return f"run ETA {duration_text(self.last[1] - (now - self.last[0]))}"

    def verdict(self, wall: float) -> str:
        """How the first full prediction compares with the run's `wall` seconds."""
        if self.first is None:
            return ""
        at, predicted = self.first
        return (f"; predicted {duration_text(predicted)} at {at:.0f}s, "
                f"{(predicted - wall) / wall * 100:+.0f} % of the measured {duration_text(wall)}")
