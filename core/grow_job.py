"""Targeted growth as a job kind (`grow`): `w2stree grow --detach` and the Trees page's "Grow"
form start `core.grow.grow` in its own process (progress, stop and re-attach as every job,
`core.jobs`). When it ends its status.json also holds the summary line and the grown trees.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from core.env_slots import Pool
from core.errors import UserError
from core.explore import ExploreSpec
from core.grow import GrowSettings, choose_nodes, grow
from core.jobs import job_store, launch_job, write_job
from core.jobs.folder import finish, now_iso, read_json, running, update_status
from core.jobs.kinds import JobKind, register
from core.store import Store

JOB_KIND = "grow"


def start_job(store: Store, env: str, policy: str, settings: GrowSettings, pool: Pool = Pool(),
              server: str | None = None) -> str:
    """Check the settings and that the rule finds nodes, then start the growth as a job (its
    envs in `pool`; a model policy on the completions servers `server`, when given). Returns the
    job id."""
    settings.check()
    pool.check()
    if server:
        ExploreSpec(env, "", 0, policy, server=server).check()  # a bad URL or a scripted policy fails here
    trees = store.load_trees(env=env, numeric_only=True)
    nodes = choose_nodes(trees, settings) if trees else []
    if not nodes:
        raise UserError(f"rule {settings.rule} finds no node to grow in the stored trees of {env!r}"
                        + ("" if trees else "; build them with `w2stree tree`"))
    # the job process writes its trajectories itself, so it is told which store (not the default one)
    config = {"env": env, "policy": policy, "pool": asdict(pool), **asdict(settings),
              **({"server": server} if server else {})}
    job_id = write_job(JOB_KIND, config, {"kind": JOB_KIND, "env": env, "db": str(store.path)}, store=store,
                       max_steps=len(nodes) * settings.k)
    launch_job(job_id, store)
    return job_id


def run_job(job_dir: Path, resume: bool = False) -> Path:
    """The job process's work: `grow` with the job's settings (a resume starts it over)."""
    meta = read_json(job_dir / "config.json")
    config = dict(meta["config"])
    env, policy, pool = config.pop("env"), config.pop("policy"), Pool(**config.pop("pool", {}))
    server = config.pop("server", None)
    settings = GrowSettings(**config)
    stop_file = job_dir / "stop"

    def progress(done: int, total: int, message: str) -> None:
        print(message, flush=True)
        update_status(job_dir, step=done, max_steps=total)

    with running(job_dir, started_at=now_iso(), step=0):
        report = grow(job_store(meta), env, policy, settings, progress=progress,
                      should_stop=stop_file.exists, pool=pool, server=server)
    print(report.line(), flush=True)
    finish(job_dir, "stopped" if stop_file.exists() else "succeeded", step=report.episodes, summary=report.line(),
           tree_ids=sorted({tree_id for tree_id, _, _ in report.nodes}))
    return job_dir


register(JobKind(JOB_KIND, run_job))
