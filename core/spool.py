"""Spool files: a collector's finished trajectories in a file instead of the store.

DuckDB has one writer and a store cannot be shared between machines, so a collector on another
machine (`w2stree collect --shard I/N --spool FILE`) appends its episodes to a spool, and
`w2stree import jsonl FILE...` on the machine that holds the store ingests them.

A spool is project JSONL (`core.formats.jsonl`), one trajectory per line, appended and flushed
as each episode finishes, so a killed collector keeps what finished (the reader skips a
truncated last line). Each record's `meta` carries, besides the trajectory's own meta, its id,
source and sampling (what the JSONL writer adds) and `meta["spool"]`: the run record (id, kind,
env, policy, model, settings) and the task's split. The importer restores all of them
(`unspool`), so a spooled trajectory is stored exactly as a collect into the store would have
stored it, under its own id: importing a spool again adds nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.formats import FormatError
from core.formats.jsonl import read_jsonl, trajectory_record
from core.trajectory import Run, Trajectory

#: The meta key of a spool record's run and split (removed on import).
SPOOL_KEY = "spool"


class Spool:
    """A collector's spool: `add_trajectories` appends one line per trajectory and flushes."""

    def __init__(self, path: str | Path, run: Run, splits: dict[str, str]) -> None:
        """Append to `path` (created if missing) the trajectories of `run`; `splits` maps the
        run's task ids to their split. A truncated last line (a collector killed mid-write) is cut
        off first, so that the next record starts a line of its own."""
        self.path = Path(path)
        self._run = {"run_id": run.run_id, "kind": run.kind, "env": run.env, "policy": run.policy,
                     "model": run.model, "settings": run.settings}
        self._splits = splits
        try:
            _cut_partial_line(self.path)
            self._fh = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise UserError(f"--spool {path}: cannot write there ({exc.strerror or exc}); "
                            "name a file in a writable folder") from None

    def add_trajectories(self, trajs: list[Trajectory]) -> int:
        """Append `trajs` (one complete line each) and flush them to the file; returns the count."""
        for t in trajs:
            record = trajectory_record(t)
            record["meta"][SPOOL_KEY] = {"run": self._run, "split": self._splits.get(t.task_id, "train")}
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        return len(trajs)

    def close(self) -> None:
        self._fh.close()


def _cut_partial_line(path: Path, chunk: int = 1 << 16) -> None:
    """Truncate `path` after its last line break (nothing when it ends with one or is missing)."""
    if not path.is_file():
        return
    with path.open("r+b") as fh:
        end = pos = fh.seek(0, os.SEEK_END)
        while pos > 0:
            step = min(chunk, pos)
            fh.seek(pos - step)
            cut = fh.read(step).rfind(b"\n")
            if cut >= 0:
                pos += cut + 1 - step
                break
            pos -= step
        if pos < end:
            fh.truncate(pos)


def unspool(t: Trajectory) -> tuple[Run, str] | None:
    """For a trajectory read from a spool record: restore its id, source and sampling from its
    meta, remove the keys the spool added, and return (its run, its task's split); None (and
    `t` unchanged) for any other record."""
    info = t.meta.get(SPOOL_KEY)
    if (not isinstance(info, dict) or not isinstance(info.get("run"), dict) or not t.run_id
            or not isinstance(t.meta.get("traj_id"), str)):
        return None
    meta = t.meta
    del meta[SPOOL_KEY]
    t.traj_id = meta.pop("traj_id")
    t.source = str(meta.pop("source", "collect"))
    t.temperature, t.top_p = (_number(meta.pop(k, None)) for k in ("temperature", "top_p"))
    r = info["run"]
    run = Run(run_id=t.run_id, kind=str(r.get("kind", "collect")), env=str(r.get("env", t.env)),
              policy=str(r.get("policy", "")), model=str(r.get("model", t.model)),
              settings=r.get("settings") if isinstance(r.get("settings"), dict) else {})
    return run, str(info.get("split", "train"))


def _number(v: Any) -> float | None:
    """A restored sampling field: a number, else None (a hand-edited record cannot break the store)."""
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def spooled_run(path: str | Path, run_id: str) -> tuple[dict[str, Any], set[tuple[str, str]]]:
    """(the run record, the (task, sampling) pairs it finished) of run `run_id` in spool `path`:
    what `collect --resume RUN --spool FILE` continues from; UserError when the spool has no such run."""
    try:
        trajs = read_jsonl(path, skipped=[]) if Path(path).exists() else []
    except FormatError as exc:
        raise UserError(f"--spool {path}: {exc}") from None
    record: dict[str, Any] | None = None
    done = set()
    for t in trajs:
        found = unspool(t)
        if found is not None and t.run_id == run_id:
            run = found[0]
            record = {"run_id": run.run_id, "env": run.env, "policy": run.policy}
            done.add((t.task_id, str(t.meta.get("sampling", ""))))
    if record is None:
        raise UserError(f"spool {path} has no run {run_id!r} to resume; start a new run without --resume")
    return record, done
