"""Jobs and runs survive killed processes: resume takes the newest complete checkpoint, a second
resume refuses while the job's lock is held, stop ends every process of the job, and a killed
`collect` reads as interrupted (resumable) instead of running forever. Real processes throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import UserError
from core.jobs import resume_job, stop_job
from core.jobs.folder import COMPLETE, last_checkpoint
from core.jobs.process import RUNNER
from core.paths import jobs_dir
from core.store import Store

REPO = Path(__file__).resolve().parents[1]


def _job(status: str = "stopped", checkpoints: dict[int, bool] | None = None) -> Path:
    """A job folder (no training needed) with `checkpoints` {step: complete}."""
    folder = jobs_dir() / "sft-test-0001"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"job_id": folder.name, "kind": "sft", "config": {}}))
    (folder / "status.json").write_text(json.dumps({"status": status, "step": 2}))
    for step, complete in (checkpoints or {}).items():
        ckpt = folder / "checkpoints" / f"checkpoint-{step}"
        ckpt.mkdir()
        (ckpt / "model.safetensors").write_bytes(b"\0" * 16)
        if complete:
            (ckpt / COMPLETE).write_text("done")
    return folder


def _sleeper(*args: str, own_group: bool = True) -> subprocess.Popen:
    """A process whose command line names `args` (e.g. the job's runner) and that just waits."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", *args],
                            start_new_session=own_group)


def _gone(proc: subprocess.Popen, timeout: float = 30) -> bool:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_resume_takes_the_newest_complete_checkpoint(store: Store):
    folder = _job(checkpoints={2: True, 4: True, 6: False})  # 6: killed while it was being saved
    assert last_checkpoint(folder).name == "checkpoint-4"
    (folder / "checkpoints" / "checkpoint-4" / COMPLETE).unlink()
    (folder / "checkpoints" / "checkpoint-2" / COMPLETE).unlink()
    assert last_checkpoint(folder) is None
    with pytest.raises(UserError, match="no complete checkpoint"):
        resume_job(folder.name, store)


def test_second_resume_refuses_while_the_job_lock_is_held(store: Store):
    folder = _job(checkpoints={2: True})
    holder = subprocess.Popen(  # another `jobs resume` of the same job, inside its checks
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\nfcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\ntime.sleep(600)", str(folder / "lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match="already running or being started"):
            resume_job(folder.name, store)
        assert json.loads((folder / "status.json").read_text())["status"] == "stopped"
        assert not (folder / "launch.json").exists()  # nothing was started
    finally:
        holder.kill()
        holder.wait()


def test_stop_ends_every_process_of_the_job(store: Store):
    folder = _job(status="running")
    runner_args = ("-m", RUNNER, str(folder))
    first = _sleeper(*runner_args)
    # a second runner of the same job, in its own group, started by the earlier runner module
    second = _sleeper("-m", "core.train.runner", str(folder), "--resume")
    third = _sleeper(*runner_args, own_group=False)  # one in our own group: signalled alone
    bystander = _sleeper("-m", RUNNER, str(folder) + "-other")
    try:
        (folder / "launch.json").write_text(json.dumps({"pid": first.pid, "pgid": first.pid}))
        (folder / "status.json").write_text(json.dumps({"status": "running", "pid": first.pid}))
        final = stop_job(folder.name, store, grace=5)
        assert final["status"] == "stopped"
        assert _gone(first) and _gone(second) and _gone(third)
        assert bystander.poll() is None  # another job's process is left alone
    finally:
        for p in (first, second, third, bystander):
            p.kill()
            p.wait()


# -- killed collect ---------------------------------------------------------------------------
@pytest.mark.slow  # two CLI processes and a shop env: ~1-2 min on 2 busy cores
def test_killed_collect_reads_interrupted_and_resumes(store: Store):
    env = {**os.environ, "PYTHONPATH": str(REPO), "W2STREE_DB": str(store.path)}
    proc = subprocess.Popen([sys.executable, "-m", "core", "collect", "--env", "shop", "--policy", "random",
                             "--samples", "40", "--temperature", "1", "--tasks", "50", "--batch-size", "2"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while store.counts()["trajectories"] == 0:  # running, and some episodes stored
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        (run_id,) = store.runs()["run_id"]
        assert store.runs()["status"].tolist() == ["running"]
        with pytest.raises(UserError, match="still running in another process"):
            from core.agents.scripted import RandomPolicy
            from core.collect import collect

            collect(store, "shop", RandomPolicy(0), ["x"], run_id=run_id, resume=True, progress=False)
        proc.send_signal(signal.SIGKILL)  # as the OOM killer or a reboot would: no chance to record anything
        proc.wait()
    finally:
        proc.kill()
        proc.wait()
    runs = Store(store.path).runs()
    assert runs["status"].tolist() == ["interrupted"]
    stored = store.counts()["trajectories"]
    # resumable: the run continues where it was killed, skipping what it stored
    res = subprocess.run([sys.executable, "-m", "core", "collect", "--env", "shop", "--policy", "random",
                          "--samples", "2", "--temperature", "1", "--tasks", "1", "--resume", run_id],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert store.runs()["status"].tolist() == ["finished"]
    assert store.counts()["trajectories"] >= stored

