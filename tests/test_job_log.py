"""The job log tail shows what a terminal would: progress bars redrawn with carriage returns
collapse to their last state, escape sequences go."""

from __future__ import annotations

from core.jobs.logs import job_log_tail, terminal_lines
from core.paths import jobs_dir


def test_terminal_lines_collapse_progress_bars():
    raw = ("loading model\n"
           "train:   0%|          | 0/50\rtrain:  50%|#####     | 25/50\rtrain: 100%|##########| 50/50\r\n"
           "\x1b[Asaved checkpoint-50\r\n\n")
    assert terminal_lines(raw) == ["loading model", "train: 100%|##########| 50/50", "saved checkpoint-50"]


def test_job_log_tail_reads_clean_lines_of_a_long_progress_log(store):
    folder = jobs_dir() / "job-x"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    bar = "".join(f"\rstep {i}/20000 loss 0.{i % 10}" for i in range(20000))  # ~500 KB on one line
    (folder / "log.txt").write_text("start\n" + bar + "\n" + "done: model saved\n")
    tail = job_log_tail("job-x", 40).splitlines()
    assert tail == ["step 19999/20000 loss 0.9", "done: model saved"]
    assert "\r" not in job_log_tail("job-x", 40)
