"""`w2stree train {sft,mcts,treedpo,eto-dpo}` and `w2stree jobs list|show|stop|resume|tensorboard`.

The methods, their data and configs are `core.train.config.METHODS`. Every config field of the
method is a flag (`--lora-r`, `--batch-size`, ...; booleans also take
`--no-...`); flags not given keep the value of `--preset`. Training always runs as a job in its
own process; without `--detach` the command follows the job's log until it ends (Ctrl-C stops it,
keeping a checkpoint for `w2stree jobs resume`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from core.cli.context import COUNT
from core.errors import UserError

if TYPE_CHECKING:
    from core.store import Store
    from core.train.config import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `train` and `jobs` commands."""
    from core.train.config import METHODS, PRESETS, RENAMED, field_help
    from core.train.data import SPEC_HELP

    p = sub.add_parser("train", help="train a model (SFT, MCTS, TreeDPO, ETO-DPO) as a job",
                       description="Train a model as a job (its own process). `w2stree train METHOD --help` "
                       "lists every option.", epilog="data SPEC grammar:\n" + SPEC_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = p.add_subparsers(dest="kind", metavar="METHOD", required=True)
    for m in METHODS.values():
        k = tsub.add_parser(m.name, help=m.help, description=m.help, epilog="data SPEC grammar:\n" + SPEC_HELP,
                            aliases=[old for old, new in RENAMED.items() if new == m.name],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        cls = m.config_class
        helps = field_help(cls)
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            if f.name == "preset":
                k.add_argument(flag, choices=sorted(PRESETS), default="paper", help=helps[f.name])
            elif f.type in ("bool", bool):
                k.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=helps[f.name])
            else:
                conv = {"int": int, "float": float}.get(str(f.type), str)
                k.add_argument(flag, type=conv, default=None, metavar=f.name.upper(), help=helps[f.name])
        k.add_argument("--detach", action="store_true", help="start the job and return at once")
        k.set_defaults(func=_train)

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


def config_from_args(kind: str, args: argparse.Namespace):
    """The config that the parsed `w2stree train METHOD ...` flags describe."""
    from core.train.config import config_class, make_config

    values = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(config_class(kind))}
    return make_config(kind, values.pop("preset") or "paper", **values)


def _train(args: argparse.Namespace) -> int:
    from core.cli.context import open_store
    from core.train import command_line, method, start_job

    kind = method(args.kind).name
    store = open_store(args)
    cfg = _full_names(store, config_from_args(kind, args))
    job_id = start_job(kind, cfg, store, detach=True)
    print(f"job {job_id} started: {command_line(kind, cfg)}")
    if args.detach:
        print(f"follow it with `w2stree jobs show {job_id}`; stop it with `w2stree jobs stop {job_id}`")
        return 0
    return _follow(store, job_id)


def _full_names(store: Store, cfg: TrainConfig) -> TrainConfig:
    """`cfg` with short model names (`sft-strong`, `tinyshop-weak`: core.names) made full, looked up
    in the world of its store data (`pairs:tinyshop:step`), else in the latest experiment."""
    from core.cli.context import model_arg
    from core.train.data import parse_spec

    env = parse_spec(cfg.data).env if cfg.data and ":" in cfg.data.partition("?")[0] else None
    names = {f: model_arg(store, getattr(cfg, f), env) for f in ("model", "ref") if hasattr(cfg, f)}
    return dataclasses.replace(cfg, **names)


def _follow(store, job_id: str) -> int:
    """Stream the job's log until it ends; Ctrl-C stops the job. Exit 0 only on success."""
    from core.train import job_status, stop_job, sync_job
    from core.train.jobs import ACTIVE

    log = Path(job_status(job_id)["job_dir"]) / "log.txt"
    pos = log.stat().st_size if log.exists() else 0
    try:
        while True:
            status = job_status(job_id)
            if log.exists():
                with open(log, "rb") as fh:
                    fh.seek(pos)
                    chunk = fh.read()
                    pos = fh.tell()
                sys.stdout.write(chunk.decode("utf-8", errors="replace"))
                sys.stdout.flush()
            if status["status"] not in ACTIVE:
                break
            time.sleep(1.0)
    except KeyboardInterrupt:
        print(f"\nstopping job {job_id} ...", file=sys.stderr)
        status = stop_job(job_id, store)
    status = sync_job(store, job_id)
    print(_summary(status))
    return 0 if status["status"] == "succeeded" else 1


def _summary(status: dict) -> str:
    line = f"job {status['job_id']}: {status['status']}, step {status.get('step') or 0}/{status.get('max_steps') or '?'}"
    if status.get("output_path"):
        line += f", model {status['output_path']}"
    if status.get("error"):
        line += f", error: {status['error']}"
    return line


def _list(args: argparse.Namespace) -> int:
    import pandas as pd

    from core.cli.context import open_store
    from core.train import list_jobs

    df = list_jobs(open_store(args))
    if df.empty:
        print("no jobs yet; start one with `w2stree train`")
        return 0
    df["progress"] = [f"{s}/{'?' if pd.isna(m) else int(m)}" for s, m in zip(df["step"], df["max_steps"])]
    print(df[["job_id", "kind", "status", "progress", "created_at", "output_path"]].fillna("").to_string(index=False))
    return 0


def _show(args: argparse.Namespace) -> int:
    from core.cli.context import open_store
    from core.train import job_log_tail, job_metrics, sync_job

    store = open_store(args)
    try:
        status = sync_job(store, args.job_id)
    except UserError as exc:
        return _gone(store, args.job_id, exc)
    print(_summary(status))
    if status.get("eta_s"):
        print(f"progress {status['progress']:.0%}, about {status['eta_s']:.0f}s left")
    metrics = job_metrics(args.job_id, store)
    if not metrics.empty:
        last = metrics[metrics["step"] == metrics["step"].max()]
        print(f"metrics at step {int(last['step'].iloc[0])}: "
              + ", ".join(f"{n}={v:.4g}" for n, v in zip(last["name"], last["value"])))
    print("--- log ---")
    print(job_log_tail(args.job_id, args.n))
    return 0


def _stop(args: argparse.Namespace) -> int:
    from core.cli.context import open_store
    from core.train import stop_job

    store = open_store(args)
    try:
        print(_summary(stop_job(args.job_id, store)))
    except UserError as exc:
        return _gone(store, args.job_id, exc)
    return 0


def _gone(store: Store, job_id: str, error: UserError) -> int:
    """`jobs show` / `jobs stop` of a job whose folder is gone: its stored row (marked failed);
    `error` (what reading the folder said) when it is not such a job."""
    from core.train import gone_job

    row = gone_job(store, job_id)
    if row is None:
        raise error
    print(_summary(row))
    return 0


def _tensorboard(args: argparse.Namespace) -> int:
    from core.train.tensorboard import tensorboard_command

    print(tensorboard_command(args.job_id))
    return 0


def _resume(args: argparse.Namespace) -> int:
    from core.cli.context import open_store
    from core.train import resume_job

    store = open_store(args)
    job_id = resume_job(args.job_id, store, detach=True)
    print(f"job {job_id} resumed from its last checkpoint")
    return 0 if args.detach else _follow(store, job_id)
