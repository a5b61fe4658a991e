"""The registry of job kinds: what a job process runs, by the kind its folder names.

A kind registers itself when its module is imported (`register(JobKind(name, run))`): each
training method (`core.train.jobs`, its trainer chosen by the method), `explore`
(`core.explore_job`) and `fill` (`core.fill_job`). The job process (`core.job_runner`) imports
those modules and runs `run_kind(job_dir)`; nothing here imports them, so this package stays below
every kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.jobs.folder import now_iso, read_json, update_status

_KINDS: dict[str, JobKind] = {}


@dataclass(frozen=True)
class JobKind:
    """A kind of job: its name (as config.json records it) and `run(job_dir, resume)`, the work
    of its job process (status and progress go to the folder; an error is recorded and raised)."""

    name: str
    run: Callable[[Path, bool], Any]


def register(kind: JobKind) -> JobKind:
    """Add `kind` to the registry (a second registration of a name replaces the first)."""
    _KINDS[kind.name] = kind
    return kind


def job_kind(name: str) -> JobKind:
    """The registered kind `name`; a one-line UserError names the registered ones otherwise."""
    found = _KINDS.get(name)
    if found is None:
        raise UserError(f"unknown job kind {name!r}; known: {', '.join(sorted(_KINDS)) or 'none registered'}")
    return found


def run_kind(job_dir: Path, resume: bool = False) -> Any:
    """Run the job of `job_dir` in this process with its registered kind (a kind unknown here is
    recorded as the job's failure)."""
    try:
        kind = job_kind(str(read_json(job_dir / "config.json").get("kind")))
    except UserError as exc:
        update_status(job_dir, status="failed", error=str(exc), eta_s=None, finished_at=now_iso())
        raise
    return kind.run(job_dir, resume)
