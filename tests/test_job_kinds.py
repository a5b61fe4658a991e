"""The job layer's registry and its one reading of a folder (issue 22): every training method is a
job kind whose trainer its method chooses (no branch per method), explore and fill are kinds of
the same registry, a kind the job process does not know fails its job in one line, and a status
read opens each job file once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from test_job_liveness import launched
from test_job_sync import make_job

import core.job_runner  # registers every kind, as the job process does
from core.explore_job import run_job as explore_run
from core.fill_job import run_job as fill_run
from core.jobs import job_status
from core.jobs.kinds import job_kind
from core.jobs.process import RUNNER
from core.train.config import METHODS, RENAMED
from core.train.jobs import TRAINER_BUILDERS

REPO = Path(__file__).resolve().parents[1]


def test_every_method_is_a_job_kind_with_its_methods_trainer():
    for name, m in [*METHODS.items(), *((old, METHODS[new]) for old, new in RENAMED.items())]:
        assert job_kind(name).run.keywords["build"] is TRAINER_BUILDERS[m.trainer], name
    assert job_kind("mcts").run.keywords["build"] is TRAINER_BUILDERS["sft"]
    assert job_kind("eto-dpo").run.keywords["build"] is TRAINER_BUILDERS["dpo"] is not TRAINER_BUILDERS["sft"]
    assert job_kind("explore").run is explore_run and job_kind("fill").run is fill_run
    assert core.job_runner.__name__ == RUNNER  # the module a job's process runs registers them all


def test_a_kind_the_job_process_does_not_know_fails_its_job_in_one_line(store):
    folder = make_job("job-u")
    meta = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**meta, "kind": "nope"}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "core.job_runner", str(folder)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "unknown job kind 'nope'" in proc.stderr
    status = job_status("job-u")
    assert status["status"] == "failed" and status["error"].startswith("unknown job kind 'nope'; known: ")
    assert "\n" not in status["error"] and "sft" in status["error"] and "explore" in status["error"]


def test_a_status_read_opens_each_job_file_once(store, monkeypatch):
    folder = make_job("job-o")
    launched(folder, os.getpid(), time.time())  # this process, started before the launch: alive
    opened: list[str] = []
    read_text = Path.read_text

    def counting(self: Path, *args, **kwargs):
        if self.parent == folder:
            opened.append(self.name)
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    assert job_status("job-o")["status"] == "running"
    assert sorted(opened) == ["config.json", "launch.json", "status.json"]
