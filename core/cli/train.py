"""`w2stree train {sft,mcts,treedpo,eto-dpo}`, and the train command that a config is (`command_line`).

The methods, their data and configs are `core.train.config.METHODS`. Every config field of the
method is a flag (`--lora-r`, `--batch-size`, ...; booleans also take `--no-...`), made by
`core.cli.fields`; flags not given keep the value of `--preset`. Training always runs as a job in its
own process; without `--detach` the command follows the job's log until it ends (Ctrl-C stops it,
keeping a checkpoint for `w2stree jobs resume`; the `jobs` verbs are `core.cli.jobs`).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from typing import TYPE_CHECKING, Any

from core.cli.context import model_arg, open_store
from core.cli.fields import add_fields, field_values
from core.cli.jobs import follow
from core.train import method, start_job
from core.train.config import METHODS, PRESETS, RENAMED, config_class, make_config
from core.train.data import SPEC_HELP, parse_spec
from core.train.jobs import coerce_config

if TYPE_CHECKING:
    from core.store import Store
    from core.train.config import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `train` command."""
    p = sub.add_parser("train", help="train a model (SFT, MCTS, TreeDPO, ETO-DPO) as a job",
                       description="Train a model as a job (its own process). `w2stree train METHOD --help` "
                       "lists every option.", epilog="data SPEC grammar:\n" + SPEC_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = p.add_subparsers(dest="kind", metavar="METHOD", required=True)
    for m in METHODS.values():
        k = tsub.add_parser(m.name, help=m.help, description=m.help, epilog="data SPEC grammar:\n" + SPEC_HELP,
                            aliases=[old for old, new in RENAMED.items() if new == m.name],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        add_fields(k, m.config_class, unset=True, preset=dict(choices=sorted(PRESETS), default="paper"))
        k.add_argument("--detach", action="store_true", help="start the job and return at once")
        k.set_defaults(func=_train)


def config_from_args(kind: str, args: argparse.Namespace):
    """The config that the parsed `w2stree train METHOD ...` flags describe."""
    values = field_values(config_class(kind), args)
    return make_config(kind, values.pop("preset", None) or "paper", **values)


def _train(args: argparse.Namespace) -> int:
    kind = method(args.kind).name
    store = open_store(args)
    cfg = _full_names(store, config_from_args(kind, args))
    job_id = start_job(kind, cfg, store, detach=True)
    print(f"job {job_id} started: {command_line(kind, cfg)}")
    if args.detach:
        print(f"follow it with `w2stree jobs show {job_id}`; stop it with `w2stree jobs stop {job_id}`")
        return 0
    return follow(store, job_id)


def _full_names(store: Store, cfg: TrainConfig) -> TrainConfig:
    """`cfg` with short model names (`sft-strong`, `tinyshop-weak`: core.names) made full, looked up
    in the world of its store data (`pairs:tinyshop:step`), else in the latest experiment."""
    env = parse_spec(cfg.data).env if cfg.data and ":" in cfg.data.partition("?")[0] else None
    names = {f: model_arg(store, getattr(cfg, f), env) for f in ("model", "ref") if hasattr(cfg, f)}
    return dataclasses.replace(cfg, **names)


def command_line(kind: str, config: TrainConfig | dict[str, Any]) -> str:
    """The `w2stree train ...` command that starts the same job (fields left at their preset's
    defaults are omitted): the inverse of `config_from_args`."""
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


