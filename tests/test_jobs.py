"""Training jobs as real processes: start detached, progress, stop (process tree gone), resume from
the checkpoint to success, a killed job reads as failed, a crash records its error, CLI."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from test_train import tiny_models

from core.jobs import job_log_tail, job_metrics, job_status, list_jobs, resume_job, stop_job, sync_job
from core.train import start_job


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.getbasetemp())


@pytest.fixture
def expert(store):
    from core.agents.scripted import ExpertPolicy
    from core.collect import collect
    from core.envs.base import make_env

    tids = [t.task_id for t in make_env("shop").tasks("train")[:2]]
    collect(store, "shop", ExpertPolicy("shop"), tids, model="expert", progress=False)
    return store


def wait_for(pred, timeout: float = 240.0, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def sft(models, **kw) -> dict:
    return {"preset": "tiny", "model": str(models["strong"]), "data": "expert:shop", "batch_size": 1,
            "save_steps": 2, **kw}


@pytest.mark.slow
def test_job_runs_stops_and_resumes(expert, models):
    store = expert
    job_id = start_job("sft", sft(models, max_steps=400), store, detach=True)
    st = wait_for(lambda: (s := job_status(job_id))["status"] == "running" and (s["step"] or 0) >= 3 and s)
    assert st["max_steps"] == 400 and 0 < st["progress"] < 1 and st["eta_s"] > 0 and alive(st["pid"])
    pid = st["pid"]

    final = stop_job(job_id, store)
    assert final["status"] == "stopped" and not alive(pid)
    stopped_at = final["step"]
    ckpts = sorted(int(p.name.split("-")[1]) for p in (Path(final["job_dir"]) / "checkpoints").glob("checkpoint-*"))
    assert ckpts and ckpts[-1] == stopped_at  # the stop saved a checkpoint of the last finished step
    assert store.query("SELECT status FROM jobs WHERE job_id = ?", [job_id])["status"][0] == "stopped"
    assert job_metrics(job_id)["step"].max() >= 3

    # resume with a lower budget so it ends soon: same job, continuing at the checkpoint's step
    cfg_path = Path(final["job_dir"]) / "config.json"
    meta = json.loads(cfg_path.read_text())
    meta["config"]["max_steps"] = stopped_at + 3
    cfg_path.write_text(json.dumps(meta))
    resume_job(job_id, store, detach=False)
    done = sync_job(store, job_id)
    assert done["status"] == "succeeded", job_log_tail(job_id)
    assert done["step"] == stopped_at + 3
    m = job_metrics(job_id)
    losses = m[m["name"] == "loss"]["step"].tolist()
    assert losses[-3:] == [stopped_at + 1, stopped_at + 2, stopped_at + 3]  # continued, not restarted
    assert f"resuming from checkpoint-{stopped_at}" in job_log_tail(job_id, 400)
    row = store.models().set_index("job_id").loc[job_id]
    assert Path(row["path"], "model.safetensors").exists()
    assert json.loads(row["lineage"])["base"] == "shop-strong"
    jobs = list_jobs(store)
    assert jobs.set_index("job_id").loc[job_id, "status"] == "succeeded"
    assert set(store.query("SELECT name FROM metrics WHERE job_id = ?", [job_id])["name"]) >= {"loss", "learning_rate"}


@pytest.mark.slow
def test_killed_job_reads_failed_and_crash_records_error(expert, models):
    store = expert
    job_id = start_job("sft", sft(models, max_steps=400), store, detach=True)
    st = wait_for(lambda: (s := job_status(job_id))["status"] == "running" and s)
    os.killpg(st["pid"], signal.SIGKILL)  # as the OOM killer or a reboot would
    wait_for(lambda: not alive(st["pid"]) or job_status(job_id)["status"] == "failed")
    st = wait_for(lambda: (s := job_status(job_id))["status"] == "failed" and s)
    assert "ended without reporting" in st["error"]
    assert sync_job(store, job_id)["status"] == "failed"

    # a crash inside the process: a model folder that vanished after validation
    import shutil

    broken = Path(str(models["strong"]) + "-copy")
    shutil.copytree(models["strong"], broken)
    job_id = start_job("sft", sft(models, model=str(broken), max_steps=2), store, detach=True)
    shutil.rmtree(broken)
    st = wait_for(lambda: (s := job_status(job_id))["status"] in ("failed", "succeeded") and s)
    if st["status"] == "succeeded":
        pytest.skip("the job loaded the model before it was removed")
    assert st["error"] and "\n" not in st["error"] and "Traceback" in job_log_tail(job_id, 100)


def test_resume_and_stop_refuse_clearly(expert, models):
    from core.errors import UserError
    from core.train.jobs import create_job

    job_id = create_job("sft", sft(models, max_steps=2), expert)
    assert job_status(job_id)["status"] == "queued"
    with pytest.raises(UserError, match="queued"):
        resume_job(job_id, expert)
    with pytest.raises(UserError, match="no job"):
        job_status("nope")


@pytest.mark.slow
def test_cli_train_follows_job(expert, models, capsys):
    from core.cli import main

    rc = main(["train", "sft", "--preset", "tiny", "--model", str(models["strong"]), "--data", "expert:shop",
               "--max-steps", "2", "--batch-size", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "step 2/2" in out and "succeeded" in out
    job_id = out.split("job ", 1)[1].split()[0]
    assert main(["jobs", "show", job_id]) == 0
    shown = capsys.readouterr().out
    assert "succeeded" in shown and "metrics at step 2" in shown and "loss=" in shown
    assert main(["jobs", "list"]) == 0 and job_id in capsys.readouterr().out
    assert main(["train", "sft", "--model", str(models["strong"]), "--data", "expert:shop", "--lr", "-1"]) == 2
    assert "lr" in capsys.readouterr().err
