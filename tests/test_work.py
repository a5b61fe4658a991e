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
