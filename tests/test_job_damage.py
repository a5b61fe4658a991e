"""Jobs survive damaged and vanished folders (issue 21, items 12 and 13): a non-UTF-8 metrics line
or a non-numeric step in one job's folder breaks neither `jobs list` nor `jobs show` / `jobs stop`,
and a job whose folder was removed while it ran reads as failed (gone) everywhere, the Train page
included, instead of running forever."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
from test_dashboard_pages import run_page, texts
from test_job_liveness import launched
from test_job_sync import log_metric, make_job

from core.cli import main
from core.jobs import job_status, list_jobs, sync_job


@pytest.fixture
def runner():
    """A live process standing in for a job's runner (its own process group, so a stop may kill it)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def _damage(folder) -> None:
    with open(folder / "metrics.jsonl", "ab") as fh:
        fh.write(b'{"step": 2, "ts": 1002.0, "loss": 0.5}\n\xff\xfe not utf-8\n[1, 2]\n{"step": "x", "ts": 1}\n')
    status = json.loads((folder / "status.json").read_text())
    (folder / "status.json").write_text(json.dumps({**status, "step": "abc", "max_steps": "lots", "pid": "?"}))


def test_a_damaged_job_folder_breaks_no_command(store, runner, capsys) -> None:
    good, bad = make_job("job-good"), make_job("job-bad")
    for folder in (good, bad):
        launched(folder, runner.pid, time.time())
        log_metric(folder, 1)
        sync_job(store, folder.name)  # as starting a job records it
    _damage(bad)
    jobs = list_jobs(store).set_index("job_id")
    assert set(jobs.index) == {"job-good", "job-bad"}
    assert jobs.loc["job-good", "status"] == "running" and jobs.loc["job-bad", "step"] == 0
    assert len(store.job_metrics("job-good")) == 2 and len(store.job_metrics("job-bad")) == 3  # the good lines
    assert job_status("job-bad")["progress"] == 0.0
    capsys.readouterr()
    assert main(["jobs", "list"]) == 0
    assert "job-good" in capsys.readouterr().out
    assert main(["jobs", "show", "job-bad"]) == 0
    assert "running" in capsys.readouterr().out
    (bad / "status.json").write_text("[not, json")
    assert main(["jobs", "list"]) == 0 and main(["jobs", "show", "job-good"]) == 0
    assert main(["jobs", "stop", "job-bad"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_a_job_whose_folder_vanished_reads_failed(store, runner, capsys) -> None:
    folder = make_job("job-gone")
    launched(folder, runner.pid, time.time())
    sync_job(store, "job-gone")
    assert list_jobs(store).set_index("job_id").loc["job-gone", "status"] == "running"
    shutil.rmtree(folder)
    row = list_jobs(store).set_index("job_id").loc["job-gone"]
    assert row["status"] == "failed" and "folder" in row["error"] and "gone" in row["error"]
    capsys.readouterr()
    assert main(["jobs", "show", "job-gone"]) == 0
    out = capsys.readouterr().out
    assert "failed" in out and "gone" in out
    assert main(["jobs", "stop", "job-gone"]) == 0
    assert "failed" in capsys.readouterr().out
    at = run_page("views/train.py")
    assert not at.exception, at.exception
    assert "gone" in texts(at)
