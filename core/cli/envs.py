"""Environment commands: collect, replay.

    w2stree collect --env ENV --policy {expert,random,noisy-expert,MODEL} [--server URL[,URL...]] [--split train]
                    [--tasks N | --task-ids ID ...] [--schedule paper | --samples K
                    --temperature T --top-p P] [--max-steps S] [--batch-size B]
                    [--workers W] [--executor local|process|ray] [--ray-address ADDR] [--recycle K]
                    [--resume RUN_ID] [--seed S] [--env-arg KEY=VALUE ...] [--source collect|eval]
                    [--shard I/N] [--spool FILE]
    w2stree replay  [--env ENV] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from core.agents.base import PAPER_SCHEDULE, Sampling, sampling_schedule
from core.agents.registry import make_policy
from core.cli.context import (
    COUNT,
    NONNEGATIVE,
    add_pool_arguments,
    env_arg,
    model_arg,
    open_store,
    pool_from_args,
)
from core.collect import collect, parse_shard
from core.console import plural
from core.envs import canonical_env_name
from core.envs.base import make_env, select_tasks
from core.errors import UserError
from core.replay import replay


def register(sub: argparse._SubParsersAction) -> None:
    """Add the environment verbs to the `w2stree` parser."""
    p = sub.add_parser("collect", help="run a policy on an environment's tasks and store the episodes",
                       description="Run episodes (one per task and sampling setting) and store every "
                                   "trajectory as it finishes. Ctrl-C keeps what finished; continue "
                                   "with --resume RUN_ID.")
    p.add_argument("--env", type=env_arg, required=True, help="environment: shop, sciworld, alfworld, webshop")
    p.add_argument("--policy", required=True,
                   help="expert, random, noisy-expert, or a model (registered name, local folder or hub id)")
    p.add_argument("--server", metavar="URL[,URL...]", help="run the --policy model on these OpenAI-compatible "
                   "completions servers (vLLM, SGLang, `w2stree serve`); its tokenizer builds the prompts here")
    p.add_argument("--split", default="train", help="task split (default: train)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--tasks", type=COUNT, metavar="N", help="the first N tasks of the split (default: all)")
    which.add_argument("--task-ids", nargs="+", metavar="ID", help="these task ids")
    p.add_argument("--schedule", choices=("paper",),
                   help="paper: greedy + (T, top-p) = (0.7, 0.9), (1.0, 0.8), (1.0, 0.9)")
    p.add_argument("--samples", type=COUNT, default=1, metavar="K", help="K episodes per task at one setting")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-steps", type=COUNT, metavar="S", help="step limit (default: the env's)")
    add_pool_arguments(p)
    p.add_argument("--batch-size", type=COUNT, metavar="B",
                   help="episodes run in lockstep, one env each (default 32; sciworld 4 per worker)")
    p.add_argument("--resume", metavar="RUN_ID", help="continue this run, skipping finished episodes")
    p.add_argument("--seed", type=NONNEGATIVE, default=0, help="policy / sampling seed (default 0)")
    p.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="environment constructor argument, e.g. seed=1 or n_products=2000 (repeatable)")
    p.add_argument("--source", choices=("collect", "eval"), default="collect",
                   help="stored source: collect (exploration, demonstrations) or eval")
    p.add_argument("--shard", metavar="I/N", help="run every N-th task from the I-th only (I = 0..N-1): "
                   "one of N collectors, e.g. on N machines")
    p.add_argument("--spool", metavar="FILE", help="append the episodes to this JSONL spool file instead of "
                   "the store (opened not at all); ingest it with `w2stree import jsonl FILE` where the store is")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("replay", help="replay stored trajectories and check their rewards and scores",
                       description="Replay every stored trajectory in a fresh env of its task and report "
                                   "where the reward (or ScienceWorld's per-step score) differs. Exit "
                                   "status 1 when anything differs.")
    p.add_argument("--env", type=env_arg, help="only this environment")
    p.add_argument("--limit", type=COUNT, metavar="N", help="at most N trajectories")
    p.set_defaults(func=cmd_replay)


def parse_env_args(items: list[str]) -> dict[str, Any]:
    """`["seed=1", "name=x"]` -> `{"seed": 1, "name": "x"}` (values as JSON when they parse)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--env-arg {item!r} is not KEY=VALUE; e.g. --env-arg seed=1")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def env_with_args(env: str, env_kwargs: dict[str, Any]) -> str:
    """The canonical name of the world `--env ENV --env-arg ...` builds (what the store keeps
    its tasks and trajectories under)."""
    return canonical_env_name(env, **env_kwargs)


def schedule_from_args(args: argparse.Namespace) -> list[Sampling]:
    """The sampling settings: the paper schedule, or K samples at one (temperature, top-p)."""
    if args.schedule == "paper":
        return list(PAPER_SCHEDULE)
    if args.samples < 1 or args.temperature < 0 or not 0 < args.top_p <= 1:
        raise UserError("need --samples >= 1, --temperature >= 0 and 0 < --top-p <= 1")
    base = Sampling(args.temperature, args.top_p)
    if args.samples > 1 and base.greedy:
        raise UserError(f"--samples {args.samples} with greedy decoding gives identical episodes; "
                        "set --temperature > 0")
    return list(sampling_schedule(args.samples, (base,)))


def cmd_collect(args: argparse.Namespace) -> int:
    env_kwargs = parse_env_args(args.env_arg)
    world = env_with_args(args.env, env_kwargs)
    schedule = schedule_from_args(args)
    shard = parse_shard(args.shard) if args.shard else None
    pool = pool_from_args(args)
    store = None if args.spool else open_store(args)  # a spooling collector may run where no store is
    if args.task_ids:
        task_ids = args.task_ids
    else:
        with make_env(world) as env:
            task_ids = select_tasks(env, args.split, args.tasks)
    name = model_arg(store, args.policy, world) if store is not None else args.policy
    policy = make_policy(name, world, seed=args.seed, store=store,
                         env_kwargs=env_kwargs, server=args.server)
    try:
        res = collect(store, world, policy, task_ids, schedule, max_steps=args.max_steps,
                      pool=pool, batch_size=args.batch_size, source=args.source,
                      run_id=args.resume, resume=bool(args.resume), env_kwargs=env_kwargs, seed=args.seed,
                      shard=shard, spool=args.spool)
    finally:
        policy.close()
    where = f"spool {args.spool}" if store is None else f"store {store.path}"
    print(f"run {res.run_id}: {plural(res.n_episodes, 'episode')}, average reward {res.avg_reward:.3f}, "
          f"success rate {res.success_rate:.1%} ({where})")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    report = replay(open_store(args), env=args.env, limit=args.limit)
    print(f"replayed {plural(report.checked, 'trajectory')}: {plural(len(report.mismatches), 'mismatch')}, "
          f"{len(report.skipped)} skipped")
    reasons: dict[str, int] = {}
    for _, reason in report.skipped:
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, n in reasons.items():
        print(f"  skipped {n}: {reason}")
    for m in report.mismatches[:50]:
        print(f"  {m.traj_id} ({m.env}/{m.task_id}) step {m.step}: {m.field} expected {m.expected!r}, "
              f"got {m.got!r}", file=sys.stderr)
    if len(report.mismatches) > 50:
        print(f"  ... and {len(report.mismatches) - 50} more", file=sys.stderr)
    return 1 if report.mismatches else 0
