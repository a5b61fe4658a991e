"""Train and evaluate the four W2S methods from a given SFT-strong model on the training files a
pipeline run stored, then print the results table. Used for docs/experiments.md run 4: the
exploration data of run 2 (SFT-weak at 800 steps) with the SFT-strong model of run 3 (700 steps),
which is what the tiny scale (weak 800 / strong 700 steps, seed 0) computes, since each stage is
deterministic for a seed.

    W2STREE_HOME=HOME python docs/scripts/strong_methods_on_stored_data.py HOME KDIR [--split dev] [--tasks 100]

HOME holds the run's store, its SFT-weak model and, under models/<env slug>-sft-strong-s0, the
SFT-strong model to start from; KDIR is the run's experiments/<id>/s0/k4 folder. Every model is
evaluated greedily on the first `--tasks` tasks of `--split`: **dev** by default, since what this
script measures informs choices; run 4 evaluated on test[:100] (`--split test`), see
docs/experiments.md, "Which figures were tuned on test".
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from core.envs import make_env
from core.pipeline import SeedRun
from core.results import render
from core.scales import SCALES
from core.store import Store
from core.work import Reporter, run_units

ENV = "shop?n_products=200&n_categories=10"


def stored_seed_run(home: Path, folder: str, n_eval: int = 100, split: str = "dev") -> tuple[Store, SeedRun, Path, Path]:
    """(the store, seed 0 of the tiny scale over it evaluating on `split`[:n_eval], the SFT-weak
    and SFT-strong model folders) of the stored run in `home`; outputs go to home/`folder`. Runs 4
    and 5 evaluated on the first 100 test tasks, run 9's follow-up on all 200."""
    store = Store(home / "w2stree.duckdb")
    with make_env(ENV) as e:
        test_ids = [t.task_id for t in e.tasks(split)][:n_eval]
    run = SeedRun(store=store, env=ENV, cfg=SCALES["tiny"], seed=0, test_ids=test_ids, folder=home / folder,
                  rep=Reporter(True))
    return store, run, *run.sft_paths()


def baseline_rows(store: Store, run: SeedRun, weak: Path, strong: Path) -> list[dict]:
    """SFT-weak and SFT-strong evaluated on the run's evaluation tasks: their results rows
    (seed 0, K 4, with the evaluation run ids the paired comparisons read)."""
    done = run_units([run.eval_unit("SFT-weak", weak, None, ()), run.eval_unit("SFT-strong", strong, None, ())],
                     store, run.cfg.parallel, run.rep)
    return [dict(method=m, model=p.name, n_examples=3000, seed=0, trajs_per_task=4, **done[f"eval {m}"].result.averages())
            for m, p in (("SFT-weak", weak), ("SFT-strong", strong))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("home", type=Path)
    ap.add_argument("kdir", type=Path)
    ap.add_argument("--split", default="dev", help="the split evaluated on (default dev; test only for a final run)")
    ap.add_argument("--tasks", type=int, default=100, help="evaluate on the first N tasks of the split")
    args = ap.parse_args()
    home, kdir = args.home, args.kdir
    store, run, weak, strong = stored_seed_run(home, "run4", args.tasks, args.split)
    files = {name: kdir / f"{name}.jsonl" for name in ("successes", "best_paths", "tree_pairs", "eto_pairs")}
    counts = {name: sum(1 for line in f.read_text().splitlines() if line.strip()) for name, f in files.items()}
    rows = baseline_rows(store, run, weak, strong)
    rows += [{**r, "seed": 0, "trajs_per_task": 4}
             for r in run.strong_methods(None, files, counts, weak, strong, 0)]
    exp = f"exp-run4-{time.strftime('%H%M%S')}"
    store.add_results([{**r, "experiment_id": exp, "env": ENV} for r in rows])
    print(render(store, exp))


if __name__ == "__main__":
    main()
