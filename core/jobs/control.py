"""What callers do with jobs, the store kept in step: create, launch, resume, stop, read, list.

Concurrency: DuckDB allows one writing process, so a job process never opens the store (a kind
that writes results, like explore, opens it only for its own short writes). It writes its folder;
readers (`sync_job`, `list_jobs`, the pages) ingest the folder into the `jobs` and `metrics`
tables with short-lived connections. No metric is lost (the folder is the record) and no lock
error can come from a running job. A sync of a folder whose files did not change writes nothing
(see `Store.record_job`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import UserError
from core.jobs.folder import JobStatus, job_dir_of, last_checkpoint, make_folder, update_status
from core.jobs.logs import long_metrics, metric_lines
from core.jobs.process import current, kill, launch, lock
from core.paths import jobs_dir
from core.store import Store
from core.store_jobs import ACTIVE_JOB as ACTIVE


def write_job(kind: str, config: dict[str, Any], lineage: dict[str, Any], store: Store,
              output: str = "", fill: Callable[[Path], None] | None = None, job_id: str | None = None,
              max_steps: int | None = None) -> str:
    """Make a job folder (config.json, `fill(folder)` for its data, queued status) and its row;
    returns the job id."""
    folder = make_folder(kind, config, lineage, output, fill, job_id, max_steps)
    sync_job(store, folder.name)
    return folder.name


def launch_job(job_id: str, store: Store, detach: bool = True) -> str:
    """Start the process of a created (queued) job; with `detach=False` wait for it to end."""
    folder = jobs_dir() / job_id
    proc = launch(folder, resume=False, lock_fd=lock(folder))
    if not detach:
        proc.wait()
    sync_job(store, job_id)
    return job_id


def resume_job(job_id: str, store: Store, detach: bool = True) -> str:
    """Start a stopped or failed job again from its last checkpoint (same folder, same id)."""
    folder = job_dir_of(job_id)
    fd = lock(folder)  # held from the checks on: two resumes at once cannot both pass them
    try:
        status = current(folder).status
        if status in ACTIVE:
            raise UserError(f"job {job_id} is {status}; stop it before resuming")
        if status == "succeeded":
            raise UserError(f"job {job_id} already succeeded; start a new job to train further")
        if last_checkpoint(folder) is None:
            raise UserError(f"job {job_id} has no complete checkpoint yet (saved every save_steps); start "
                            "it again with `w2stree train`")
    except BaseException:
        os.close(fd)
        raise
    (folder / "stop").unlink(missing_ok=True)
    update_status(folder, status="queued", error=None, eta_s=None)
    proc = launch(folder, resume=True, lock_fd=fd)
    if not detach:
        proc.wait()
    sync_job(store, folder.name)
    return folder.name


def stop_job(job_id: str, store: Store | None = None, grace: float = 600.0) -> dict[str, Any]:
    """Stop a job (`core.jobs.process.kill`: checkpoint, then SIGKILL after `grace` seconds) and
    sync it into `store` when given. Returns the final status (stopped)."""
    job = kill(job_id, grace)
    if store is not None:
        sync_job(store, job.job_id)
        job = current(job.job_dir)
    return job.as_dict()


def job_status(job_id_or_dir: str | Path) -> dict[str, Any]:
    """The job's status.json (+ job_id, kind, job_dir, progress in [0, 1]), its process checked
    (see `core.jobs.process.current`)."""
    return current(job_id_or_dir).as_dict()


# -- the store's copy -------------------------------------------------------------------------------

def folder_state(job_dir: Path) -> str:
    """The state of the files a sync reads (status.json, metrics.jsonl): inode, size and mtime of
    each. Both are only ever replaced or appended to, so an equal state means nothing to sync."""
    parts = []
    for name in ("status.json", "metrics.jsonl"):
        try:
            st = (job_dir / name).stat()
            parts.append(f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
        except FileNotFoundError:
            parts.append("-")
    return "/".join(parts)


def sync_job(store: Store, job_id: str) -> dict[str, Any]:
    """Ingest a job folder into the store: the job row, new metric lines, and (once succeeded)
    the output model with its lineage, in one transaction. A folder whose files did not change
    since the last sync (by any process) writes nothing. Returns the job status."""
    job = current(job_id)
    state = folder_state(job.job_dir)  # before the metrics are read: a later line is synced next time
    if store.job_folder_state(job_id) == state:
        return job.as_dict()
    if not isinstance(job.meta.get("config"), dict):
        raise UserError(f"job {job_id}: {job.job_dir / 'config.json'} is damaged; its job cannot be read")
    store.record_job(_row(job, state), long_metrics(metric_lines(job.job_dir)), _model(job))
    return job.as_dict()


def _row(job: JobStatus, state: str) -> dict[str, Any]:
    """The `jobs` row of a job."""
    times = {key: _time(job.record.get(key)) for key in ("created_at", "started_at", "updated_at", "finished_at")}
    return {"job_id": job.job_id, "kind": str(job.kind), "status": job.status, "config": json.dumps(job.config),
            "pid": job.pid, "step": job.step, "max_steps": job.max_steps, "job_dir": str(job.job_dir),
            "output_path": job.output_path, "error": job.error, **times, "folder_state": state}


def _model(job: JobStatus) -> dict[str, Any] | None:
    """The model a succeeded job made, with its lineage (None before, or for a job that makes none)."""
    if job.status != "succeeded" or not job.output_path:
        return None
    lineage = {**job.lineage, "job_id": job.job_id, "config": job.config}
    return dict(name=Path(job.output_path).name, path=job.output_path, role=job.kind,
                base=lineage.get("base", ""), params=int(job.record.get("params") or 0), job_id=job.job_id,
                data=job.config.get("data", ""), lineage=lineage)


def _time(value: Any) -> pd.Timestamp | None:
    """A time read from status.json, or None for a missing or damaged one."""
    try:
        return pd.Timestamp(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


def list_jobs(store: Store) -> pd.DataFrame:
    """All jobs of the store (active ones synced from their folders first), newest first. An
    active job whose folder is gone (removed while it ran) is marked failed, saying so; one whose
    folder cannot be read keeps its row as it was."""
    for job_id in store.active_job_ids():
        try:
            sync_job(store, job_id)
        except UserError:
            gone_job(store, job_id)
    return store.jobs()


def active_jobs(store: Store, kind: str) -> list[JobStatus]:
    """The queued or running jobs of `kind`, newest first, read from their folders."""
    jobs = list_jobs(store)
    ids = jobs[(jobs["kind"] == kind) & jobs["status"].isin(ACTIVE)]["job_id"] if not jobs.empty else []
    out = []
    for job_id in ids:
        try:
            out.append(current(job_id))
        except UserError:  # its folder went after the listing
            continue
    return out


def gone_job(store: Store, job_id: str) -> dict[str, Any] | None:
    """The stored row of job `job_id` if its folder no longer exists (marked failed, saying where
    the folder was, unless it had finished), else None (no such job, or its folder is there)."""
    row = store.job_row(job_id)
    if row is None:
        return None
    folder = Path(row["job_dir"]) if row.get("job_dir") else jobs_dir() / job_id
    if (folder / "config.json").exists():
        return None
    store.mark_job_failed(job_id, f"its folder {folder} is gone (removed while the job ran); "
                                  "nothing more of it can be read")
    return store.job_row(job_id)


def job_metrics(job_id: str, store: Store | None = None) -> pd.DataFrame:
    """Metrics of a job as a long frame [step, name, value] (last value per step and name, so the
    steps replayed after a resume count once). Read live from the job folder; from the store
    when the folder is gone."""
    try:
        df = long_metrics(metric_lines(job_dir_of(job_id)))
    except UserError:
        if store is None:
            raise
        df = store.job_metrics(job_id)
    if df.empty:
        return pd.DataFrame(columns=["step", "name", "value"])
    df = df.sort_values("ts").drop_duplicates(["step", "name"], keep="last")
    return df.sort_values(["step", "name"])[["step", "name", "value"]].reset_index(drop=True)


def job_store(meta: dict[str, Any]) -> Store:
    """The store a job that writes results (explore, grow, fill) was started on, from its
    config.json `meta`: the path its lineage records (`db`), never a default one."""
    db = meta["lineage"].get("db")
    if not db:
        raise UserError(f"job {meta.get('job_id')} does not record its store (lineage `db`); start it again")
    return Store(db)
