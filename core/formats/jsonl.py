"""The project's JSONL trajectory format: one trajectory per line.

    {"env": str, "task_id": str, "instruction": str, "reward": float in [0, 1],
     "success": bool (optional; default reward == 1),
     "steps": [{"thought": str, "action": str, "observation": str,
                "reward": float (optional), "score": float (optional)}],
     "model": str (optional), "run": str (optional), "meta": {} (optional)}

`thought` and `observation` may be left out (empty); `steps` must not be empty. Unknown fields
are errors, so that a typo such as "sucess" is not silently dropped; so are values the store
cannot hold (core.formats.reading). The reader validates the whole file before returning
anything; the first problem raises a FormatError naming the file, the line and the field.
The writer stores `source`, `temperature`, `top_p` and the trajectory id under `meta`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from core.errors import one_line
from core.formats import FormatError
from core.formats.reading import MAX_DEPTH, check_value, ends_with_newline, parse_json, read_lines, suspect
from core.trajectory import Step, Trajectory

TOP_FIELDS = {"env", "task_id", "instruction", "reward", "success", "steps", "model", "run", "meta"}
STEP_FIELDS = {"thought", "action", "observation", "reward", "score"}


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _plain_step(s: Any) -> bool:
    """True for a step that passes every check below with float/None numbers (fast path)."""
    return (type(s) is dict and s.keys() <= STEP_FIELDS and type(s.get("action")) is str
            and s["action"].strip() != "" and type(s.get("thought", "")) is str
            and type(s.get("observation", "")) is str
            and _float_or_none(s.get("reward")) and _float_or_none(s.get("score")))


def _float_or_none(v: Any) -> bool:
    return v is None or (type(v) is float and math.isfinite(v))


class _Checker:
    """Field checks that raise FormatError naming the file and record."""

    def __init__(self, file: str, record: str) -> None:
        self.file, self.record = file, record

    def fail(self, field: str, problem: str) -> FormatError:
        return FormatError(self.file, self.record, field, problem)

    def text(self, obj: dict, key: str, field: str, required: bool = True, nonempty: bool = False) -> str:
        if key not in obj:
            if required:
                raise self.fail(field, "missing")
            return ""
        v = obj[key]
        if not isinstance(v, str):
            raise self.fail(field, f"must be a string, got {type(v).__name__}")
        if nonempty and not v.strip():
            raise self.fail(field, "must not be empty")
        return v

    def number(self, obj: dict, key: str, field: str, lo: float | None = None,
               hi: float | None = None) -> float | None:
        if obj.get(key) is None:
            return None
        v = obj[key]
        if not _is_number(v):
            raise self.fail(field, f"must be a finite number, got {json.dumps(v)[:40]}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.fail(field, f"must be between {lo:g} and {hi:g}, got {v}")
        return float(v)


def parse_record(obj: Any, file: str, record: str) -> Trajectory:
    """One JSONL record → Trajectory (source "import"); raises FormatError on any bad field."""
    c = _Checker(file, record)
    if not isinstance(obj, dict):
        raise c.fail("", f"must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - TOP_FIELDS)
    if unknown:
        raise c.fail(unknown[0], f"unknown field (allowed: {', '.join(sorted(TOP_FIELDS))})")
    env = c.text(obj, "env", "env", nonempty=True)
    task_id = obj.get("task_id")
    if isinstance(task_id, int) and not isinstance(task_id, bool):
        task_id = str(task_id)  # numeric ids (WebShop sessions) are common in the wild
        obj = {**obj, "task_id": task_id}
    task_id = c.text(obj, "task_id", "task_id", nonempty=True)
    instruction = c.text(obj, "instruction", "instruction")
    if "reward" not in obj:
        raise c.fail("reward", "missing")
    reward = c.number(obj, "reward", "reward", 0.0, 1.0)
    if reward is None:
        raise c.fail("reward", "must be a number, got null")
    success = obj.get("success")
    if success is not None and not isinstance(success, bool):
        raise c.fail("success", f"must be true or false, got {json.dumps(success)[:40]}")
    steps_raw = obj.get("steps")
    if steps_raw is None:
        raise c.fail("steps", "missing")
    if not isinstance(steps_raw, list):
        raise c.fail("steps", f"must be a list, got {type(steps_raw).__name__}")
    if not steps_raw:
        raise c.fail("steps", "no steps: a trajectory needs at least one step")
    steps = []
    for i, s in enumerate(steps_raw):
        if _plain_step(s):  # the common case, checked fast; anything else gets the named checks
            steps.append(Step(s["action"], s.get("observation", ""), s.get("thought", ""),
                              float(s.get("reward") or 0.0), s.get("score")))
            continue
        f = f"steps[{i}]"
        if not isinstance(s, dict):
            raise c.fail(f, f"must be an object, got {type(s).__name__}")
        bad = sorted(set(s) - STEP_FIELDS)
        if bad:
            raise c.fail(f"{f}.{bad[0]}", f"unknown field (allowed: {', '.join(sorted(STEP_FIELDS))})")
        steps.append(Step(
            action=c.text(s, "action", f"{f}.action", nonempty=True),
            observation=c.text(s, "observation", f"{f}.observation", required=False),
            thought=c.text(s, "thought", f"{f}.thought", required=False),
            reward=c.number(s, "reward", f"{f}.reward") or 0.0,
            score=c.number(s, "score", f"{f}.score"),
        ))
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise c.fail("meta", f"must be an object, got {type(meta).__name__}")
    check_value(meta, file, record, "meta", depth_limit=MAX_DEPTH)
    return Trajectory(
        env=env, task_id=task_id, instruction=instruction, steps=steps, reward=reward,
        success=success, source="import", run_id=c.text(obj, "run", "run", required=False),
        model=c.text(obj, "model", "model", required=False), meta=dict(meta),
    )


def read_jsonl(path: str | Path, skipped: list[str] | None = None) -> list[Trajectory]:
    """All trajectories of a project JSONL file (blank lines skipped); the first bad line
    raises FormatError ("FILE: line N: field 'F': problem").

    With a `skipped` list, a last line that is not JSON and has no line break after it (a writer
    killed mid-line, e.g. a collector's spool) is left out, with one line saying so appended to
    `skipped`, instead of failing the file."""
    path = Path(path)
    file = str(path)
    out = []
    cut: FormatError | None = None  # an unreadable line, fatal unless it is the truncated last one
    for n, line in read_lines(path):  # one line at a time: a big file is not held whole
        if not line.strip():
            continue
        if cut is not None:
            raise cut
        try:
            obj = parse_json(line, file, f"line {n}")
        except FormatError as exc:
            if skipped is None:
                raise
            cut = exc
            continue
        if suspect(line):
            check_value(obj, file, f"line {n}")
        out.append(parse_record(obj, file, f"line {n}"))
    if cut is not None:
        if ends_with_newline(path):
            raise cut
        skipped.append(one_line(f"{cut.file}: {cut.record}: skipped a truncated last line (its writer stopped "
                                "mid-line); the lines before it are read"))
    return out


def trajectory_record(t: Trajectory) -> dict[str, Any]:
    """A Trajectory as one project-JSONL record."""
    meta = dict(t.meta)
    meta.setdefault("traj_id", t.traj_id)
    meta.setdefault("source", t.source)
    for k in ("temperature", "top_p"):
        if getattr(t, k) is not None:
            meta.setdefault(k, getattr(t, k))
    steps = []
    for s in t.steps:
        d: dict[str, Any] = {"thought": s.thought, "action": s.action, "observation": s.observation,
                             "reward": s.reward}
        if s.score is not None:
            d["score"] = s.score
        steps.append(d)
    return {"env": t.env, "task_id": t.task_id, "instruction": t.instruction, "reward": t.reward,
            "success": bool(t.success), "steps": steps, "model": t.model, "run": t.run_id, "meta": meta}


def write_jsonl(trajs: Iterable[Trajectory], out: IO[str]) -> int:
    """Write trajectories as project JSONL lines to an open text stream; returns the count."""
    n = 0
    for t in trajs:
        out.write(json.dumps(trajectory_record(t), ensure_ascii=False) + "\n")
        n += 1
    return n
