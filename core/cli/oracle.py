"""The oracle verb: true values of tree nodes by the env's expert, and how right the labels are.

    w2stree oracle --env ENV [--task ID] [--redo]
    w2stree oracle --report [--env ENV] [--task ID] [--model M [--ref R]] [--format table|json]
"""

from __future__ import annotations

import argparse
import json

from core.cli.context import env_arg, model_arg, open_store
from core.cli.data import _bar
from core.errors import UserError
from core.oracle import check_oracle, label_stored
from core.oracle_report import model_ranking, oracle_report, report_lines


def register(sub: argparse._SubParsersAction) -> None:
    """Add `oracle` to the `w2stree` parser."""
    p = sub.add_parser("oracle", help="true values of tree nodes by the env's expert; label accuracy report",
                       description="Without --report: replay every node's action prefix of the stored trees "
                                   "in a fresh env and let the env's expert play from there within the steps "
                                   "left; store the reward it reaches (true_value) and its steps (true_steps). "
                                   "Only envs whose expert plans from any state (shop) have an oracle. "
                                   "--report: label accuracy of the stored pairs, MCTS Q and data mean "
                                   "against the true value, and with --model how a model ranks the pairs.")
    p.add_argument("--env", type=env_arg, help="environment of the trees (required without --report)")
    p.add_argument("--task", metavar="ID", help="only this task's tree")
    p.add_argument("--redo", action="store_true", help="recompute nodes that already have a true value")
    p.add_argument("--report", action="store_true", help="report instead of computing")
    p.add_argument("--model", help="--report: also the share of pairs this model ranks right (path or name)")
    p.add_argument("--ref", help="--report with --model: DPO implicit-reward accuracy at step 0 against "
                                 "this reference model")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_oracle)


def cmd_oracle(args: argparse.Namespace) -> int:
    if args.ref and not args.model:
        raise UserError("--ref needs --model (the DPO reward compares the model with the reference)")
    if (args.model or args.format == "json") and not args.report:
        raise UserError("--model, --ref and --format belong to --report; add --report")
    store = open_store(args)
    if args.report:
        report = oracle_report(store, args.env, args.task)
        if args.model:
            report["ranking"] = model_ranking(store, model_arg(store, args.model, args.env),
                                              model_arg(store, args.ref, args.env), args.env, args.task)
        print(json.dumps(report, indent=1) if args.format == "json" else "\n".join(report_lines(report)))
        return 0
    if not args.env:
        raise UserError("name the env of the trees: w2stree oracle --env ENV (or --report)")
    check_oracle(args.env)
    ids = store.trees(args.env, args.task)["tree_id"].tolist()
    if not ids:
        raise UserError(f"no trees of env {args.env!r}{' task ' + repr(args.task) if args.task else ''}; "
                        "run `w2stree tree` first")
    with _bar(len(ids), "oracle") as bar:
        summary = label_stored(store, ids, redo=args.redo, progress=bar.update)
    print(summary.line())
    return 0
