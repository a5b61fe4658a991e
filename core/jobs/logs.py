"""What a job process writes as it runs, read back: its metric lines and the tail of its log."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from core.jobs.folder import job_dir_of, whole

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LOG_WINDOW = 256 * 1024  # bytes read from the end: progress bars rewrite one line many times


def metric_lines(folder: Path) -> list[dict[str, Any]]:
    """The metric records of a job folder: lines that are not a JSON object with a whole `step`
    and a numeric `ts` (being written right now, or damaged) are left out."""
    try:
        data = (folder / "metrics.jsonl").read_bytes()
    except OSError:
        return []
    out = []
    for line in data.split(b"\n"):
        try:
            m = json.loads(line)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            continue
        if isinstance(m, dict) and whole(m.get("step")) is not None and _number(m.get("ts")):
            out.append(m)
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def long_metrics(lines: list[dict[str, Any]]) -> pd.DataFrame:
    """Metric records as a long frame [step, name, value, ts] (non-numeric values left out)."""
    rows = [(int(m["step"]), k, float(v), float(m["ts"])) for m in lines for k, v in m.items()
            if k not in ("step", "ts") and _number(v)]
    return pd.DataFrame(rows, columns=["step", "name", "value", "ts"])


def terminal_lines(text: str) -> list[str]:
    """The lines a terminal would show for `text`: a progress bar redrawn with carriage returns
    keeps only its last state, escape sequences go, blank lines are dropped."""
    out = []
    for line in text.split("\n"):
        line = _ANSI.sub("", line.rstrip("\r").rsplit("\r", 1)[-1]).rstrip()
        if line:
            out.append(line)
    return out


def job_log_tail(job_id: str, n: int = 50) -> str:
    """The last `n` lines of the job's log, as a terminal shows them (see `terminal_lines`)."""
    path = job_dir_of(job_id) / "log.txt"
    if not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        start = max(0, fh.tell() - max(LOG_WINDOW, 200 * (n + 1)))
        fh.seek(start)
        text = fh.read().decode("utf-8", errors="replace")
    if start:  # the first line is cut: keep what follows its first carriage return, if any
        first, nl, rest = text.partition("\n")
        text = first.partition("\r")[2] + nl + rest
    return "\n".join(terminal_lines(text)[-n:])
