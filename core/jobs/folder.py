"""A job folder's files, read once into a typed `JobStatus`, and the writes every kind shares.

A job folder `<home>/jobs/<job_id>/` holds::

    config.json     kind, the kind's full config, lineage, output path (written once, at creation)
    data.jsonl      a training job's rows, materialised at creation (a reproducible resume)
    status.json     status, pid, step, max_steps, eta_s, error, output_path, and what the kind
                    adds (explore: new_nodes, summary, ...); replaced atomically on every write
    launch.json     what the launcher started: pid / process group, command, start time
    metrics.jsonl   one line per logged step: step, ts, loss, learning_rate, ... (appended)
    log.txt         the job process's stdout and stderr
    tensorboard/    a training job's TensorBoard event files (when `tensorboard` is installed)
    checkpoints/    a training job's checkpoints; each gets a COMPLETE file once fully saved
    stop            present once a stop was requested
    lock            locked (flock) by the job's process for its whole life

Every reader tolerates damage: a missing, unreadable or malformed file reads as empty, so one
damaged job never breaks the commands on the others.
"""

from __future__ import annotations

import contextlib
import json
import os
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.paths import jobs_dir

COMPLETE = "COMPLETE"  # marker file of a fully saved checkpoint


def now_iso() -> str:
    """The time stamps of job files: UTC, to the second, without a zone."""
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def write_json(path: Path, obj: dict[str, Any]) -> None:
    """Write `obj` so that a reader never sees half a file (a temporary file, then a rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    """A job file's JSON object; {} for a missing, unreadable or damaged one (not UTF-8, not JSON,
    not an object)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # ValueError: JSONDecodeError, UnicodeDecodeError
        return {}
    return data if isinstance(data, dict) else {}


def whole(value: Any) -> int | None:
    """A whole number read from a job file, or None for anything else (a damaged value)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def job_dir_of(job_id_or_dir: str | Path) -> Path:
    """The folder of a job id (under the jobs folder) or a folder path; UserError if missing."""
    path = Path(job_id_or_dir)
    if not (path / "config.json").exists():
        path = jobs_dir() / str(job_id_or_dir)
    if not (path / "config.json").exists():
        raise UserError(f"no job {job_id_or_dir!r}; see `w2stree jobs list`")
    return path


# -- the typed status -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Launch:
    """The process of a job: its pid and process group, whether it was started as a job process
    (else the job runs inside another process: in-process training), when it was launched, and
    whether a launch was recorded at all (not for a queued job)."""

    pid: int | None
    pgid: int | None
    runner: bool
    launched_ts: float | None
    recorded: bool


@dataclass(frozen=True)
class JobStatus:
    """One reading of a job folder: config.json, status.json and launch.json, each opened once.
    `status` is None when status.json is damaged; `record` is status.json as written (with what
    each kind adds), `meta` config.json."""

    job_dir: Path
    status: str | None
    step: int
    max_steps: int | None
    pid: int | None
    error: str | None
    output_path: str | None
    launch: Launch
    meta: dict[str, Any] = field(repr=False)
    record: dict[str, Any] = field(repr=False)

    @property
    def job_id(self) -> str:
        return self.job_dir.name

    @property
    def kind(self) -> str | None:
        return self.meta.get("kind")

    @property
    def config(self) -> dict[str, Any]:
        """The job's config as its kind saved it ({} when config.json is damaged)."""
        config = self.meta.get("config")
        return config if isinstance(config, dict) else {}

    @property
    def lineage(self) -> dict[str, Any]:
        lineage = self.meta.get("lineage")
        return lineage if isinstance(lineage, dict) else {}

    @property
    def progress(self) -> float:
        """step / max_steps in [0, 1]; 0 when the step count is unknown."""
        return min(1.0, max(0.0, self.step / self.max_steps)) if self.max_steps else 0.0

    def as_dict(self) -> dict[str, Any]:
        """status.json with the whole fields checked, and job_id, kind, job_dir, progress: the
        mapping `job_status` has always returned."""
        return {**self.record, "status": self.status, "error": self.error, "step": self.step,
                "max_steps": self.max_steps, "pid": self.pid, "job_id": self.job_id, "kind": self.kind,
                "job_dir": str(self.job_dir), "progress": self.progress}


def read_job(job_id_or_dir: str | Path) -> JobStatus:
    """The job's files as they are (no liveness check: see `core.jobs.process.current`)."""
    folder = job_dir_of(job_id_or_dir)
    return status_from(folder, read_json(folder / "status.json"))


def status_from(folder: Path, record: dict[str, Any], meta: dict[str, Any] | None = None) -> JobStatus:
    """A `JobStatus` of `folder` with status.json `record`; launch.json is read here, config.json
    too unless `meta` (its contents) is given."""
    meta = read_json(folder / "config.json") if meta is None else meta
    text = lambda key: None if record.get(key) is None else str(record[key])  # noqa: E731
    pid = whole(record.get("pid"))
    if record.get("inproc"):
        launch = Launch(pid, None, False, None, True)
    else:
        raw = read_json(folder / "launch.json")
        ts = raw.get("launched_ts")
        launch = Launch(whole(raw.get("pid")) or pid, whole(raw.get("pgid")), True,
                        float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None,
                        bool(raw) or (folder / "launch.json").exists())
    status = record.get("status")
    return JobStatus(folder, status if isinstance(status, str) else None, whole(record.get("step")) or 0,
                     whole(record.get("max_steps")), pid, text("error"), text("output_path"), launch, meta, record)


# -- writing ----------------------------------------------------------------------------------------

def update_status(job_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into status.json (with `updated_at`) and return the new status.json."""
    status = read_json(job_dir / "status.json")
    status.update(fields, updated_at=now_iso())
    write_json(job_dir / "status.json", status)
    return status


def new_job_id(kind: str) -> str:
    return f"{kind}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"


def make_folder(kind: str, config: dict[str, Any], lineage: dict[str, Any], output: str = "",
                fill: Callable[[Path], None] | None = None, job_id: str | None = None,
                max_steps: int | None = None) -> Path:
    """A new job folder: config.json, `fill(folder)` for its data, a queued status.json."""
    job_id = job_id or new_job_id(kind)
    folder = jobs_dir() / job_id
    (folder / "checkpoints").mkdir(parents=True)
    write_json(folder / "config.json", {"job_id": job_id, "kind": kind, "config": config, "lineage": lineage,
                                        "output_path": output, "created_at": now_iso()})
    if fill is not None:
        fill(folder)
    update_status(folder, status="queued", step=0, max_steps=max_steps, eta_s=None, error=None, pid=None,
                  output_path=None, created_at=now_iso())
    return folder


def error_line(exc: BaseException) -> str:
    """The one line a failed job records: a UserError's message, else the exception's last line."""
    if isinstance(exc, UserError):
        return str(exc)
    lines = [ln for ln in traceback.format_exception_only(exc)[-1].splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


@contextlib.contextmanager
def running(job_dir: Path, write: bool = True, **fields: Any) -> Iterator[None]:
    """The body of a job process: status `running` (with `fields`) on entry; on an exception
    `failed` with its one-line error (`stopped` on Ctrl-C), re-raised. Only when `write` (rank 0
    of several training processes)."""
    if write:
        update_status(job_dir, status="running", pid=os.getpid(), error=None, finished_at=None, **fields)
    try:
        yield
    except BaseException as exc:
        if write:
            update_status(job_dir, status="stopped" if isinstance(exc, KeyboardInterrupt) else "failed",
                          error=error_line(exc), eta_s=None, finished_at=now_iso())
        raise


def finish(job_dir: Path, status: str, **fields: Any) -> None:
    """Record the end of a job that ran to its end (or to a requested stop)."""
    update_status(job_dir, status=status, eta_s=0 if status == "succeeded" else None, finished_at=now_iso(),
                  **fields)


# -- checkpoints ------------------------------------------------------------------------------------

def last_checkpoint(job_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` folder of a job (marked COMPLETE), or None."""
    ckpts = [p for p in (job_dir / "checkpoints").glob("checkpoint-*")
             if p.name.split("-")[-1].isdigit() and (p / COMPLETE).is_file()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1])) if ckpts else None


def mark_checkpoint_complete(ckpt: Path) -> None:
    """Mark a checkpoint folder as fully saved (called once the trainer has written all of it)."""
    if ckpt.is_dir():
        (ckpt / COMPLETE).write_text(now_iso())
