"""Training jobs: every training run is a job with its own folder, process, status and metrics.

A job folder `<home>/jobs/<job_id>/` holds::

    config.json     kind, the full config (model paths resolved), data spec, lineage
    data.jsonl      the training rows, materialised when the job is created (reproducible resume)
    status.json     status, pid, step, max_steps, eta_s, error, output_path (written atomically)
    launch.json     what the launcher started: pid / process group, command, start time
    metrics.jsonl   one line per logged step: step, ts, loss, learning_rate, rewards/... (append)
    log.txt         the process's stdout and stderr
    tensorboard/    TensorBoard event files of the logged metrics (when `tensorboard` is installed;
                    `w2stree jobs tensorboard JOB` prints the command that opens them)
    checkpoints/    TRL checkpoints every `save_steps` (and one at a requested stop); each gets
                    a COMPLETE file once fully saved, and resume takes the newest complete one
                    (a checkpoint half-written by a killed process is never picked)
    stop            present once a stop was requested
    lock            locked (flock) by the job's process for its whole life: a second start or
                    resume of the job refuses while it is held

Concurrency: DuckDB allows one writing process, so the job process never opens the store. It
only writes its folder; readers (`sync_job`, `list_jobs`, the dashboard) ingest the folder into
the `jobs` and `metrics` tables with short-lived connections. No metric is lost (the folder is
the record) and no lock error can come from a running job. A sync of a folder whose files did not
change writes nothing (see `Store.record_job`).

Liveness: a job whose status says queued/running but whose process is gone (killed, machine
restarted) reads as `stopped` if a stop was requested, else `failed`, and is written so.
`job_alive` is the one check of a job's process, for this module and its callers alike.

Stopping: `stop_job` writes the `stop` file; every rank's trainer callback sees it at the end of
the current optimizer step, saves a checkpoint and ends (`core.train.progress`), and the runner
records `stopped`. No SIGTERM: on several GPUs the launcher would kill its workers mid-save. A job
still at step 0 (loading) has nothing to save and is killed at once; otherwise SIGKILL to the
job's process group and to any other process running this job's runner only after `grace`
seconds (default 10 minutes: a step plus a multi-GB save).

Several GPUs: the job is launched through `accelerate launch --multi_gpu --num_processes N -m
core.train.runner JOB_DIR` (data parallel; only rank 0 writes the folder). For models that do not
fit one GPU, write an accelerate config and point `W2STREE_ACCELERATE_CONFIG` at it; it is passed
as `--config_file` instead of `--multi_gpu` (which would override its FSDP / DeepSpeed plugin). FSDP (`accelerate config` -> FSDP, `fsdp_sharding_strategy: FULL_SHARD`,
`fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP`, `fsdp_state_dict_type: SHARDED_STATE_DICT`) or
DeepSpeed ZeRO-3 (`deepspeed_config: {zero_stage: 3, offload_optimizer_device: none}`) both work
with TRL's trainers unchanged; with a separate DPO reference model prefer ZeRO-3 or
`precompute_ref_log_probs`. (Not testable on these CPU machines.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import UserError
from core.paths import jobs_dir, models_dir
from core.processes import pid_running, started_at
from core.store import Store
from core.store_jobs import ACTIVE_JOB as ACTIVE
from core.train.config import (
    TrainConfig,
    config_class,
    config_from_dict,
    make_config,
    method,
    validate_fields,
)
from core.train.data import build_rows, check_rows, parse_spec, read_rows, write_rows
from core.train.tensorboard import tensorboard_logs

COMPLETE = "COMPLETE"  # marker file of a fully saved checkpoint
FINISHED = ("succeeded", "failed", "stopped")
#: Job kinds that do not train: kind -> "module:function(job_dir)" that the job process runs.
OTHER_KINDS = {"explore": "core.explore:run_job"}
REPO = Path(__file__).resolve().parents[2]
_CHILDREN: dict[str, subprocess.Popen] = {}  # launched here: polled so they never linger as zombies


# -- folder I/O -----------------------------------------------------------------------------------

def now_iso() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def _read_json(path: Path) -> dict[str, Any]:
    """A job file's JSON object; {} for a missing, unreadable or damaged one (not UTF-8, not JSON,
    not an object): one damaged job never breaks the commands on the others."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # ValueError: JSONDecodeError, UnicodeDecodeError
        return {}
    return data if isinstance(data, dict) else {}


def _int(value: Any) -> int | None:
    """A whole number read from a job file, or None for anything else (a damaged value)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def update_status(job_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into status.json (with `updated_at`) and return the new status."""
    status = _read_json(job_dir / "status.json")
    status.update(fields, updated_at=now_iso())
    _write_json(job_dir / "status.json", status)
    return status


def job_dir_of(job_id_or_dir: str | Path) -> Path:
    """The folder of a job id (under the jobs folder) or a folder path; UserError if missing."""
    path = Path(job_id_or_dir)
    if not (path / "config.json").exists():
        path = jobs_dir() / str(job_id_or_dir)
    if not (path / "config.json").exists():
        raise UserError(f"no job {job_id_or_dir!r}; see `w2stree jobs list`")
    return path


# -- preparing and launching ----------------------------------------------------------------------

def coerce_config(kind: str, config: TrainConfig | dict[str, Any]) -> TrainConfig:
    """A config object from a config or a dict of overrides (`preset` key honoured)."""
    if isinstance(config, TrainConfig):
        return config
    values = dict(config)
    return make_config(kind, values.pop("preset", "paper"), **values)


def prepare(kind: str, config: TrainConfig | dict[str, Any], store: Store | None = None
            ) -> tuple[TrainConfig, list[dict[str, Any]], dict[str, Any]]:
    """Validate everything a job needs before any process starts: field values, the model (and
    reference) exist, the data SPEC parses, names a non-empty set of rows of the right shape.
    Returns (config with resolved model paths, rows, lineage)."""
    from core.models.loading import model_name, resolve_model

    cfg = coerce_config(kind, config)
    validate_fields(kind, cfg)
    spec = parse_spec(cfg.data)
    method(kind).check_data(spec.source, spec.arg, cfg.data)
    store = store if store is not None else (Store() if spec.source != "file" else None)
    lineage = {"kind": kind, "base": model_name(cfg.model, store), "data": cfg.data}
    cfg = dataclasses.replace(cfg, model=resolve_model(cfg.model, store))
    if getattr(cfg, "ref", ""):
        lineage["ref"] = model_name(cfg.ref, store)
        cfg = dataclasses.replace(cfg, ref=resolve_model(cfg.ref, store))
    rows = build_rows(spec, store)
    check_rows(rows, preference=method(kind).preference, what=cfg.data)
    lineage["n_examples"] = len(rows)
    return cfg, rows, lineage


def new_job_id(kind: str) -> str:
    return f"{kind}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"


def create_job(kind: str, config: TrainConfig | dict[str, Any], store: Store | None = None) -> str:
    """Validate, then make the job folder and its `queued` row; returns the job id."""
    kind = method(kind).name  # an earlier name is recorded as the method it became
    cfg, rows, lineage = prepare(kind, config, store)
    job_id = new_job_id(kind)
    output = str(models_dir() / (cfg.output or job_id))
    # max_steps as configured from the start (the trainer reports its own once it runs; by epochs
    # the count is known only then)
    return write_job(kind, dataclasses.asdict(cfg), lineage, store, output,
                     lambda folder: write_rows(rows, folder / "data.jsonl"), job_id=job_id,
                     max_steps=cfg.max_steps if cfg.max_steps > 0 else None)


def write_job(kind: str, config: dict[str, Any], lineage: dict[str, Any], store: Store | None = None,
              output: str = "", fill: Any = None, job_id: str | None = None, max_steps: int | None = None) -> str:
    """Make a job folder (config.json, `fill(folder)` for its data, queued status) and its row."""
    job_id = job_id or new_job_id(kind)
    folder = jobs_dir() / job_id
    (folder / "checkpoints").mkdir(parents=True)
    _write_json(folder / "config.json", {"job_id": job_id, "kind": kind, "config": config,
                                         "lineage": lineage, "output_path": output, "created_at": now_iso()})
    if fill is not None:
        fill(folder)
    update_status(folder, status="queued", step=0, max_steps=max_steps, eta_s=None, error=None, pid=None,
                  output_path=None, created_at=now_iso())
    sync_job(store if store is not None else Store(), job_id)
    return job_id


def launch_command(job_dir: Path, resume: bool = False) -> list[str]:
    """The command that runs a job: python -m core.train.runner, or accelerate launch on several GPUs."""
    args = ["-m", "core.train.runner", str(job_dir)] + (["--resume"] if resume else [])
    cfg = _read_json(job_dir / "config.json").get("config", {})
    n_gpus = _gpu_count() if cfg.get("device", "auto") != "cpu" else 0
    if n_gpus <= 1:
        return [sys.executable, *args]
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    config_file = os.environ.get("W2STREE_ACCELERATE_CONFIG")
    if config_file:  # its distributed type (FSDP, DeepSpeed) and process count rule
        return [*cmd, "--config_file", config_file, *args]
    return [*cmd, "--multi_gpu", "--num_processes", str(n_gpus), *args]


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _lock(job_dir: Path) -> int:
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


def _launch(job_id: str, job_dir: Path, resume: bool, lock: int) -> subprocess.Popen:
    """Start the job's process, handing it the lock `lock` (closed here once it is started)."""
    cmd = launch_command(job_dir, resume)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    try:
        with open(job_dir / "log.txt", "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=env, pass_fds=(lock,),
                                    start_new_session=True)  # own process group: stop kills the whole tree
    finally:
        os.close(lock)
    _CHILDREN[job_id] = proc
    _write_json(job_dir / "launch.json", {"pid": proc.pid, "pgid": proc.pid, "command": cmd, "resume": resume,
                                          "launched_at": now_iso(), "launched_ts": time.time()})
    return proc


def start_job(kind: str, config: TrainConfig | dict[str, Any], store: Store | None = None,
              detach: bool = True) -> str:
    """Validate `config` (UserError before any process starts), create the job and start its
    process. With `detach=False` wait for it to end (and ingest it). Returns the job id."""
    store = store if store is not None else Store()
    return launch_job(create_job(kind, config, store), store, detach)


def launch_job(job_id: str, store: Store, detach: bool = True) -> str:
    """Start the process of a created (queued) job; with `detach=False` wait for it to end."""
    proc = _launch(job_id, jobs_dir() / job_id, resume=False, lock=_lock(jobs_dir() / job_id))
    if not detach:
        proc.wait()
    sync_job(store, job_id)
    return job_id


def resume_job(job_id: str, store: Store | None = None, detach: bool = True) -> str:
    """Start a stopped or failed job again from its last checkpoint (same folder, same id)."""
    folder = job_dir_of(job_id)
    lock = _lock(folder)  # held from the checks on: two resumes at once cannot both pass them
    try:
        status = job_status(folder)
        if status["status"] in ACTIVE:
            raise UserError(f"job {job_id} is {status['status']}; stop it before resuming")
        if status["status"] == "succeeded":
            raise UserError(f"job {job_id} already succeeded; start a new job to train further")
        if last_checkpoint(folder) is None:
            raise UserError(f"job {job_id} has no complete checkpoint yet (saved every save_steps); start "
                            "it again with `w2stree train`")
    except BaseException:
        os.close(lock)
        raise
    (folder / "stop").unlink(missing_ok=True)
    update_status(folder, status="queued", error=None, eta_s=None)
    proc = _launch(folder.name, folder, resume=True, lock=lock)
    store = store if store is not None else Store()
    if not detach:
        proc.wait()
    sync_job(store, folder.name)
    return folder.name


def last_checkpoint(job_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` folder of a job (marked COMPLETE), or None."""
    ckpts = [p for p in (job_dir / "checkpoints").glob("checkpoint-*")
             if p.name.split("-")[-1].isdigit() and (p / COMPLETE).is_file()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1])) if ckpts else None


def mark_checkpoint_complete(ckpt: Path) -> None:
    """Mark a checkpoint folder as fully saved (called once the trainer has written all of it)."""
    if ckpt.is_dir():
        (ckpt / COMPLETE).write_text(now_iso())


# -- liveness, stop ---------------------------------------------------------------------------------

def _alive(pid: int | None, runner: bool, launched_ts: float | None = None) -> bool:
    """Whether `pid` runs; for a runner process also that it is still the job's (pid reuse). A
    process launched here is asked through its Popen, which also reaps it once it has ended
    (otherwise it would stay a zombie of this process, e.g. of the dashboard server)."""
    mine = [p for p in _CHILDREN.values() if p.pid == pid]  # two, if an ended one's pid was reused
    if mine:
        return any(p.poll() is None for p in mine)
    if not pid_running(pid):
        return False
    if not runner:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): kill 0 is all there is
        return True
    if not cmdline or b"core.train.runner" in cmdline:
        return True
    # Between fork and exec (seconds on a loaded machine) the job's process still shows its
    # parent's command line. It started before its launch was recorded; a process that reused the
    # pid started after the job's process ended, so later.
    start = started_at(pid)
    return start is not None and launched_ts is not None and start <= launched_ts + 2.0


def _pids(job_dir: Path) -> tuple[int | None, int | None, bool, float | None]:
    """(pid, process group, started-as-runner, launch time) of a job."""
    launch = _read_json(job_dir / "launch.json")
    status = _read_json(job_dir / "status.json")
    if status.get("inproc"):
        return _int(status.get("pid")), None, False, None
    launched = launch.get("launched_ts")
    return (_int(launch.get("pid")) or _int(status.get("pid")), _int(launch.get("pgid")), True,
            float(launched) if isinstance(launched, int | float) and not isinstance(launched, bool) else None)


def job_alive(job_id_or_dir: str | Path) -> bool:
    """Whether the process of a job (its runner, or the process training it in-process) runs on
    this machine: the one liveness check of jobs (`job_status`, `stop_job` and the pipeline)."""
    pid, _, runner, launched_ts = _pids(job_dir_of(job_id_or_dir))
    return _alive(pid, runner, launched_ts)


def job_status(job_id_or_dir: str | Path) -> dict[str, Any]:
    """The job's status.json (+ job_id, kind, job_dir, progress in [0, 1]); a job that says
    queued/running but whose process is gone is marked stopped (stop requested) or failed."""
    folder = job_dir_of(job_id_or_dir)
    child = _CHILDREN.get(folder.name)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(folder.name, None)
    status = _read_json(folder / "status.json")
    if status.get("status") in ACTIVE:
        pid = _pids(folder)[0]
        launched = (folder / "launch.json").exists() or status.get("inproc")
        if launched and not job_alive(folder) and _read_json(folder / "status.json").get("status") in ACTIVE:
            if (folder / "stop").exists():
                status = update_status(folder, status="stopped", eta_s=None, finished_at=now_iso())
            else:
                status = update_status(folder, status="failed", eta_s=None, finished_at=now_iso(),
                                       error=status.get("error") or f"process {pid} ended without reporting "
                                       "(killed, out of memory, or the machine restarted); see log.txt")
    if not isinstance(status.get("status"), str):  # status.json damaged: the process tells what is known
        status = {**status, "status": "running" if job_alive(folder) else "failed",
                  "error": f"{folder / 'status.json'} is damaged"}
    cfg = _read_json(folder / "config.json")
    step, max_steps = _int(status.get("step")) or 0, _int(status.get("max_steps"))
    return {**status, "step": step, "max_steps": max_steps, "pid": _int(status.get("pid")), "job_id": folder.name,
            "kind": cfg.get("kind"), "job_dir": str(folder),
            "progress": min(1.0, max(0.0, step / max_steps)) if max_steps else 0.0}


def stop_job(job_id: str, store: Store | None = None, grace: float = 600.0) -> dict[str, Any]:
    """Stop a job: the `stop` file (checkpoint at the end of the current step, then exit), SIGKILL
    to its process group after `grace` seconds (at once before its first step). Returns the
    final status (stopped)."""
    folder = job_dir_of(job_id)
    status = job_status(folder)
    pid, pgid, runner, _ = _pids(folder)
    others = set(_runner_pids(folder)) - {pid}  # e.g. started by hand or by an older w2stree
    if status["status"] not in ACTIVE and not others:
        return status
    if not runner:
        raise UserError(f"job {job_id} runs inside process {pid} (in-process training); stop that process")
    (folder / "stop").touch()
    groups = {pgid} if pgid and job_alive(folder) else set()

    def running() -> bool:
        _reap(folder.name)
        return job_alive(folder) or any(pid_running(p) for p in others)

    if groups or others:
        deadline = time.monotonic() + (grace if status.get("step") else 0.0)
        while running() and time.monotonic() < deadline:
            time.sleep(0.1)
        _signal_job(groups, others, signal.SIGKILL)  # whatever is left of the tree (workers, launcher)
        while running():
            time.sleep(0.05)
    if _read_json(folder / "status.json").get("status") in ACTIVE:
        update_status(folder, status="stopped", eta_s=None, finished_at=now_iso())
    if store is not None:
        sync_job(store, folder.name)
    return job_status(folder)


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
    """Every process on this machine whose command line runs this job's runner."""
    want = {str(job_dir).encode(), str(job_dir.resolve()).encode()}
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"core.train.runner" in args and want & set(args) and int(proc.name) != os.getpid():
            pids.append(int(proc.name))
    return pids


def _reap(job_id: str) -> None:
    child = _CHILDREN.get(job_id)
    if child is not None:
        child.poll()


# -- reading -------------------------------------------------------------------------------------------

def _metric_lines(folder: Path) -> list[dict[str, Any]]:
    """The metric records of a job folder: lines that are not a JSON object with a whole `step`
    and a numeric `ts` (being written right now, or damaged) are left out."""
    try:
        data = (folder / "metrics.jsonl").read_bytes()
    except OSError:
        return []
    out = []
    for line in data.split(b"\n"):
        try:
            m = json.loads(line)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            continue
        if isinstance(m, dict) and _int(m.get("step")) is not None and _number(m.get("ts")):
            out.append(m)
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _long_metrics(lines: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [(int(m["step"]), k, float(v), float(m["ts"])) for m in lines for k, v in m.items()
            if k not in ("step", "ts") and _number(v)]
    return pd.DataFrame(rows, columns=["step", "name", "value", "ts"])


def job_metrics(job_id: str, store: Store | None = None) -> pd.DataFrame:
    """Metrics of a job as a long frame [step, name, value] (last value per step and name, so the
    steps replayed after a resume count once). Read live from the job folder; from the store
    when the folder is gone."""
    try:
        df = _long_metrics(_metric_lines(job_dir_of(job_id)))
    except UserError:
        if store is None:
            raise
        df = store.job_metrics(job_id)
    if df.empty:
        return pd.DataFrame(columns=["step", "name", "value"])
    df = df.sort_values("ts").drop_duplicates(["step", "name"], keep="last")
    return df.sort_values(["step", "name"])[["step", "name", "value"]].reset_index(drop=True)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LOG_WINDOW = 256 * 1024  # bytes read from the end: progress bars rewrite one line many times


def terminal_lines(text: str) -> list[str]:
    """The lines a terminal would show for `text`: a progress bar redrawn with carriage returns
    keeps only its last state, escape sequences go, blank lines are dropped."""
    out = []
    for line in text.split("\n"):
        line = _ANSI.sub("", line.rstrip("\r").rsplit("\r", 1)[-1]).rstrip()
        if line:
            out.append(line)
    return out


def job_log_tail(job_id: str, n: int = 50) -> str:
    """The last `n` lines of the job's log, as a terminal shows them (see `terminal_lines`)."""
    path = job_dir_of(job_id) / "log.txt"
    if not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        start = max(0, fh.tell() - max(LOG_WINDOW, 200 * (n + 1)))
        fh.seek(start)
        text = fh.read().decode("utf-8", errors="replace")
    if start:  # the first line is cut: keep what follows its first carriage return, if any
        first, nl, rest = text.partition("\n")
        text = first.partition("\r")[2] + nl + rest
    return "\n".join(terminal_lines(text)[-n:])


def folder_state(job_dir: Path) -> str:
    """The state of the files a sync reads (status.json, metrics.jsonl): inode, size and mtime of
    each. Both are only ever replaced or appended to, so an equal state means nothing to sync."""
    parts = []
    for name in ("status.json", "metrics.jsonl"):
        try:
            st = (job_dir / name).stat()
            parts.append(f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
        except FileNotFoundError:
            parts.append("-")
    return "/".join(parts)


def sync_job(store: Store, job_id: str) -> dict[str, Any]:
    """Ingest a job folder into the store: the job row, new metric lines, and (once succeeded)
    the output model with its lineage, in one transaction. A folder whose files did not change
    since the last sync (by any process) writes nothing. Returns the job status."""
    status = job_status(job_id)
    folder = Path(status["job_dir"])
    state = folder_state(folder)  # before reading the files: a later change is synced next time
    if store.job_folder_state(job_id) == state:
        return status
    meta = _read_json(folder / "config.json")
    if not isinstance(meta.get("config"), dict):
        raise UserError(f"job {job_id}: {folder / 'config.json'} is damaged; its job cannot be read")
    text = lambda key: None if status.get(key) is None else str(status[key])  # noqa: E731
    job = {"job_id": job_id, "kind": str(meta.get("kind")), "status": text("status"),
           "config": json.dumps(meta["config"]), "pid": status["pid"], "step": status["step"],
           "max_steps": status["max_steps"], "job_dir": str(folder), "output_path": text("output_path"),
           "error": text("error"), "created_at": _time(status.get("created_at")),
           "started_at": _time(status.get("started_at")), "updated_at": _time(status.get("updated_at")),
           "finished_at": _time(status.get("finished_at")), "folder_state": state}
    model = None
    if status.get("status") == "succeeded" and status.get("output_path"):
        lineage = {**meta.get("lineage", {}), "job_id": job_id, "config": meta["config"]}
        model = dict(name=Path(status["output_path"]).name, path=status["output_path"], role=meta["kind"],
                     base=lineage.get("base", ""), params=int(status.get("params") or 0), job_id=job_id,
                     data=meta["config"].get("data", ""), lineage=lineage)
    store.record_job(job, _long_metrics(_metric_lines(folder)), model)
    return status


def _time(value: Any) -> pd.Timestamp | None:
    """A time read from status.json, or None for a missing or damaged one."""
    try:
        return pd.Timestamp(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


def list_jobs(store: Store | None = None) -> pd.DataFrame:
    """All jobs of the store (active ones synced from their folders first), newest first. An
    active job whose folder is gone (removed while it ran) is marked failed, saying so; one whose
    folder cannot be read keeps its row as it was."""
    store = store if store is not None else Store()
    for job_id in store.active_job_ids():
        try:
            sync_job(store, job_id)
        except UserError:
            gone_job(store, job_id)
    return store.jobs()


def gone_job(store: Store, job_id: str) -> dict[str, Any] | None:
    """The stored row of job `job_id` if its folder no longer exists (marked failed, saying where
    the folder was, unless it had finished), else None (no such job, or its folder is there)."""
    row = store.job_row(job_id)
    if row is None:
        return None
    folder = Path(row["job_dir"]) if row.get("job_dir") else jobs_dir() / job_id
    if (folder / "config.json").exists():
        return None
    store.mark_job_failed(job_id, f"its folder {folder} is gone (removed while the job ran); "
                                  "nothing more of it can be read")
    return store.job_row(job_id)


# -- the equivalent command line ---------------------------------------------------------------------

def command_line(kind: str, config: TrainConfig | dict[str, Any]) -> str:
    """The `w2stree train ...` command that starts the same job (fields left at their preset's
    defaults are omitted)."""
    cfg = coerce_config(kind, config)
    base = make_config(kind, cfg.preset)
    parts = ["w2stree", "train", kind]
    if cfg.preset != "paper":
        parts += ["--preset", cfg.preset]
    for f in dataclasses.fields(config_class(kind)):
        value, default = getattr(cfg, f.name), getattr(base, f.name)
        if f.name == "preset" or value == default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + f.name.replace("_", "-"))
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


# -- running (inside the job process, or in-process) ----------------------------------------------------

def execute(job_dir: Path, resume: bool = False, inproc: bool = False) -> Path:
    """Run the job of `job_dir` in this process; returns the output model folder. Writes status,
    progress and metrics to the folder; on error records `failed` with the error and re-raises."""
    kind = _read_json(job_dir / "config.json").get("kind")
    if kind in OTHER_KINDS:  # not training: the kind's own function runs in the job process
        module, func = OTHER_KINDS[kind].split(":")
        return getattr(importlib.import_module(module), func)(job_dir)
    from transformers import PrinterCallback

    from core.train.common import is_main_process, save_model, setup_threads
    from core.train.progress import JobProgress

    meta = _read_json(job_dir / "config.json")
    kind = meta["kind"]
    cfg = config_from_dict(kind, meta["config"])
    main = is_main_process()
    if main:
        update_status(job_dir, status="running", pid=os.getpid(), inproc=inproc, error=None, finished_at=None,
                      started_at=_read_json(job_dir / "status.json").get("started_at") or now_iso())
    try:
        setup_threads(cfg)
        progress = JobProgress(job_dir, write=main)
        if not inproc:
            signal.signal(signal.SIGTERM, progress.request_stop)
        ckpt = last_checkpoint(job_dir) if resume else None
        if ckpt is not None:
            print(f"resuming from {ckpt.name}", flush=True)
        with tensorboard_logs(job_dir):
            trainer, tokenizer = _build_trainer(kind, cfg, read_rows(job_dir / "data.jsonl"), job_dir, progress)
        trainer.remove_callback(PrinterCallback)  # JobProgress prints one line per log instead
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
        if progress.stop_requested:
            if main:
                update_status(job_dir, status="stopped", eta_s=None, finished_at=now_iso())
            return Path(meta["output_path"])
        out = save_model(trainer, tokenizer, Path(meta["output_path"]), cfg.merge_lora)
        if main:
            params = sum(p.numel() for p in trainer.model.parameters())
            update_status(job_dir, status="succeeded", eta_s=0, output_path=str(out), params=params,
                          finished_at=now_iso())
        return out
    except BaseException as exc:
        if main:
            lines = [ln for ln in traceback.format_exception_only(exc)[-1].splitlines() if ln.strip()]
            update_status(job_dir, status="stopped" if isinstance(exc, KeyboardInterrupt) else "failed",
                          error=lines[-1] if lines else type(exc).__name__, eta_s=None, finished_at=now_iso())
        raise


def _build_trainer(kind: str, cfg: TrainConfig, rows: list[dict[str, Any]], job_dir: Path,
                   progress: Any) -> tuple[Any, Any]:
    if method(kind).trainer == "sft":
        from core.train.sft import build_sft_trainer

        return build_sft_trainer(cfg, rows, job_dir / "checkpoints", callbacks=[progress])
    from core.train.dpo import build_dpo_trainer

    return build_dpo_trainer(cfg, rows, job_dir / "checkpoints", callbacks=[progress])


def train(kind: str, config: TrainConfig | dict[str, Any], store: Store | None = None) -> Path:
    """Train in this process (the pipeline's path) as a recorded job; returns the output model
    folder, registered in the store with its lineage."""
    store = store if store is not None else Store()
    job_id = create_job(kind, config, store)
    try:
        return execute(jobs_dir() / job_id, inproc=True)
    finally:
        sync_job(store, job_id)
