"""The whole-run prediction (core.eta, core.run_clock): rates scaled by the machine factor, the
schedule run_units follows, a run followed through its phases, the pipeline's plan, all on
hand-computed figures; and the live line of real units in worker processes showing episode counts
and the run's ETA."""

from __future__ import annotations

import math
import re
import time

import pytest

from core.eta import Forecast, Item, Phase, Rates, duration_text, makespan
from core.pipeline import SCALES
from core.run_clock import RunClock, plan
from core.work import Reporter, Unit, run_units


def test_a_kind_not_measured_costs_its_prior_times_the_machine_factor():
    rates = Rates({"sft:weak": 0.01, "sft:strong": 0.02, "eval:strong": 0.5}, {"train": 10.0})
    assert rates.factor() is None and rates.per("eval:strong") == 0.5  # nothing measured: the priors
    rates.measured["sft:weak"] = 0.02  # this machine: 2x the reference on one kind
    assert rates.factor() == pytest.approx(2.0)
    assert rates.per("eval:strong") == pytest.approx(1.0) and rates.overhead("train") == pytest.approx(20.0)
    rates.measured["sft:strong"] = 0.16  # 8x on another: the geometric mean, 4x
    assert rates.factor() == pytest.approx(4.0)
    assert rates.per("sft:strong") == 0.16 and rates.per("eval:strong") == pytest.approx(2.0)
    rates.measured_overheads["train"] = 3.0
    assert rates.overhead("train") == 3.0 and rates.overhead("eval") == 0.0


def test_an_items_seconds_left():
    rates = Rates({"sft:weak": 0.5}, {"train": 5.0})
    item = Item("train SFT-weak", "sft:weak", amount=10, per=4)  # 10 steps of 4 rows at 0.5 s a row
    assert rates.left(item) == 5.0 + 10 * 4 * 0.5  # its start, then 20 s of steps
    assert rates.left(item, done=0, elapsed=3.0) == 2.0 + 20.0  # starting for 3 s already
    assert rates.left(item, done=4, elapsed=30.0) == 6 * 4 * 0.5  # steps done: no start left
    assert rates.left(item, done=12, elapsed=60.0) == 0.0


def _items(*spec):
    return [Item(name, "k", seconds, deps=tuple(deps)) for name, seconds, deps in spec]


def test_the_schedule_is_run_units_list_order_with_dependencies():
    cost = lambda i: i.amount  # noqa: E731 - each item's seconds are its amount
    a, b, c = _items(("a", 10, ()), ("b", 20, ()), ("c", 5, ("a",)))
    assert makespan([a, b, c], 2, cost) == 20  # a 0-10, b 0-20, c 10-15
    assert makespan([a, b, c], 1, cost) == 35
    # the pipeline's first phase: SFT-weak (5), SFT-strong (20), the exploration after SFT-weak (10),
    # the evaluations (1 each). When SFT-weak ends, exploration takes the free slot and the
    # evaluation of SFT-weak, later in the list, waits for one: 0-5 weak, 5-15 explore, 15-16
    # eval weak, strong ends at 20, 20-21 eval strong
    phase = _items(("train W", 5, ()), ("train S", 20, ()), ("explore", 10, ("train W",)),
                   ("eval W", 1, ("train W",)), ("eval S", 1, ("train S",)))
    assert makespan(phase, 2, cost) == 21
    # while running: S has 7 s left, W and the exploration are done; a dependency outside the
    # list counts as met
    assert makespan(phase, 2, cost, running={"train S": 7}, done={"train W", "explore"}) == 8
    assert makespan(_items(("x", 3, ("gone",))), 1, cost) == 3
    with pytest.raises(ValueError, match="circular"):
        makespan(_items(("x", 1, ("y",)), ("y", 1, ("x",))), 2, cost)


def test_a_forecast_follows_the_run_through_its_phases():
    rates = Rates({"k": 1.0}, {"phase": 0.0})
    planned = [Phase(tuple(_items(("a", 10, ()), ("b", 20, ()))), 2), Phase(tuple(_items(("c", 30, ()))), 1)]
    fc = Forecast(list(planned), rates)
    assert fc.left() == 20 + 30  # nothing started: every phase
    fc.begin(Phase(tuple(_items(("a", 10, ()), ("b", 40, ()))), 2))  # as it really is: b is longer
    fc.update("b", 10, 12.0)
    assert fc.left() == 30 + 30  # b's 30 left (a runs beside it), then c
    fc.resize("a", 50)  # a turns out to be 50 long (its trainer's own step count)
    assert fc.left() == 50 + 30
    fc.finish("a")
    rates.measured["k"] = 2.0  # this machine is twice as slow as measured so far
    assert fc.left() == 60 + 60
    fc.begin(Phase(tuple(_items(("c", 30, ()))), 1))
    fc.finish("c")
    assert fc.left() == 0
    fc.begin(Phase(tuple(_items(("d", 1, ()))), 1))  # one more phase than planned: counted
    assert fc.left() == 2


def test_durations_as_the_line_shows_them():
    assert [duration_text(s) for s in (0, 44.6, 60, 725, 3600, 3725, -5)] == \
        ["0 s", "45 s", "1m00s", "12m05s", "1h00m", "1h02m", "0 s"]


def test_the_pipeline_plan_of_the_tiny_scale():
    cfg = SCALES["tiny"]
    phases = plan(cfg, n_seeds=2, ks=[4], n_demos=3000, n_explore=750, n_test=200)
    assert len(phases) == 4  # per seed: the baselines with exploration, then the strong methods
    first = {i.name: i for i in phases[0].items}
    assert list(first) == ["train SFT-weak", "train SFT-strong", "explore", "eval SFT-weak", "eval SFT-strong",
                           "train SFT-continued", "eval SFT-continued"]  # the order SeedRun lists its units
    assert (first["train SFT-weak"].kind, first["train SFT-weak"].amount, first["train SFT-weak"].per) == \
        ("sft:weak", 800, 32)
    assert (first["train SFT-strong"].kind, first["train SFT-strong"].amount) == ("sft:strong", 1000)
    assert (first["explore"].kind, first["explore"].amount, first["explore"].deps) == \
        ("explore:weak", 3000, ("train SFT-weak",))  # 750 tasks x K=4
    assert first["eval SFT-weak"].kind == "eval:weak" and first["eval SFT-strong"].kind == "eval:strong"
    assert first["train SFT-continued"].deps == ("train SFT-strong",) and first["train SFT-continued"].amount == 240
    strong = {i.name: i for i in phases[1].items}
    assert list(strong)[:4] == ["train TreeDPO", "train ETO-DPO", "train MCTS", "train W2S-SFT"]  # longest first
    assert (strong["train ETO-DPO"].kind, strong["train ETO-DPO"].amount, strong["train ETO-DPO"].per) == \
        ("eto-dpo:strong", 60, 16)
    assert phases[0].parallel == phases[1].parallel == 2

    # an epochs-trained scale: epochs x batches of the rows (quick: 1 epoch, batch 4, 6 demonstrations)
    quick = plan(SCALES["quick"], 1, [4], n_demos=6, n_explore=4, n_test=3)
    items = {i.name: i for i in quick[0].items}
    assert items["train SFT-weak"].amount == math.ceil(6 / 4) and items["explore"].kind == "explore:policy"


def test_the_clock_predicts_from_the_first_measured_steps():
    cfg = SCALES["tiny"]
    phases = [Phase((Item("train SFT-weak", "sft:weak", 100, 10), Item("train SFT-strong", "sft:strong", 100, 10),
                     Item("eval SFT-strong", "eval:strong", 50, deps=("train SFT-strong",))), 2)]
    clock = RunClock(cfg, phases, now=0.0)
    clock.forecast.rates = Rates({"sft:weak": 0.01, "sft:strong": 0.02, "eval:strong": 0.1}, {"train": 0, "eval": 0})
    units = [Unit("train SFT-weak", kind="sft", config=_config(100, 10), n_examples=999),
             Unit("train SFT-strong", kind="sft", config=_config(100, 10), n_examples=999),
             Unit("eval SFT-strong", stage=time.sleep, deps=("train SFT-strong",),
                  kwargs=dict(task_ids=[f"t{i}" for i in range(50)]))]
    clock.begin(units, 2)
    clock.update("train SFT-strong", 0, 100, None, elapsed=1.0)  # loading its model
    clock.update("train SFT-weak", 10, 100, 0.2, elapsed=2.0)  # 0.2 s/step = 0.02 s/row: 2x the prior
    assert clock.announce(now=10.0) is None  # SFT-strong has no rate yet: no full prediction
    assert clock.text(now=10.0) == ""
    clock.update("train SFT-strong", 4, 100, 0.8, elapsed=3.2)
    assert clock.announce(now=10.0) is None  # measured, but on fewer than FIRST_STEPS steps
    clock.update("train SFT-strong", 5, 100, 0.8, elapsed=4.0)  # 0.08 s/row: 4x; the factor is sqrt(8)
    # left: weak 90 x 0.2 = 18 s; strong 95 x 0.8 = 76 s, then its evaluation at the factor:
    # 50 x 0.1 x sqrt(8) = 14.14 s; the run so far 10 s
    line = clock.announce(now=10.0)
    assert line.startswith("predicted: the whole run takes about 1m40s on this machine (ETA 1m30s;")
    assert "sft:strong 80.0 ms/row, sft:weak 20.0 ms/row; other work at 2.83x" in line
    assert clock.first == pytest.approx((10.0, 10 + 76 + 50 * 0.1 * math.sqrt(8)))
    assert clock.announce(now=11.0) is None  # once
    assert clock.text(now=10.0) == "run ETA 1m30s"
    assert clock.eta_now(now=30.0) == "run ETA 1m10s"  # counted down between polls
    clock.finish("train SFT-weak", wall=25.0)  # 100 steps x 0.2 s = 20 s of work: 5 s to start and end
    assert clock.forecast.rates.measured_overheads["train"] == 5.0
    assert clock.verdict(wall=100.0).endswith("+0 % of the measured 1m40s")


def _config(max_steps: int, batch: int):
    from core.train import make_config

    return make_config("sft", "tiny", max_steps=max_steps, batch_size=batch, micro_batch=0, grad_accum=1)


def _collect(store, task_ids: list[str], progress=None) -> int:
    """A collecting stage: an episode every 0.1 s, counted through `progress` as collect does."""
    progress(0, len(task_ids))
    for i, _ in enumerate(task_ids, 1):
        time.sleep(0.1)
        progress(i, len(task_ids))
    return len(task_ids)


def test_the_live_line_shows_episodes_and_the_runs_eta(store, capsys, monkeypatch):
    import core.work

    monkeypatch.setattr(core.work, "LIVE_EVERY_S", 0.0)  # every poll writes the line
    rep = Reporter(True)
    tasks = [f"t{i}" for i in range(50)]
    rep.clock = RunClock(SCALES["quick"], [Phase((Item("explore", "explore:policy", 50),), 1)])
    done = run_units([Unit("explore", stage=_collect, kwargs=dict(task_ids=tasks))], store, parallel=1, rep=rep)
    assert done["explore"].result == 50
    lines = capsys.readouterr().err.splitlines()
    counted = [line for line in lines if " explore " in line and "/50 episodes" in line]
    assert counted, lines
    # e.g. "explore 25/50 episodes, 9.8/s, ETA 3 s · run ETA 3 s" (a rate once FIRST_EPISODES ended)
    assert any(re.search(r"\] explore \d+/50 episodes, [\d.]+/s, ETA \d+ s · run ETA \d+ s$", line)
               for line in counted), counted
    assert any("] predicted: the whole run takes about " in line and "explore:policy" in line for line in lines)


def test_a_collection_in_this_process_counts_its_episodes_to_the_callback(store, monkeypatch):
    """The dashboard's fill job: its reporter's callback (the job's status message) gets the live
    line, episodes counted by collect itself."""
    import core.work
    from core import stages
    from core.work import LiveCount

    monkeypatch.setattr(core.work, "CALLBACK_EVERY_S", 0.0)
    texts: list[str] = []
    rep = Reporter(lambda fraction, text: texts.append(text))
    ids = stages.split_tasks("shop", "train")[:3]
    stages.run_policy(store, "shop", "expert", ids, progress=LiveCount(rep, "exploration"))
    assert texts[0] == "exploration 0/3 episodes"  # before the first episode: no rate yet
    assert texts[-1].startswith("exploration 3/3 episodes, ") and texts[-1].endswith(", ETA 0 s")
    assert len(texts) == 4 and len(store.trajectory_index(model="expert")) == 3


def test_an_episode_rate_waits_for_the_first_episodes(tmp_path):
    """Episodes end in lockstep batches: one that ends alone says nothing of the rate."""
    from core.work import FIRST_EPISODES, EpisodeCount, read_count

    path = tmp_path / "count.json"
    count = EpisodeCount(str(path), every_s=0.0)
    count(0, 100)
    assert read_count(path)["each_s"] is None and read_count(tmp_path / "none.json") is None
    count(FIRST_EPISODES - 1, 100)
    assert read_count(path)["done"] == FIRST_EPISODES - 1 and read_count(path)["each_s"] is None
    time.sleep(0.05)
    count(FIRST_EPISODES, 100)
    c = read_count(path)
    assert c["each_s"] == pytest.approx((c["t"] - c["t0"]) / FIRST_EPISODES) and c["each_s"] > 0
    small = EpisodeCount(str(tmp_path / "small.json"), every_s=0.0)
    small(0, 3)
    small(3, 3)  # fewer episodes than FIRST_EPISODES: all of them give the rate
    assert read_count(tmp_path / "small.json")["each_s"] is not None
