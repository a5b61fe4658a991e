"""Syncing a job folder into the store: a folder that did not change writes nothing (the Train page
polls every 2 s and a write invalidates every cached reader of the dashboard); syncers running
side by side never duplicate a metric; a succeeded job registers its model once."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from core.jobs import list_jobs, sync_job
from core.jobs.folder import update_status
from core.paths import jobs_dir
from core.store import Store


def make_job(job_id: str, status: str = "running") -> Path:
    """A job folder as a job process leaves it (no process: a sync reads the files only)."""
    folder = jobs_dir() / job_id
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "job_id": job_id, "kind": "sft", "config": {"data": "expert:shop"},
        "lineage": {"base": "tiny"}, "output_path": str(folder / "out")}))
    update_status(folder, status=status, step=0, max_steps=100, created_at="2026-01-01T00:00:00")
    return folder


def log_metric(folder: Path, step: int) -> None:
    with open(folder / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"step": step, "ts": 1000.0 + step, "loss": 1.0 / step, "learning_rate": 1e-4}) + "\n")


def test_unchanged_job_writes_nothing(store: Store):
    folder = make_job("job-a")
    log_metric(folder, 1)
    sync_job(store, "job-a")
    before = store.changes()
    for syncer in (store, Store(store.path)):  # this process, and one that never saw the job
        sync_job(syncer, "job-a")
        list_jobs(syncer)
    assert store.changes() == before
    assert len(store.job_metrics("job-a")) == 2

    log_metric(folder, 2)
    sync_job(store, "job-a")
    assert store.changes() == before + 1
    assert sorted(store.job_metrics("job-a")["step"].tolist()) == [1, 1, 2, 2]

    update_status(folder, step=2)  # the status alone changed: the row follows
    sync_job(store, "job-a")
    assert store.changes() == before + 2
    assert store.jobs().set_index("job_id").loc["job-a", "step"] == 2


def test_two_syncers_never_duplicate_metrics(store: Store):
    folder = make_job("job-b")
    n_steps = 60
    done = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        for step in range(1, n_steps + 1):
            log_metric(folder, step)
            update_status(folder, step=step)
            time.sleep(0.005)
        done.set()

    def syncer(s: Store) -> None:
        try:
            while not done.is_set():
                sync_job(s, "job-b")
            sync_job(s, "job-b")
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=syncer, args=(Store(store.path),)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    metrics = store.job_metrics("job-b")
    assert len(metrics) == 2 * n_steps
    assert not metrics.duplicated(["step", "name"]).any()
    assert store.jobs().set_index("job_id").loc["job-b", "step"] == n_steps


def test_succeeded_job_registers_its_model_once(store: Store):
    folder = make_job("job-c")
    log_metric(folder, 1)
    sync_job(store, "job-c")
    assert store.models().empty
    update_status(folder, status="succeeded", output_path=str(folder / "out"), params=42)
    sync_job(store, "job-c")
    update_status(folder, finished_at="2026-01-01T01:00:00")
    sync_job(store, "job-c")
    models = store.models()
    assert models[["name", "job_id", "params", "role"]].values.tolist() == [["out", "job-c", 42, "sft"]]
    assert store.find_model("out") == ("out", str(folder / "out"))
    assert store.find_model(str(folder / "out")) == ("out", str(folder / "out"))
    assert store.find_model("nothing") is None
    assert store.active_job_ids() == []
