"""Learning curves of the from-scratch local models on the built-in shop: success rate and mean reward
of greedy episodes on held-out tasks against the number of expert demonstrations, the training
steps and the model size, with the seconds each point costs.

Each point: a fresh model of the given size (the env's local tokenizer), SFT in this process on
one-decision rows (`core.agents.prompt.decision_rows`) of the expert episodes of the first N train
tasks, then greedy evaluation on the first T tasks of the `--split` (step cap 10). Every point is
its own store under a temporary home, so points do not see each other's models or episodes.

It evaluates on the **dev** split by default: a budget chosen from these curves is a tuning
choice, and the test split is for the final run only. `--split test` reproduces the earlier
curves (docs/experiments.md, "Which figures were tuned on test").

    python bench/learning_curve.py                              # the default grid (long: ~1 h)
    python bench/learning_curve.py --demos 300 --steps 400 --sizes weak --tasks 100

Prints one line per point and a table at the end; `--json FILE` also writes the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Model sizes to compare: the presets' own (core.models.local.LOCAL_CONFIGS).
SIZES = ("weak", "strong")


def point(size: str, demos: int, steps: int, n_eval: int, lr: float, batch: int, threads: int,
          seed: int, env: str, split: str = "dev") -> dict:
    """Train one model and evaluate it; returns the measured row."""
    from core.models import build_local_models, local_model_names
    from core.stages import demonstrations, evaluate, split_tasks
    from core.store import Store
    from core.train import make_config, train
    from core.train.data import sft_rows, write_rows

    home = Path(tempfile.mkdtemp(prefix="w2s-lc-"))
    os.environ["W2STREE_HOME"] = str(home)
    store = Store(home / "w2stree.duckdb")
    build_local_models(env, store, seed=seed)
    base = local_model_names(env)[size]
    train_ids, eval_ids = split_tasks(env, "train", demos), split_tasks(env, split, n_eval)
    rows = sft_rows(demonstrations(store, env, train_ids))
    data = home / "demos.jsonl"
    write_rows(rows, data)
    t0 = time.monotonic()
    cfg = make_config("sft", "tiny", model=base, data=str(data), output=f"lc-{size}", max_steps=steps,
                      batch_size=batch, lr=lr, threads=threads, seed=seed, save_steps=10**6)
    model = train("sft", cfg, store)
    t_train = time.monotonic() - t0
    t0 = time.monotonic()
    res = evaluate(store, str(model), env, split, task_ids=eval_ids, max_steps=10, batch_size=32, label="lc")
    t_eval = time.monotonic() - t0
    return dict(env=env, size=size, demos=demos, steps=steps, batch=batch, lr=lr, seed=seed, split=split,
                n_eval=len(eval_ids),
                success_rate=res.success_rate, avg_reward=res.avg_reward, train_s=round(t_train, 1),
                eval_s=round(t_eval, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", default="shop", help="env name, parameters allowed (shop?n_products=200&n_categories=10)")
    ap.add_argument("--sizes", nargs="+", default=["weak", "strong"], choices=SIZES)
    ap.add_argument("--demos", nargs="+", type=int, default=[40, 200, 1000])
    ap.add_argument("--steps", nargs="+", type=int, default=[300])
    ap.add_argument("--split", default="dev", help="the split evaluated on (default dev; test only for a final run)")
    ap.add_argument("--tasks", "--test", dest="tasks", type=int, default=100,
                    help="evaluate on the first N tasks of the split (--test is the old name)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = []
    for size in args.sizes:
        for demos in args.demos:
            for steps in args.steps:
                row = point(size, demos, steps, args.tasks, args.lr, args.batch, args.threads, args.seed,
                            args.env, args.split)
                print(json.dumps(row), flush=True)
                out.append(row)
    print(f"\n{'size':<7} {'demos':>6} {'steps':>6} {'success':>8} {'reward':>7} {'train s':>8} {'eval s':>7}")
    for r in out:
        print(f"{r['size']:<7} {r['demos']:>6} {r['steps']:>6} {r['success_rate']:>8.3f} {r['avg_reward']:>7.3f} "
              f"{r['train_s']:>8.1f} {r['eval_s']:>7.1f}   ({r['env']}, {r['split']}[:{r['n_eval']}], seed={r['seed']})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
