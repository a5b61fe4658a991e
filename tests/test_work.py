"""Units of work side by side (core.work): at most `parallel` at once, in dependency order, a
failure named and the finished units kept, wall time per stage. The units are real calls in
spawned worker processes; each notes in a folder when it starts and ends."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.errors import UserError
from core.store import Store
from core.work import Reporter, Unit, UnitFailed, run_units


def _note(store: Store, name: str, folder: str, wait_for: str = "", hold: float = 0.3) -> dict[str, list[str]]:
    """A stage: marks `name` started, waits until unit `wait_for` has started too (so both run
    at once), holds, marks `name` ended; returns the units that were running and those that had
    ended when it started."""
    marks = Path(folder)
    (marks / f"{name}.start").touch()
    running = sorted(p.stem for p in marks.glob("*.start") if not (marks / f"{p.stem}.end").exists())
    ended = sorted(p.stem for p in marks.glob("*.end"))
    deadline = time.monotonic() + 300
    while wait_for and not (marks / f"{wait_for}.start").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{wait_for} never started beside {name}")
        time.sleep(0.05)
    time.sleep(hold)
    (marks / f"{name}.end").touch()
    return {"running": running, "ended": ended, "store": [str(store.path)]}


def _fail(store: Store, error: str) -> None:
    """A stage that fails with a ValueError, or a UserError (bad input found inside the unit)."""
    raise (UserError if error == "user" else ValueError)(f"no such thing in {store.path.name}")


def test_units_run_at_most_parallel_at_once_in_dependency_order(store, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    lines: list[str] = []
    rep = Reporter(lambda fraction, text: lines.append(text))

    def unit(name: str, **kwargs) -> Unit:
        deps = kwargs.pop("deps", ())
        return Unit(name, stage=_note, deps=deps, kwargs=dict(name=name.split()[1], folder=str(marks), **kwargs))

    units = [unit("wait a", wait_for="b"), unit("wait b", wait_for="a"), unit("wait c"),
             unit("after d", deps=("wait c",))]
    done = run_units(units, store, parallel=2, rep=rep)

    results = {name: u.result for name, u in done.items()}
    assert set(results) == {"wait a", "wait b", "wait c", "after d"}
    assert all(r["store"] == [str(store.path)] for r in results.values())  # each worker opened the same store
    assert all(len(r["running"]) <= 2 for r in results.values())
    # a and b held until the other had started: they ran side by side; c waited for a free slot
    assert results["wait c"]["ended"]
    assert "c" in results["after d"]["ended"]  # d started only once c was done
    starts = [t for t in lines if t.startswith("start ")]
    assert starts == ["start wait a", "start wait b", "start wait c", "start after d"]  # list order
    first_done = next(i for i, t in enumerate(lines) if t.startswith("done "))
    assert lines.index("start wait c") > first_done  # the runner itself kept the third one back
    assert lines.index("start after d") > next(i for i, t in enumerate(lines) if t.startswith("done wait c"))
    # wall time per stage (the first word of a unit's name), summed over units side by side
    assert set(rep.timings) == {"wait", "after"}
    assert rep.timings["wait"] >= 3 * 0.3 and rep.timings["after"] >= 0.3


@pytest.mark.parametrize("error,raised,message", [
    ("value", UnitFailed, r"^boom failed: ValueError: no such thing in w2stree.duckdb$"),
    ("user", UserError, r"^boom: no such thing in w2stree.duckdb$"),  # still one line for the CLI
])
def test_a_failing_unit_is_named_and_stops_the_rest(store, tmp_path, error, raised, message):
    units = [Unit("first", stage=_note, kwargs=dict(name="first", folder=str(tmp_path), hold=0.0)),
             Unit("boom", stage=_fail, deps=("first",), kwargs=dict(error=error)),
             Unit("never", stage=_note, deps=("boom",), kwargs=dict(name="never", folder=str(tmp_path)))]
    with pytest.raises(raised, match=message) as info:
        run_units(units, store, parallel=1, rep=Reporter(None))
    assert not (tmp_path / "never.start").exists()
    if raised is UnitFailed:
        assert info.value.unit == "boom" and isinstance(info.value.__cause__, ValueError)
        assert set(info.value.done) == {"first"}  # what finished is kept, results filled
        assert info.value.done["first"].result["ended"] == []


def test_units_waiting_on_unknown_units_are_refused_before_anything_runs(store, tmp_path):
    units = [Unit("x", stage=_note, deps=("train nothing",), kwargs=dict(name="x", folder=str(tmp_path))),
             Unit("y", stage=_note, deps=("x",), kwargs=dict(name="y", folder=str(tmp_path)))]
    with pytest.raises(RuntimeError, match=r"unknown or circular dependencies \['train nothing'\]"):
        run_units(units, store, parallel=2, rep=Reporter(None))
    assert not list(tmp_path.glob("*.start"))


def test_a_running_unit_in_the_live_line():
    from core.work import running_text

    since = time.monotonic() - 12.4
    assert running_text("eval TreeDPO", since) == "eval TreeDPO 12s"  # a stage call: its time so far
    status = {"status": "running", "step": 40, "max_steps": 60, "eta_s": 8.0}
    # 20 steps left in 8 s: 2.5 steps/s
    assert running_text("train TreeDPO", since, status) == "train TreeDPO 40/60 steps (2.5 steps/s, 0m08s left)"
    loading = {"status": "running", "step": 0, "max_steps": None, "eta_s": None}
    assert running_text("train MCTS", since, loading) == "train MCTS 12s"  # no step yet: the model loads


def test_the_live_line_in_a_log_and_on_a_terminal(capsys, monkeypatch):
    import core.work

    monkeypatch.setattr(core.work, "LIVE_EVERY_S", 0.2)
    monkeypatch.setattr(core.work, "BEAT_S", 100.0)  # no heartbeat within this test
    rep = Reporter(True)
    assert not rep.tty  # pytest's captured stderr is not a terminal
    rep.live("train a 1/9 steps")
    assert capsys.readouterr().err == ""  # said nothing for less than LIVE_EVERY_S: quiet
    time.sleep(0.25)
    rep.live("train a 2/9 steps")
    rep.live("train a 3/9 steps")  # just written: not again
    err = capsys.readouterr().err
    assert err.endswith("] train a 2/9 steps\n") and err.count("\n") == 1
    time.sleep(0.25)
    rep.say(None, "done a")
    rep.live("train b 1/9 steps")  # a line was just said
    assert capsys.readouterr().err.endswith("] done a\n")

    rep.tty = True  # on a terminal: one line rewritten in place, cleared before a line of its own
    rep.live("train b 2/9 steps")
    rep.live("train b 3/9 steps")
    rep.say(None, "done b")
    rep.end_live()  # nothing shown: nothing to clear
    err = capsys.readouterr().err
    assert err.startswith("\r\x1b[K[") and "\n" not in err.split("done b")[0]
    assert err.count("\r\x1b[K") == 3 and err.endswith("] done b\n")
    assert "] train b 2/9 steps\r\x1b[K[" in err


def test_run_units_keeps_a_log_from_going_silent(store, tmp_path, capsys, monkeypatch):
    import core.work

    monkeypatch.setattr(core.work, "LIVE_EVERY_S", 0.0)
    marks = tmp_path / "marks"
    marks.mkdir()
    run_units([Unit("hold x", stage=_note, kwargs=dict(name="x", folder=str(marks), hold=1.5))], store,
              parallel=1, rep=Reporter(True))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("] start hold x") and lines[-1].split("] ")[1].startswith("done hold x in ")
    assert any(line.endswith(("] hold x 1s", "] hold x 2s")) for line in lines[1:-1]), lines


def test_the_heartbeat_speaks_between_units_until_the_end(capsys, monkeypatch):
    import core.work

    monkeypatch.setattr(core.work, "LIVE_EVERY_S", 0.3)
    monkeypatch.setattr(core.work, "BEAT_S", 0.05)
    rep = Reporter(True)
    rep.say(0.1, "models: local models of shop")  # then a stage in this process, saying nothing
    time.sleep(1.0)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("] models: local models of shop")
    beats = lines[1:]
    assert 2 <= len(beats) <= 4, beats  # one every LIVE_EVERY_S in a log
    assert all(" models: local models of shop · " in b and b.endswith("s") for b in beats)
    rep.say(1.0, "experiment done")  # the end: the heartbeat stops
    time.sleep(0.5)
    assert capsys.readouterr().err.splitlines()[-1].endswith("] experiment done")
