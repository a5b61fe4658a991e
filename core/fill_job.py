"""Filling an empty store with the embedded default as a job kind (`fill`): the Overview page's
button starts `core.pipeline.fill_default` in its own process and follows it (a reload finds it
again), instead of running it inside the page.
"""

from __future__ import annotations

from pathlib import Path

from core.jobs import job_store, launch_job, write_job
from core.jobs.folder import finish, now_iso, read_json, running, update_status
from core.jobs.kinds import JobKind, register
from core.pipeline import fill_default
from core.store import Store

JOB_KIND = "fill"
STEPS = 100  # progress is a fraction: recorded as a step of 100


def start_job(store: Store, env: str = "shop") -> str:
    """Start filling `store` with the embedded default of `env` as a job. Returns the job id."""
    # the job process writes the store itself, so it is told which one (not the default one)
    job_id = write_job(JOB_KIND, {"env": env}, {"kind": JOB_KIND, "db": str(store.path)}, store=store,
                       max_steps=STEPS)
    launch_job(job_id, store)
    return job_id


def run_job(job_dir: Path, resume: bool = False) -> Path:
    """The job process's work: `fill_default` (a resume starts it over)."""
    meta = read_json(job_dir / "config.json")

    def progress(fraction: float, message: str = "") -> None:
        print(message, flush=True)
        update_status(job_dir, step=round(STEPS * min(max(float(fraction), 0.0), 1.0)), message=str(message))

    with running(job_dir, started_at=now_iso(), step=0, max_steps=STEPS):
        fill_default(job_store(meta), progress=progress, env=meta["config"].get("env", "shop"))
    finish(job_dir, "succeeded", step=STEPS)
    return job_dir


register(JobKind(JOB_KIND, run_job))
