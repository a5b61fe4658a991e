"""The process of a job: launch, lock, liveness, stop (no store here: see `core.jobs.control`).

Launch: `python -m core.job_runner JOB_DIR` in its own process group, output to log.txt, holding
the job's `lock` (flock) for its whole life: a second start or resume of the job refuses while it
is held. On several GPUs a training job is launched through `accelerate launch --multi_gpu
--num_processes N` (data parallel; only rank 0 writes the folder). For models that do not fit one
GPU, write an accelerate config and point `W2STREE_ACCELERATE_CONFIG` at it; it is passed as
`--config_file` instead of `--multi_gpu` (which would override its FSDP / DeepSpeed plugin). FSDP
(`fsdp_sharding_strategy: FULL_SHARD`, `fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP`,
`fsdp_state_dict_type: SHARDED_STATE_DICT`) or DeepSpeed ZeRO-3 both work with TRL's trainers
unchanged; with a separate DPO reference model prefer ZeRO-3 or `precompute_ref_log_probs`.
(Not testable on these CPU machines.)

Liveness: a job whose status says queued/running but whose process is gone (killed, machine
restarted) reads as `stopped` if a stop was requested, else `failed`, and is written so (`current`).
`job_alive` is the one check of a job's process, for this package and its callers alike.

Stopping: `kill` writes the `stop` file; the job sees it at the end of its current step (a trainer
saves a checkpoint first, `core.train.progress`) and records `stopped`. No SIGTERM: on several GPUs
the launcher would kill its workers mid-save. A job still at step 0 (loading) has nothing to save
and is killed at once; otherwise SIGKILL to the job's process group and to any other process
running this job only after `grace` seconds (a step plus a multi-GB save).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.errors import UserError
from core.jobs.folder import (
    JobStatus,
    Launch,
    job_dir_of,
    now_iso,
    read_job,
    read_json,
    status_from,
    update_status,
    write_json,
)
from core.processes import pid_running, started_at
from core.store_jobs import ACTIVE_JOB as ACTIVE

#: The module the job process runs (`python -m RUNNER JOB_DIR`).
RUNNER = "core.job_runner"
#: What names a job process on its command line: this version's runner, and the earlier
#: `core.train.runner` (a job it started may still run while this version reads its folder).
RUNNER_MARKS = (RUNNER.encode(), b"core.train.runner")
REPO = Path(__file__).resolve().parents[2]
_CHILDREN: dict[str, subprocess.Popen] = {}  # launched here: polled so they never linger as zombies


# -- launching --------------------------------------------------------------------------------------

def launch_command(job_dir: Path, resume: bool = False) -> list[str]:
    """The command that runs a job: python -m core.job_runner, or accelerate launch on several GPUs."""
    args = ["-m", RUNNER, str(job_dir)] + (["--resume"] if resume else [])
    cfg = read_json(job_dir / "config.json").get("config", {})
    n_gpus = _gpu_count() if isinstance(cfg, dict) and cfg.get("device", "auto") != "cpu" else 0
    if n_gpus <= 1:
        return [sys.executable, *args]
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    config_file = os.environ.get("W2STREE_ACCELERATE_CONFIG")
    if config_file:  # its distributed type (FSDP, DeepSpeed) and process count rule
        return [*cmd, "--config_file", config_file, *args]
    return [*cmd, "--multi_gpu", "--num_processes", str(n_gpus), *args]


def _gpu_count() -> int:
    import torch  # heavy: only when a job that may use a GPU is launched

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def lock(job_dir: Path) -> int:
    """Take the job's lock (an open fd); UserError if another process holds it. Passed on to the
    job's process, it stays held until that process ends."""
    fd = os.open(job_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"job {job_dir.name} is already running or being started by another process; "
                        f"see `w2stree jobs show {job_dir.name}`") from None
    return fd


def launch(job_dir: Path, resume: bool, lock_fd: int) -> subprocess.Popen:
    """Start the job's process, handing it the lock `lock_fd` (closed here once it is started)."""
    cmd = launch_command(job_dir, resume)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    try:
        with open(job_dir / "log.txt", "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=env, pass_fds=(lock_fd,),
                                    start_new_session=True)  # own process group: stop kills the whole tree
    finally:
        os.close(lock_fd)
    _CHILDREN[job_dir.name] = proc
    write_json(job_dir / "launch.json", {"pid": proc.pid, "pgid": proc.pid, "command": cmd, "resume": resume,
                                         "launched_at": now_iso(), "launched_ts": time.time()})
    return proc


# -- liveness ---------------------------------------------------------------------------------------

def _alive(launch: Launch) -> bool:
    """Whether the job's process runs; for a job process also that it is still the job's (pid
    reuse). A process launched here is asked through its Popen, which also reaps it once it has
    ended (otherwise it would stay a zombie of this process, e.g. of the dashboard server)."""
    pid = launch.pid
    mine = [p for p in _CHILDREN.values() if p.pid == pid]  # two, if an ended one's pid was reused
    if mine:
        return any(p.poll() is None for p in mine)
    if not pid_running(pid):
        return False
    if not launch.runner:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): kill 0 is all there is
        return True
    if not cmdline or any(mark in cmdline for mark in RUNNER_MARKS):
        return True
    # Between fork and exec (seconds on a loaded machine) the job's process still shows its
    # parent's command line. It started before its launch was recorded; a process that reused the
    # pid started after the job's process ended, so later.
    start = started_at(pid)
    return start is not None and launch.launched_ts is not None and start <= launch.launched_ts + 2.0


def job_alive(job_id_or_dir: str | Path) -> bool:
    """Whether the process of a job (its runner, or the process training it in-process) runs on
    this machine: the one liveness check of jobs (`current`, `kill` and the pipeline)."""
    return _alive(read_job(job_id_or_dir).launch)


def current(job_id_or_dir: str | Path) -> JobStatus:
    """The job's status with its process checked: a job that says queued/running but whose
    process is gone is written stopped (stop requested) or failed; a damaged status.json reads as
    running or failed by its process."""
    folder = job_dir_of(job_id_or_dir)
    reap(folder.name)
    job = read_job(folder)
    if job.status in ACTIVE and job.launch.recorded and not _alive(job.launch):
        # read again: the process may have written its end just before it ended
        record = read_json(folder / "status.json")
        if record.get("status") in ACTIVE:
            end = {"status": "stopped"} if (folder / "stop").exists() else {
                "status": "failed", "error": job.error or f"process {job.launch.pid} ended without reporting "
                "(killed, out of memory, or the machine restarted); see log.txt"}
            record = {**record, **end, "eta_s": None, "finished_at": now_iso(), "updated_at": now_iso()}
            write_json(folder / "status.json", record)
        job = status_from(folder, record, job.meta)
    if job.status is None:  # status.json damaged: the process tells what is known
        job = dataclasses.replace(job, status="running" if _alive(job.launch) else "failed",
                                  error=f"{folder / 'status.json'} is damaged")
    return job


def reap(job_id: str) -> None:
    """Collect the exit status of the job's process if this process launched it and it ended."""
    child = _CHILDREN.get(job_id)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(job_id, None)


# -- stopping ---------------------------------------------------------------------------------------

def kill(job_id: str, grace: float) -> JobStatus:
    """Stop a job: the `stop` file (checkpoint at the end of the current step, then exit), SIGKILL
    to its process group after `grace` seconds (at once before its first step). Returns the final
    status (stopped)."""
    folder = job_dir_of(job_id)
    job = current(folder)
    pid, pgid = job.launch.pid, job.launch.pgid
    others = set(_runner_pids(folder)) - {pid}  # e.g. started by hand or by an older w2stree
    if job.status not in ACTIVE and not others:
        return job
    if not job.launch.runner:
        raise UserError(f"job {job_id} runs inside process {pid} (in-process training); stop that process")
    (folder / "stop").touch()
    groups = {pgid} if pgid and job_alive(folder) else set()

    def running() -> bool:
        reap(folder.name)
        return job_alive(folder) or any(pid_running(p) for p in others)

    if groups or others:
        deadline = time.monotonic() + (grace if job.step else 0.0)
        while running() and time.monotonic() < deadline:
            time.sleep(0.1)
        _signal_job(groups, others, signal.SIGKILL)  # whatever is left of the tree (workers, launcher)
        while running():
            time.sleep(0.05)
    if read_json(folder / "status.json").get("status") in ACTIVE:
        update_status(folder, status="stopped", eta_s=None, finished_at=now_iso())
    return current(folder)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_job(groups: set[int], pids: set[int], sig: int) -> None:
    """Signal the job's process groups, and each other process of the job with its own group
    (never the group of this process: that would signal the caller too)."""
    for pid in pids:
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            continue
        if group == os.getpgrp():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        else:
            groups = groups | {group}
    for group in groups:
        _signal_group(group, sig)


def _runner_pids(job_dir: Path) -> list[int]:
    """Every process on this machine whose command line runs this job."""
    want = {str(job_dir).encode(), str(job_dir.resolve()).encode()}
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(mark in args for mark in RUNNER_MARKS) and want & set(args) and int(proc.name) != os.getpid():
            pids.append(int(proc.name))
    return pids
