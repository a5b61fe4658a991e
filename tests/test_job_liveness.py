"""One liveness check for jobs (`job_alive`): a job's process counts as running from its launch on,
even while it still shows its parent's command line (before exec), but a process that reused its
pid later does not, and a job whose process is gone reads as failed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_job_sync import make_job

from core.jobs import job_alive, job_status
from core.processes import pid_running, started_at


@pytest.fixture
def other_process():
    """A process that is not a job runner (its command line names no runner)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def launched(folder, pid: int, at: float) -> None:
    (folder / "launch.json").write_text(json.dumps({"pid": pid, "pgid": pid, "launched_ts": at}))


def test_a_process_started_by_the_launch_is_the_job_even_before_exec(store, other_process):
    folder = make_job("job-l")
    launched(folder, other_process.pid, time.time())  # recorded just after the process started
    assert job_alive("job-l")
    assert job_status("job-l")["status"] == "running"


def test_a_reused_pid_is_not_the_job_which_reads_failed(store, other_process):
    folder = make_job("job-r")
    launched(folder, other_process.pid, time.time() - 60)  # the job launched long before that process
    assert pid_running(other_process.pid) and not job_alive("job-r")
    status = job_status("job-r")
    assert status["status"] == "failed" and "ended without reporting" in status["error"]


def test_an_ended_process_is_not_running(store):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    start = started_at(proc.pid)
    assert start is not None and abs(start - time.time()) < 30
    proc.wait()
    assert not pid_running(proc.pid) and started_at(proc.pid) is None
    folder = make_job("job-d")
    launched(folder, proc.pid, time.time())
    assert not job_alive("job-d")


def test_a_finished_job_launched_here_is_reaped_not_left_defunct(store, monkeypatch):
    """The job wrote "succeeded" and then exited: the first liveness check after its exit
    collects it (a dashboard or `up` that launched it would otherwise keep a zombie)."""
    from core.jobs import process

    folder = make_job("job-z", status="succeeded")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    monkeypatch.setitem(process._CHILDREN, "job-z", proc)
    launched(folder, proc.pid, time.time())
    deadline = time.monotonic() + 30
    while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert not job_alive("job-z")
    assert proc.returncode == 0 and not Path(f"/proc/{proc.pid}").exists()  # reaped
