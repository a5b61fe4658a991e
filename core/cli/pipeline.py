"""`w2stree eval` (greedy evaluation of one model), `w2stree pipeline` (the W2S experiment) and
`w2stree results` (its stored table, for people and scripts)."""

from __future__ import annotations

import argparse

from core.cli.context import (
    COUNT,
    NONNEGATIVE,
    add_pool_arguments,
    add_renamed_flag,
    env_arg,
    model_arg,
    open_store,
    pool_from_args,
)
from core.cli.fields import add_fields
from core.errors import UserError
from core.evaluate import evaluate
from core.methods import METHODS, STRONG, comparisons
from core.pipeline import run_pipeline
from core.results import FORMATS, render
from core.settings import GrowSettings, TreeSettings


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `eval`, `pipeline` and `results` commands."""
    controls = list(dict.fromkeys(b for m in STRONG for b in m.controls))
    e = sub.add_parser("eval", help="greedy episodes of a model on a split, stored as an eval run")
    e.add_argument("--model", required=True,
                   help="registered model name, folder or hub id; or a scripted policy: expert, random, "
                        "noisy-expert")
    e.add_argument("--server", metavar="URL[,URL...]", help="run the --model on these OpenAI-compatible "
                   "completions servers (vLLM, SGLang, `w2stree serve`)")
    e.add_argument("--env", type=env_arg, default="shop", help="environment (default: shop)")
    e.add_argument("--split", default="test", help="task split (default: test)")
    e.add_argument("--tasks", type=COUNT, default=None, metavar="N", help="the first N tasks of the split")
    e.add_argument("--label", default=None,
                   help="name the episodes are stored under (default: the model name)")
    e.add_argument("--max-steps", type=COUNT, default=None, help="cap episodes below the env's step limit")
    e.add_argument("--batch-size", type=COUNT, default=16, help="episodes per generate call (default: 16)")
    add_pool_arguments(e)
    e.set_defaults(func=_eval)

    p = sub.add_parser("pipeline", help="the weak-to-strong experiment end to end, with its results table",
                       description="Build models, SFT weak and strong on expert demonstrations, explore "
                                   "with the SFT-weak model, build trees, MCTS and pairs, train the strong "
                                   f"model {len(STRONG)} ways ({', '.join(m.name for m in STRONG)}) and the "
                                   f"compute-matched control ({', '.join(controls)}), evaluate all "
                                   f"{len(METHODS)}. The methods are core.methods.METHODS.")
    p.add_argument("--env", type=env_arg, default="shop", help="environment (default: shop)")
    p.add_argument("--scale", default="tiny",
                   help="tiny (CPU default, embedded models), quick (smoke test) or paper (real models)")
    add_renamed_flag(p, "--preset", "--scale")
    p.add_argument("--quick", action="store_true", help="the smoke-test scale (same as --scale quick)")
    p.add_argument("--seeds", type=NONNEGATIVE, nargs="+", default=[0], metavar="S", help="seeds (default: 0)")
    p.add_argument("--trajs-per-task", type=COUNT, nargs="+", default=None, metavar="K",
                   help="trajectories per explored task; several values sweep K (Figure 4)")
    p.add_argument("--split", default=None, choices=("dev", "test"),
                   help="where every model is evaluated: dev for choosing sizes and hyper-parameters, test "
                        "once, by the final run (default: the scale's, test)")
    p.add_argument("--test-tasks", type=COUNT, default=None, metavar="N",
                   help="tasks of the evaluation split (--split) every model is evaluated on")
    p.add_argument("--weak", default=None, help="base weak model (default: the scale's)")
    p.add_argument("--strong", default=None, help="base strong model (default: the scale's)")
    p.add_argument("--grow-budget", type=NONNEGATIVE, default=None, metavar="N",
                   help="targeted growth: N more episodes by the explorer from the nodes --grow-rule picks, "
                        "added to the trees (TreeDPO, MCTS) before the pairs are cut (default: the scale's, 0)")
    add_fields(p, GrowSettings, only=("rule",), prefix="grow", unset=True)
    add_fields(p, TreeSettings, only=("merge",), unset=True)
    p.add_argument("--server", metavar="URL[,URL...]",
                   help="run every rollout of a trained model (exploration, growth, evaluation) on these "
                        "OpenAI-compatible completions servers, each model loaded there as it is trained (vLLM "
                        "with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, SGLang with --enable-lora, "
                        "or `w2stree serve`); the model folders must be readable by the servers")
    p.add_argument("--reuse", action="store_true",
                   help="take trainings and explorations that already ran on identical inputs (same base "
                        "weights, data, settings, seed) from earlier runs instead of running them again; "
                        "evaluations always run")
    add_pool_arguments(p)
    p.set_defaults(func=_pipeline)

    r = sub.add_parser("results", help="the stored results of an experiment (latest by default)",
                       description="One row per method x seed x K: method, seed, k, env, avg_reward, "
                                   "success_rate, n_test, n_train_examples (null rewards: the method had no "
                                   "training data); csv prints these rows. json prints {\"rows\": [...], "
                                   "\"comparisons\": [...]}: each paired comparison with a, b, k, metric, diff, "
                                   "lo, hi (bootstrap resampling seeds, then tasks), t_lo, t_hi (t-interval over "
                                   "seeds), n_seeds, n_tasks. The table adds mean ± std over seeds, performance "
                                   "against K when there are several, and the comparisons with both intervals. "
                                   f"Methods, in table order: {', '.join(m.name for m in METHODS)}; comparisons: "
                                   f"{', '.join(f'{a} - {b}' for a, b in comparisons())}.")
    r.add_argument("--experiment", default=None, metavar="ID", help="experiment id (default: the latest)")
    r.add_argument("--format", default="table", choices=FORMATS, help="output format")
    r.set_defaults(func=_results)


def _eval(args: argparse.Namespace) -> int:
    store = open_store(args)
    res = evaluate(store, model_arg(store, args.model, args.env), args.env, args.split, args.tasks,
                   max_steps=args.max_steps, batch_size=args.batch_size, pool=pool_from_args(args), label=args.label,
                   progress=True, server=args.server)
    print(f"model         {res.label}")
    print(f"episodes      {res.n_episodes} ({args.env}/{args.split}, run {res.run_id})")
    print(f"avg reward    {res.avg_reward:.4f}")
    print(f"success rate  {res.success_rate:.4f}")
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    if args.test_tasks is not None and args.test_tasks < 1:
        raise UserError("--test-tasks must be at least 1")
    ks = args.trajs_per_task
    ks = ks[0] if ks and len(ks) == 1 else ks
    store = open_store(args)
    df = run_pipeline(args.env, "quick" if args.quick else args.scale, seeds=args.seeds, trajs_per_task=ks,
                      store=store, progress=True, weak=args.weak, strong=args.strong,
                      test_tasks=args.test_tasks, split=args.split, reuse=args.reuse,
                      grow_budget=args.grow_budget, grow_rule=args.grow_rule, merge=args.merge,
                      pool=pool_from_args(args), server=args.server)
    print(render(store, df.attrs["experiment_id"]))
    print(f"experiment {df.attrs['experiment_id']}: {df.attrs['wall_s']:.0f}s; stages: "
          + ", ".join(f"{k} {v:.0f}s" for k, v in df.attrs["timings"].items()))
    return 0


def _results(args: argparse.Namespace) -> int:
    print(render(open_store(args), args.experiment, args.format))
    return 0
