"""Explore as a job kind (`explore`): `w2stree explore --detach` and the Trees page's "Explore from
here" start `core.explore.explore` in its own process (progress, stop and re-attach as every job,
`core.jobs`). When it ends its status.json also holds the new node ids, trajectory ids, rewards and
the summary line, for the page to highlight them.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from core.explore import JOB_KIND, ExploreSpec, explore, load_node
from core.jobs import job_store, launch_job, write_job
from core.jobs.folder import finish, now_iso, read_json, running, update_status
from core.jobs.kinds import JobKind, register
from core.store import Store


def start_job(spec: ExploreSpec, store: Store) -> str:
    """Check the spec and the node, then start `explore` as a job. Returns the job id."""
    spec.check()
    load_node(store, spec.env, spec.task_id, spec.node)
    # the job process writes its trajectories itself, so it is told which store (not the default one)
    job_id = write_job(JOB_KIND, asdict(spec), {"kind": JOB_KIND, "tree_id": spec.tree_id, "db": str(store.path)},
                       store=store, max_steps=spec.k)
    launch_job(job_id, store)
    return job_id


def run_job(job_dir: Path, resume: bool = False) -> Path:
    """The job process's work: `explore` with the job's spec (a resume starts it over)."""
    meta = read_json(job_dir / "config.json")
    spec = ExploreSpec(**meta["config"])
    stop_file = job_dir / "stop"

    def progress(done: int, k: int, message: str) -> None:
        print(message, flush=True)
        update_status(job_dir, step=done, max_steps=k)

    with running(job_dir, started_at=now_iso(), step=0, max_steps=spec.k):
        res = explore(job_store(meta), spec, progress=progress, should_stop=stop_file.exists)
    print(res.line(spec), flush=True)
    finish(job_dir, "stopped" if stop_file.exists() else "succeeded", step=len(res.traj_ids),
           new_nodes=res.new_nodes, traj_ids=res.traj_ids, rewards=res.rewards, run_id=res.run_id,
           summary=res.line(spec))
    return job_dir


register(JobKind(JOB_KIND, run_job))
