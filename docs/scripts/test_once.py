"""The registered test of "Pairs where the mistakes are": the TreeDPO model dev chose, evaluated
once on the test split and compared with the final run's seed-0 SFT-strong and TreeDPO.

    W2STREE_HOME=COPY python docs/scripts/test_once.py COPY MODEL --base TEST_EXPERIMENT [--tasks 200]

COPY is a copy of the final run's home (its store holds the test experiment's evaluation episodes;
MODEL is a model folder name under COPY/models). The model is evaluated greedily on test[:tasks]
(the 10-step cap, the scale's batch), then paired per task with the experiment's seed-0 rows
(hierarchical interval; one seed, so it resamples tasks).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from growth_rules import compared  # the script beside this one
from strong_methods_on_stored_data import stored_seed_run

from core.work import run_units


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("home", type=Path)
    ap.add_argument("model", help="a model folder under HOME/models")
    ap.add_argument("--base", required=True, metavar="EXPERIMENT", help="the final run's test experiment")
    ap.add_argument("--tasks", type=int, default=200, help="the first N test tasks")
    args = ap.parse_args()
    store, run, _, _ = stored_seed_run(args.home, "test-once", args.tasks, "test")
    done = run_units([run.eval_unit("TreeDPO", run.model_path(args.model), 4, ())], store, 1, run.rep)
    res = done["eval TreeDPO"].result.averages()
    print(f"{args.model} on test[:{args.tasks}]: reward {res['avg_reward']:.3f} success {res['success_rate']:.3f}",
          flush=True)
    print(compared(store, args.base, args.model, args.model, 0, res, against=("SFT-strong", "TreeDPO"))
          .to_string(index=False), flush=True)


if __name__ == "__main__":
    main()
