"""Jobs: work that runs in its own process with its own folder, mirrored into the store.

Every kind of job (a training method, explore, fill) is one folder and one process, read and
controlled the same way; the kinds differ only in what their process runs (`core.jobs.kinds`).

* `core.jobs.folder`: the folder's files, read once into a typed `JobStatus`; the writes every
  kind shares (status, a job's start and end, checkpoints).
* `core.jobs.logs`: metric lines and the log tail.
* `core.jobs.process`: launch, lock, liveness (`job_alive`), stop (no store).
* `core.jobs.control`: create, launch, resume, stop, status, sync into the store, list.
* `core.jobs.kinds`: the registry of job kinds by name.

The job process is `python -m core.job_runner JOB_DIR [--resume]`.
"""

from core.jobs.control import (
    active_jobs,
    gone_job,
    job_metrics,
    job_status,
    job_store,
    launch_job,
    list_jobs,
    resume_job,
    stop_job,
    sync_job,
    write_job,
)
from core.jobs.folder import JobStatus, job_dir_of, read_job
from core.jobs.logs import job_log_tail
from core.jobs.process import current, job_alive
from core.store_jobs import ACTIVE_JOB as ACTIVE

FINISHED = ("succeeded", "failed", "stopped")

__all__ = [
    "ACTIVE", "FINISHED", "JobStatus", "active_jobs", "current", "gone_job", "job_alive", "job_dir_of",
    "job_log_tail", "job_metrics", "job_status", "job_store", "launch_job", "list_jobs", "read_job", "resume_job",
    "stop_job", "sync_job", "write_job",
]
