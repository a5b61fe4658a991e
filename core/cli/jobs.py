"""`w2stree jobs list|show|stop|resume|tensorboard`: every job (training, explore, fill) as the
terminal shows it, and following a job's log until it ends (`follow`, for `train` and `resume`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from core import jobs
from core.cli.context import COUNT, open_store
from core.errors import UserError
from core.store import Store
from core.train.tensorboard import tensorboard_command


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `jobs` command."""
    j = sub.add_parser("jobs", help="list, show, stop or resume training jobs; their TensorBoard command")
    jsub = j.add_subparsers(dest="jobs_command", metavar="ACTION")
    jsub.add_parser("list", help="all jobs, newest first").set_defaults(func=_list)
    for name, fn, text in (("show", _show, "status, progress, last metrics and log tail of a job"),
                           ("stop", _stop, "stop a running job (it keeps a checkpoint)"),
                           ("resume", _resume, "continue a stopped or failed job from its last checkpoint"),
                           ("tensorboard", _tensorboard, "print the command that opens a job's TensorBoard logs")):
        a = jsub.add_parser(name, help=text)
        a.add_argument("job_id")
        if name == "resume":
            a.add_argument("--detach", action="store_true", help="return at once instead of following")
        if name == "show":
            a.add_argument("-n", type=COUNT, default=20, help="log lines to show (default 20)")
        a.set_defaults(func=fn)
    j.set_defaults(func=_list)
def follow(store: Store, job_id: str) -> int:
    """Stream the job's log until it ends; Ctrl-C stops the job. Exit 0 only on success."""
    log = Path(jobs.job_status(job_id)["job_dir"]) / "log.txt"
    pos = log.stat().st_size if log.exists() else 0
    try:
        while True:
            status = jobs.job_status(job_id)
            if log.exists():
                with open(log, "rb") as fh:
                    fh.seek(pos)
                    chunk = fh.read()
                    pos = fh.tell()
                sys.stdout.write(chunk.decode("utf-8", errors="replace"))
                sys.stdout.flush()
            if status["status"] not in jobs.ACTIVE:
                break
            time.sleep(1.0)
    except KeyboardInterrupt:
        print(f"\nstopping job {job_id} ...", file=sys.stderr)
        status = jobs.stop_job(job_id, store)
    status = jobs.sync_job(store, job_id)
    print(_summary(status))
    return 0 if status["status"] == "succeeded" else 1


def _summary(status: dict[str, Any]) -> str:
    line = f"job {status['job_id']}: {status['status']}, step {status.get('step') or 0}/{status.get('max_steps') or '?'}"
    if status.get("output_path"):
        line += f", model {status['output_path']}"
    if status.get("error"):
        line += f", error: {status['error']}"
    return line


def _list(args: argparse.Namespace) -> int:
    df = jobs.list_jobs(open_store(args))
    if df.empty:
        print("no jobs yet; start one with `w2stree train`")
        return 0
    df["progress"] = [f"{s}/{'?' if pd.isna(m) else int(m)}" for s, m in zip(df["step"], df["max_steps"])]
    print(df[["job_id", "kind", "status", "progress", "created_at", "output_path"]].fillna("").to_string(index=False))
    return 0


def _show(args: argparse.Namespace) -> int:
    store = open_store(args)
    try:
        status = jobs.sync_job(store, args.job_id)
    except UserError as exc:
        return _gone(store, args.job_id, exc)
    print(_summary(status))
    if status.get("eta_s"):
        print(f"progress {status['progress']:.0%}, about {status['eta_s']:.0f}s left")
    metrics = jobs.job_metrics(args.job_id, store)
    if not metrics.empty:
        last = metrics[metrics["step"] == metrics["step"].max()]
        print(f"metrics at step {int(last['step'].iloc[0])}: "
              + ", ".join(f"{n}={v:.4g}" for n, v in zip(last["name"], last["value"])))
    print("--- log ---")
    print(jobs.job_log_tail(args.job_id, args.n))
    return 0


def _stop(args: argparse.Namespace) -> int:
    store = open_store(args)
    try:
        print(_summary(jobs.stop_job(args.job_id, store)))
    except UserError as exc:
        return _gone(store, args.job_id, exc)
    return 0


def _gone(store: Store, job_id: str, error: UserError) -> int:
    """`jobs show` / `jobs stop` of a job whose folder is gone: its stored row (marked failed);
    `error` (what reading the folder said) when it is not such a job."""
    row = jobs.gone_job(store, job_id)
    if row is None:
        raise error
    print(_summary(row))
    return 0


def _tensorboard(args: argparse.Namespace) -> int:
    print(tensorboard_command(args.job_id))
    return 0


def _resume(args: argparse.Namespace) -> int:
    store = open_store(args)
    job_id = jobs.resume_job(args.job_id, store, detach=True)
    print(f"job {job_id} resumed from its last checkpoint")
    return 0 if args.detach else follow(store, job_id)
