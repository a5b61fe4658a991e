"""Train and evaluate the four W2S methods from a given SFT-strong model on the training files a
pipeline run stored, then print the results table. Used for docs/experiments.md run 4: the
exploration data of run 2 (SFT-weak at 800 steps) with the SFT-strong model of run 3 (700 steps),
which is what the tiny scale (weak 800 / strong 700 steps, seed 0) computes, since each stage is
deterministic for a seed.

    W2STREE_HOME=HOME python docs/scripts/strong_methods_on_stored_data.py HOME KDIR

HOME holds the run's store, its SFT-weak model and, under models/<env slug>-sft-strong-s0, the
SFT-strong model to start from; KDIR is the run's experiments/<id>/s0/k4 folder.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from core.envs import make_env
from core.pipeline import SCALES, SeedRun
from core.results import render
from core.store import Store
from core.work import Reporter, run_units

ENV = "shop?n_products=200&n_categories=10"


def stored_seed_run(home: Path, folder: str, n_test: int = 100) -> tuple[Store, SeedRun, Path, Path]:
    """(the store, seed 0 of the tiny scale over it evaluating on test[:n_test], the SFT-weak and
    SFT-strong model folders) of the stored run in `home`; outputs go to home/`folder`. Runs 4 and
    5 evaluated on the first 100 test tasks."""
    store = Store(home / "w2stree.duckdb")
    with make_env(ENV) as e:
        test_ids = [t.task_id for t in e.tasks("test")][:n_test]
    run = SeedRun(store, ENV, SCALES["tiny"], 0, [4], False, "", "", Path(), [], [], test_ids, home / folder,
                  Reporter(True), lambda f: f)
    return store, run, *run.sft_paths()


def main() -> None:
    home, kdir = Path(sys.argv[1]), Path(sys.argv[2])
    store, run, weak, strong = stored_seed_run(home, "run4")
    cfg, rep = run.cfg, run.rep
    files = {name: kdir / f"{name}.jsonl" for name in ("successes", "best_paths", "tree_pairs", "eto_pairs")}
    counts = {name: sum(1 for line in f.read_text().splitlines() if line.strip()) for name, f in files.items()}
    base = run_units([run.eval_unit("SFT-weak", weak, None, ()), run.eval_unit("SFT-strong", strong, None, ())],
                     store, cfg.parallel, rep)
    rows = [dict(method=m, model=p.name, n_examples=3000, seed=0, trajs_per_task=4, **base[f"eval {m}"].result.averages())
            for m, p in (("SFT-weak", weak), ("SFT-strong", strong))]
    rows += [{**r, "seed": 0, "trajs_per_task": 4}
             for r in run.strong_methods(None, files, counts, weak, strong, 0)]
    exp = f"exp-run4-{time.strftime('%H%M%S')}"
    store.add_results([{**r, "experiment_id": exp, "env": ENV} for r in rows])
    print(render(store, exp))


if __name__ == "__main__":
    main()
