"""Paired per-task comparisons of a stored experiment, seed by seed and over all its seeds (the
hierarchical bootstrap over seeds and tasks, and the t-interval over seeds: core.results), for
more method pairs than the results table prints: the final run's primary and secondary comparisons
(docs/experiments.md, run 11), and run 8's (printed then with the earlier bootstrap over tasks only).

    python docs/scripts/per_seed_comparisons.py STORE.duckdb [EXPERIMENT_ID]
"""

from __future__ import annotations

import sys

from core.results import episode_outcomes, experiment_results, interval_text, paired_comparisons
from core.store import Store

PAIRS = (("TreeDPO", "SFT-continued"), ("TreeDPO", "SFT-strong"), ("MCTS", "SFT-continued"),
         ("MCTS", "SFT-strong"), ("TreeDPO", "SFT-weak"), ("MCTS", "SFT-weak"), ("TreeDPO", "ETO-DPO"),
         ("SFT-continued", "SFT-strong"), ("SFT-strong", "SFT-weak"), ("MCTS", "W2S-SFT"))


def main() -> None:
    store = Store(sys.argv[1])
    _, rows = experiment_results(store, sys.argv[2] if len(sys.argv) > 2 else None)
    outcomes = episode_outcomes(store, rows)
    groups = [(str(seed), outcomes[outcomes["seed"] == seed]) for seed in sorted(outcomes["seed"].unique())]
    for label, part in groups + [("all", outcomes)]:
        for r in paired_comparisons(part, PAIRS).itertuples():
            print(f"seed {label:>3}  K={r.k}  {r.a:>10} - {r.b:<13} {r.metric:<7} {r.diff:+.3f} "
                  f"{interval_text(r.lo, r.hi)} (seeds+tasks), t over seeds {interval_text(r.t_lo, r.t_hi)}  "
                  f"({r.n_seeds} seeds x {r.n_tasks} tasks)")


if __name__ == "__main__":
    main()
