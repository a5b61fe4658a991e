"""Model rollout (and training) throughput for the embedded default (issue 4).

Sections (run all, or one with `--only NAME`):

  * rollout — env steps/s of `collect` with `HFPolicy` on the tiny weak preset: B episodes in
    lockstep (one batched `generate` per step for all live episodes) against one episode at a
    time (B = 1), same model, same tasks, same greedy decoding, in one run. Medians over
    repeats, the two settings alternating; the ratio is batched / one-at-a-time (target >= 5x
    on CPU with B = 16).

The presets are built into a temporary folder (tokenizer on a few expert episodes), so the
bench needs nothing but the installed packages.

    python bench/rollout.py [--only rollout] [--tasks 16] [--batch 16] [--max-steps 5]
                            [--max-new-tokens 64] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bench_rollout(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """Steps/s of batched vs one-at-a-time HFPolicy rollouts on shop; prints and returns them."""
    from core.agents.base import Sampling
    from core.agents.hf import HFPolicy
    from core.collect import collect
    from core.envs import make_env
    from core.models import build_local_models
    from core.store import Store

    store = Store(workdir / "rollout.duckdb")
    paths = build_local_models("shop", store, out_dir=workdir / "models", n_tasks=20)
    task_ids = [t.task_id for t in make_env("shop").tasks("train")[: args.tasks]]
    policy = HFPolicy(str(paths["weak"]), max_new_tokens=args.max_new_tokens, batch_size=args.batch)

    def run(batch: int) -> Callable[[], int]:
        def go() -> int:
            res = collect(store, "shop", policy, task_ids, (Sampling(),), max_steps=args.max_steps,
                          batch_size=batch, progress=False, model=f"bench-b{batch}")
            df = store.trajectory_index(run_id=res.run_id)
            return int(df["n_steps"].sum())
        return go

    rates: dict[int, list[float]] = {args.batch: [], 1: []}
    for _ in range(args.repeats):
        for batch in rates:  # alternate, so machine load drifts hit both alike
            t0 = time.perf_counter()
            steps = run(batch)()
            rates[batch].append(steps / (time.perf_counter() - t0))
    batched, single = statistics.median(rates[args.batch]), statistics.median(rates[1])
    print(f"rollout  shop, weak preset ({sum(p.numel() for p in policy.model.parameters()):,} params), "
          f"{len(task_ids)} tasks x {args.max_steps} steps, {args.max_new_tokens} new tokens/step, "
          f"greedy, {args.repeats} repeats (median)")
    print(f"  B={args.batch:<3d} batched   {batched:8.2f} env steps/s")
    print(f"  B=1   one at a time {single:6.2f} env steps/s")
    print(f"  ratio {batched / single:.1f}x (target >= 5x)")
    return {"batched_steps_per_s": batched, "single_steps_per_s": single, "ratio": batched / single}


#: name -> function(args, workdir); the training half adds its section here.
SECTIONS: dict[str, Callable[[argparse.Namespace, Path], dict[str, float]]] = {
    "rollout": bench_rollout,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=sorted(SECTIONS), help="run one section")
    p.add_argument("--tasks", type=int, default=16, help="shop train tasks (episodes per setting)")
    p.add_argument("--batch", type=int, default=16, help="episodes in lockstep for the batched run")
    p.add_argument("--max-steps", type=int, default=5, help="step cap per episode")
    p.add_argument("--max-new-tokens", type=int, default=64, help="generation cap per step (HFPolicy default)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: other work shares the CPU)")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="w2stree-bench-") as tmp:
        for name, fn in SECTIONS.items():
            if args.only in (None, name):
                fn(args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
