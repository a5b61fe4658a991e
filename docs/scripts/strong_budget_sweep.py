"""Sweep the training budget of the four W2S methods, one change at a time, on the data a pipeline
run stored, starting from that run's SFT-strong model; every variant is evaluated greedily on the
first N tasks of a split (`--tasks`, default 100) and compared per task with SFT-strong and
SFT-weak (core.results.paired_comparisons).

The split is **dev** by default (`--split`): a sweep is tuning, and the test split is for the
final run. Runs 5 and 9 used this script on test (test[:100], then all 200: `--split test
--tasks 200 --base EXPERIMENT`); docs/experiments.md, "Which figures were tuned on test", marks them.

    W2STREE_HOME=HOME python docs/scripts/strong_budget_sweep.py HOME KDIR [VARIANT ...] [--split dev] [--tasks N] [--base EXPERIMENT]

HOME holds the run's store and models (as for strong_methods_on_stored_data.py, beside this
script, whose setup it shares), KDIR its experiments/<id>/s0/k4 folder. The baselines are SFT-weak
and SFT-strong evaluated here on the same tasks, or, with `--base`, a stored experiment's
evaluations of them (which must cover those tasks). VARIANT names pick from VARIANTS (default:
all, in order).

Besides the stored training files (`tree_pairs`, `eto_pairs`, `best_paths`, `successes` in KDIR), a
variant may train on data derived here from the run's stored exploration (`DERIVED`): the tree
pairs at `continuation` granularity (every decision of each side), or only the step pairs the
SFT-strong model ranks wrong (`--hard-for`); and on the expert rows (`expert`, the SFT-continued
control). Derived files are written into KDIR once and reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pandas as pd
from strong_methods_on_stored_data import ENV, baseline_rows, stored_seed_run  # the script beside this one

from core import stages
from core.envs import env_slug
from core.pair_ranking import hard_pairs
from core.pipeline import train_unit, training_files
from core.results import episode_outcomes, paired_comparisons
from core.scales import continued_budget
from core.train.data import pair_rows, write_rows
from core.work import run_units

# name -> (method as in the results table, trainer kind, training file, overrides of the tiny scale's)
VARIANTS: dict[str, tuple[str, str, str, dict]] = {
    "treedpo-lr5e-5": ("TreeDPO", "treedpo", "tree_pairs", dict(lr=5e-5)),
    "treedpo-ref-strong": ("TreeDPO", "treedpo", "tree_pairs", dict(ref="strong")),
    "treedpo-beta0.5": ("TreeDPO", "treedpo", "tree_pairs", dict(beta=0.5)),
    "treedpo-lr2e-5": ("TreeDPO", "treedpo", "tree_pairs", dict(lr=2e-5)),
    "treedpo-lr1e-4": ("TreeDPO", "treedpo", "tree_pairs", dict(lr=1e-4)),
    "treedpo-lr2e-4": ("TreeDPO", "treedpo", "tree_pairs", dict(lr=2e-4)),
    "treedpo-lr5e-5-120": ("TreeDPO", "treedpo", "tree_pairs", dict(lr=5e-5, max_steps=120)),
    "treedpo-lr5e-5-seed1": ("TreeDPO", "treedpo", "tree_pairs", dict(lr=5e-5, seed=1)),
    "mcts-lr1e-4": ("MCTS", "mcts", "best_paths", dict(lr=1e-4)),
    "mcts-1epoch": ("MCTS", "mcts", "best_paths", dict(max_steps=-1, epochs=1.0)),
    "mcts-lr5e-5": ("MCTS", "mcts", "best_paths", dict(lr=5e-5)),
    "w2s-lr1e-4": ("W2S-SFT", "sft", "successes", dict(lr=1e-4)),
    "etodpo-lr5e-5": ("ETO-DPO", "eto-dpo", "eto_pairs", dict(lr=5e-5)),
    "treedpo-continuation": ("TreeDPO", "treedpo", "tree_pairs_continuation", {}),
    "treedpo-hard": ("TreeDPO", "treedpo", "tree_pairs_hard", {}),
    "treedpo-240": ("TreeDPO", "treedpo", "tree_pairs", dict(max_steps=240)),
    "continued-240": ("SFT-continued", "sft", "expert", dict(max_steps=240)),
    "treedpo-lr2e-4-dev": ("TreeDPO", "treedpo", "tree_pairs", dict(lr=2e-4)),
    "continued-lr2e-4": ("SFT-continued", "sft", "expert", dict(lr=2e-4)),
}
BUDGET = {"TreeDPO": "dpo", "ETO-DPO": "dpo", "MCTS": "mcts_sft", "W2S-SFT": "w2s_sft"}
DERIVED = ("tree_pairs_continuation", "tree_pairs_hard", "expert")


def training_file(data: str, kdir: Path, store, run, strong: Path) -> Path:
    """The training file `data` of the run: a stored one in KDIR, or a DERIVED one built now (once)."""
    path = kdir / f"{data}.jsonl"
    if data == "expert":  # the run's demonstrations, written by the pipeline beside the seed folders
        return kdir.parents[1] / "expert.jsonl"
    if path.exists() or data not in DERIVED:
        return path
    explored = store.trajectories(source="collect", model=run.sft_model("weak"))
    if data == "tree_pairs_continuation":  # the same trees, pairs cut at continuation granularity
        cfg = dataclasses.replace(run.cfg, pair_granularity="continuation")
        experts = stages.demonstrations(store, ENV, sorted({t.task_id for t in explored}))
        (path.parent / "continuation").mkdir(exist_ok=True)
        files, _ = training_files(store, cfg, explored, experts, run.seed, path.parent / "continuation",
                                  run.rep, save=False)
        path.write_text(files["tree_pairs"].read_text())
    else:  # the step pairs SFT-strong ranks wrong (data values: no MCTS needed)
        pairs = stages.cut_pairs(stages.grow_trees(explored), stages.PairSettings("step"))
        write_rows(pair_rows(hard_pairs(pairs, str(strong), store)), path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("home", type=Path)
    ap.add_argument("kdir", type=Path)
    ap.add_argument("variants", nargs="*", choices=[[], *VARIANTS], default=[])
    ap.add_argument("--split", default="dev", help="the split evaluated on (default dev; test only for a final run)")
    ap.add_argument("--tasks", "--test", dest="tasks", type=int, default=100,
                    help="evaluate on the first N tasks of the split (--test is the old name)")
    ap.add_argument("--base", metavar="EXPERIMENT", help="a stored experiment whose SFT-weak and SFT-strong "
                    "evaluations are the baselines (default: evaluate both here)")
    args = ap.parse_args()
    home, kdir, names = args.home, args.kdir, args.variants or list(VARIANTS)
    store, run, weak, strong = stored_seed_run(home, "sweep", args.tasks, args.split)
    cfg, rep, slug = run.cfg, run.rep, env_slug(ENV)
    base = store.results(args.base) if args.base else pd.DataFrame(baseline_rows(store, run, weak, strong))
    base = base[base["method"].isin(["SFT-weak", "SFT-strong"])]
    for name in names:
        method, kind, data, over = VARIANTS[name]
        over = dict(over)
        train_seed = over.pop("seed", 0)  # the data order; the evaluation is greedy
        ref = {"strong": str(strong)}.get(over.pop("ref", ""), str(weak)) if kind in ("treedpo", "eto-dpo") else None
        extra = {"ref": ref} if ref else {}
        file = training_file(data, kdir, store, run, strong)
        rows = sum(1 for line in file.read_text().splitlines() if line.strip())
        output = f"{slug}-sweep-{name}"
        t0 = time.monotonic()
        budget = continued_budget(cfg) if method == "SFT-continued" else getattr(cfg, BUDGET[method])
        unit = train_unit(name, kind, cfg, {**budget, **over}, rows, model=str(strong),
                          data=str(file), output=output, seed=train_seed, **extra)
        done = run_units([unit, run.eval_unit(method, run.model_path(output), 4, (f"train {name}",))],
                         store, 1, rep)
        res = done[f"eval {method}"].result.averages()
        row = dict(experiment_id=f"sweep-{name}", env=ENV, method=name, model=output, seed=0, trajs_per_task=4,
                   n_examples=rows, **res)
        store.add_results([{**row, "method": method}])
        both = pd.concat([base.assign(trajs_per_task=4), pd.DataFrame([row])], ignore_index=True)
        cmp = paired_comparisons(episode_outcomes(store, both), claims=((name, "SFT-weak"), (name, "SFT-strong")))
        print(f"\n{name}: reward {res['avg_reward']:.3f} success {res['success_rate']:.2f} "
              f"({time.monotonic() - t0:.0f} s)", flush=True)
        print(cmp.to_string(index=False), flush=True)


if __name__ == "__main__":
    main()
