"""Paired per-task comparisons of a stored experiment, seed by seed and over all its seeds
(bootstrap 95 % intervals), for more method pairs than the results table prints. Used for
docs/experiments.md run 8.

    python docs/scripts/per_seed_comparisons.py STORE.duckdb [EXPERIMENT_ID]
"""

from __future__ import annotations

import sys

from core.results import episode_outcomes, experiment_results, paired_comparisons
from core.store import Store

PAIRS = (("SFT-strong", "SFT-weak"), ("TreeDPO", "SFT-strong"), ("MCTS", "SFT-strong"),
         ("TreeDPO", "ETO-DPO"), ("MCTS", "W2S-SFT"))


def main() -> None:
    store = Store(sys.argv[1])
    _, rows = experiment_results(store, sys.argv[2] if len(sys.argv) > 2 else None)
    outcomes = episode_outcomes(store, rows)
    groups = [(str(seed), outcomes[outcomes["seed"] == seed]) for seed in sorted(outcomes["seed"].unique())]
    for label, part in groups + [("all", outcomes)]:
        for r in paired_comparisons(part, PAIRS).itertuples():
            print(f"seed {label:>3}  K={r.trajs_per_task}  {r.method:>10} - {r.baseline:<10} "
                  f"reward {r.diff:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}]  "
                  f"success {r.success_diff:+.3f} [{r.success_lo:+.3f}, {r.success_hi:+.3f}]  ({r.n_tasks} tasks)")


if __name__ == "__main__":
    main()
