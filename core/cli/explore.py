"""The explore verbs: grow a stored tree from one of its nodes, or many trees where a rule says.

    w2stree explore --env ENV --task ID --node N --policy P [--server URL[,URL...]] [-k K]
                    [--schedule paper | --temperature T --top-p P] [--max-steps S]
                    [--seed S] [--env-arg KEY=VALUE ...] [--detach]
                    [--workers W] [--executor local|process|ray] [--ray-address ADDR] [--recycle K]
    w2stree grow --env ENV --policy P [--server URL[,URL...]] --budget N
                 [--rule deepest-failure|value-drop|ucb|pair-check] [-k K]
                 [--per-tree M] [--max-steps S] [--c C] [--seed S] [--detach]
                 [--workers W] [--executor local|process|ray] [--ray-address ADDR] [--recycle K]

The settings flags are the fields of `core.settings.ExploreSettings` and `GrowSettings`.
"""

from __future__ import annotations

import argparse

from core.cli.context import (
    NONNEGATIVE,
    add_pool_arguments,
    env_arg,
    model_arg,
    open_store,
    pool_from_args,
)
from core.cli.envs import env_with_args, parse_env_args
from core.cli.fields import add_fields, from_args
from core.explore import ExploreSpec, explore
from core.explore_job import start_job as start_explore_job
from core.grow import grow
from core.grow_job import start_job as start_grow_job
from core.settings import ExploreSettings, GrowSettings


def register(sub: argparse._SubParsersAction) -> None:
    """Add `explore` to the `w2stree` parser."""
    p = sub.add_parser("explore", help="continue a tree from one of its nodes with a policy (K new branches)",
                       description="Replay node N's actions in a fresh env of the task (every observation "
                                   "must equal the stored one), continue K times with the policy, store the "
                                   "trajectories (source explore) and update that tree and its MCTS.")
    p.add_argument("--env", type=env_arg, required=True, help="environment of the tree: shop, sciworld, alfworld, ...")
    p.add_argument("--task", required=True, metavar="ID", help="task id of the tree")
    p.add_argument("--node", required=True, type=NONNEGATIVE, metavar="N", help="node id to explore from (0 = root)")
    p.add_argument("--policy", required=True,
                   help="expert (re-plans from the node's state), noisy-expert, random, or a registered model")
    p.add_argument("--server", metavar="URL[,URL...]", help="run the --policy model on these OpenAI-compatible "
                   "completions servers (vLLM, SGLang, `w2stree serve`)")
    add_fields(p, ExploreSettings)
    p.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="environment constructor argument (repeatable)")
    p.add_argument("--detach", action="store_true",
                   help="run as a background job (follow it with `w2stree jobs show JOB`)")
    add_pool_arguments(p)
    p.set_defaults(func=cmd_explore)

    g = sub.add_parser("grow", help="spend a budget of episodes where the trees' decisions are undecided",
                       description="Rank the nodes of every stored tree of ENV by a rule (deepest-failure: "
                                   "nodes whose subtree only failed, deepest first; value-drop: the decisions "
                                   "that lost most value; ucb: MCTS's selection score), and explore K "
                                   "continuations (the paper's schedule) from the best BUDGET / K of them "
                                   "with the policy; the trees grow in place.")
    g.add_argument("--env", type=env_arg, required=True, help="environment of the trees")
    g.add_argument("--policy", required=True, help="the explorer: a registered model (the weak one, for the "
                                                   "method), or noisy-expert, random, expert")
    add_fields(g, GrowSettings)
    g.add_argument("--server", metavar="URL[,URL...]", help="run the --policy model on these OpenAI-compatible "
                   "completions servers (vLLM, SGLang, `w2stree serve`)")
    g.add_argument("--detach", action="store_true",
                   help="run as a background job (follow it with `w2stree jobs show JOB`)")
    add_pool_arguments(g)
    g.set_defaults(func=cmd_grow)


def cmd_explore(args: argparse.Namespace) -> int:
    env_kwargs = parse_env_args(args.env_arg)
    store = open_store(args)
    world = env_with_args(args.env, env_kwargs)
    spec = from_args(ExploreSpec, args, env=world, task_id=args.task, node=args.node,
                     policy=model_arg(store, args.policy, world), env_kwargs=env_kwargs, server=args.server,
                     pool=pool_from_args(args))
    if args.detach:
        print(f"started job {start_explore_job(spec, store)}; follow it with `w2stree jobs show`")
        return 0
    res = explore(store, spec, progress=lambda done, k, msg: print(f"[{done}/{k}] {msg}", flush=True))
    print(res.line(spec))
    if res.new_nodes:
        print(f"new nodes: {' '.join(map(str, res.new_nodes))}")
    return 0


def cmd_grow(args: argparse.Namespace) -> int:
    settings, pool = from_args(GrowSettings, args), pool_from_args(args)
    store = open_store(args)
    policy = model_arg(store, args.policy, args.env)
    if args.detach:
        print(f"started job {start_grow_job(store, args.env, policy, settings, pool, args.server)}; follow it "
              "with `w2stree jobs show`")
        return 0
    report = grow(store, args.env, policy, settings, pool=pool, server=args.server,
                  progress=lambda done, total, line: print(f"[{done}/{total}] {line}", flush=True))
    print(report.line())
    return 0
