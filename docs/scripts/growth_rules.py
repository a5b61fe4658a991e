"""Targeted growth measured on dev (issue "Put the pairs where the mistakes are"): each rule of
`core.grow` on a copy of a stored run, judged by the shop's oracle and by TreeDPO.

    W2STREE_HOME=COPY python docs/scripts/growth_rules.py COPY RULE [--budget N] [-k K] [--keep N]
        [--merge action|state] [--base EXPERIMENT] [--tasks 200] [--train]

COPY is a copy of the run's home (store and models; growth writes into the store, so every rule
needs its own copy). RULE is a `core.grow` rule, or `none` for the run's trees as they are. The
script rebuilds seed 0's trees from the stored exploration of the run's SFT-weak model (MCTS as
the pipeline runs it), grows them by the rule with that same weak model (budget N episodes, K = 4,
the paper's schedule, within the 10-step cap), cuts the step pairs, labels every node with the
oracle and prints: trees with both outcomes, pairs per tree, and the oracle's verdicts on the
pairs. A pair "differs for the expert" when the expert, re-planning from each side, reaches a
different reward or needs a different number of steps (`right` + `wrong` by steps); the rest are
`equal`: the expert wins as fast from both sides. With `--train`, TreeDPO is trained on these pairs
with the tiny scale's budget from the run's SFT-strong (reference SFT-weak) and evaluated greedily
on dev[:tasks], paired with the base experiment's SFT-strong on the same tasks.

`--keep N` keeps each task's first N explored episodes (of the paper schedule's 4), so that the
explored and the grown episodes together can equal the plain run's (`--keep 3 --budget 750`: 3,000
weak episodes, as the run's 4 x 750). `--merge state` builds the trees with the state merge
(`core.state_merge`), before the growth and again over all episodes after it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from strong_methods_on_stored_data import ENV, stored_seed_run  # the script beside this one

from core import stages
from core.envs import env_slug
from core.grow import grow
from core.oracle import label_stored
from core.oracle_report import judge_pairs, label_table
from core.pipeline import train_unit
from core.results import episode_outcomes, paired_comparisons
from core.settings import GROW_RULES, GrowSettings
from core.train.data import pair_rows, write_rows
from core.trajectory import Trajectory
from core.work import run_units


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("home", type=Path)
    ap.add_argument("rule", choices=("none", *GROW_RULES))
    ap.add_argument("--budget", type=int, default=600, help="new episodes (default 600: a fifth of the run's 3,000)")
    ap.add_argument("-k", type=int, default=4, help="continuations per grown node (default 4: the paper schedule)")
    ap.add_argument("--keep", type=int, default=None, help="explored episodes kept per task (default: all)")
    ap.add_argument("--merge", choices=("action", "state"), default="action", help="how the trees merge")
    ap.add_argument("--stored", action="store_true",
                    help="take the episodes an earlier growth stored in COPY instead of growing again")
    ap.add_argument("--base", metavar="EXPERIMENT", help="the stored dev experiment whose SFT-strong is the baseline")
    ap.add_argument("--tasks", type=int, default=200, help="evaluate on the first N dev tasks")
    ap.add_argument("--train", action="store_true", help="train TreeDPO on the pairs and evaluate it on dev")
    args = ap.parse_args()
    tag = f"{args.rule}{'-state' if args.merge == 'state' else ''}{f'-keep{args.keep}' if args.keep else ''}"
    store, run, weak, strong = stored_seed_run(args.home, f"growth-{tag}", args.tasks, "dev")
    t0 = time.monotonic()
    explored = kept(store.trajectories(source="collect", model=run.sft_model("weak")), args.keep)
    settings, mcts = stages.TreeSettings(args.merge), stages.MCTSSettings(iterations=run.cfg.mcts_iterations)
    trees = scored_trees(store, explored, settings, mcts)
    grown: list[Trajectory] = []
    if args.stored:
        grown = store.trajectories(source="explore")
        if args.merge == "action":  # as `grow` adds them (the state merge rebuilds the trees below)
            for g in trees:
                g.extend([t for t in grown if t.task_id == g.task_id])
            store.save_trees(stages.score_trees(trees, mcts))
    elif args.rule != "none":
        report = grow(store, ENV, str(weak), GrowSettings(budget=args.budget, rule=args.rule, k=args.k, max_steps=10),
                      tree_ids=[g.tree_id for g in trees])
        print(report.line(), f"({time.monotonic() - t0:.0f} s)", flush=True)
        grown = store.trajectories(traj_ids=[t for r in report.results for t in r.traj_ids])
    if args.merge == "state" and grown:  # grown episodes meet the others' states too
        trees = scored_trees(store, explored + grown, settings, mcts)
    trees = store.load_trees(tree_ids=[g.tree_id for g in trees])
    print(f"weak episodes: {len(explored)} explored + {len(grown)} grown = {len(explored) + len(grown)}", flush=True)
    pairs = stages.cut_pairs(trees, stages.PairSettings("step"))
    stages.replace_pairs(store, trees, "step", pairs)
    label_stored(store, [g.tree_id for g in trees])
    judged = judge_pairs(store.pair_truths(ENV))
    table = label_table(judged[judged["granularity"] == "step"])
    both = sum(1 for g in trees if g.successes[0] and g.failures[0])
    row = table[table["margin"] == "all"].iloc[0]
    differ = row["steps_right"] + row["steps_wrong"]
    judged_n = differ + row["steps_equal"]
    print(f"{tag}: {len(trees)} trees, {both} with both outcomes, {len(pairs)} step pairs "
          f"({len(pairs) / len(trees):.2f} per tree); sides differ for the expert in {differ} of {judged_n} "
          f"({differ / max(judged_n, 1):.1%}: chosen better {row['steps_right']}, rejected better "
          f"{row['steps_wrong']}); by value right {row['right']}, wrong {row['wrong']}, equal {row['equal']}",
          flush=True)
    print(table.to_string(index=False), flush=True)
    if not args.train:
        return
    file = args.home / f"growth-{tag}" / "tree_pairs.jsonl"
    file.parent.mkdir(parents=True, exist_ok=True)
    write_rows(pair_rows(pairs), file)
    output = f"{env_slug(ENV)}-growth-{tag}"
    unit = train_unit("TreeDPO", "treedpo", run.cfg, run.cfg.dpo, len(pairs), model=str(strong), data=str(file),
                      output=output, seed=0, ref=str(weak))
    done = run_units([unit, run.eval_unit("TreeDPO", run.model_path(output), 4, ("train TreeDPO",))],
                     store, 1, run.rep)
    res = done["eval TreeDPO"].result.averages()
    print(f"\ngrowth-{tag} TreeDPO: reward {res['avg_reward']:.3f} success {res['success_rate']:.3f} "
          f"({time.monotonic() - t0:.0f} s)", flush=True)
    print(compared(store, args.base, f"growth-{tag}", output, len(pairs), res).to_string(index=False), flush=True)


def compared(store, base: str, method: str, model: str, n: int, res: dict, against: tuple[str, ...] = ("SFT-strong",),
             seed: int = 0) -> pd.DataFrame:
    """The paired comparisons of one evaluated model (`res`: its results row's averages and run id)
    with the stored experiment `base`'s `against` rows of `seed`, on their common tasks."""
    row = dict(experiment_id=method, env=ENV, method=method, model=model, seed=seed, trajs_per_task=4,
               n_examples=n, **res)
    rows = store.results(base)
    rows = rows[rows["method"].isin(against) & (rows["seed"] == seed)].assign(trajs_per_task=4)
    both = pd.concat([rows, pd.DataFrame([row])], ignore_index=True)
    return paired_comparisons(episode_outcomes(store, both), claims=tuple((method, b) for b in against))


def kept(explored: list[Trajectory], keep: int | None) -> list[Trajectory]:
    """Each task's first `keep` episodes (all with None), in collection order."""
    seen: dict[str, int] = {}
    out = []
    for t in explored:
        seen[t.task_id] = seen.get(t.task_id, 0) + 1
        if keep is None or seen[t.task_id] <= keep:
            out.append(t)
    return out


def scored_trees(store, trajs: list[Trajectory], settings: stages.TreeSettings, mcts: stages.MCTSSettings):
    """The trees of `trajs` (state paths unfolded), scored by MCTS and stored with their spliced paths."""
    paths = stages.tree_trajectories(trajs, settings)
    trees = stages.score_trees(stages.grow_trees(paths, settings), mcts)
    stages.save_tree_data(store, trees, paths=paths)
    spliced = sum(t.source == "splice" for t in paths)
    print(f"trees ({settings.merge}): {len(trees)} from {len(trajs)} episodes, {len(paths)} paths, {spliced} spliced",
          flush=True)
    return trees


if __name__ == "__main__":
    main()
