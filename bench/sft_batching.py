"""Padding and seconds per SFT step: one random batch of 32 against the same batch run as
length-sorted micro-batches (`micro_batch`, `core.train.batching`), on the tiny scale's data:
one-decision rows of expert demonstrations on the tiny world, the env's from-scratch weak and
strong models, one torch thread.

Both variants run in this process on the same rows, alternating in rounds so that load from other
work hits both alike; medians of the per-step wall times are printed with their ratio.

    python bench/sft_batching.py                     # 1,000 demos, 3 rounds of 10 steps per model
    python bench/sft_batching.py --demos 3000 --rounds 5 --steps 20 --sizes strong --micro 0 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ENV = "shop?n_products=200&n_categories=10"  # the tiny scale's world (core.scales.SCALES)


def padding_ratio(trainer, batches: int) -> float:
    """Padded tokens / real tokens over the first `batches` batches of the trainer's loader."""
    real = padded = 0
    for i, batch in enumerate(trainer.get_train_dataloader()):
        if i == batches:
            break
        mask = batch["attention_mask"]
        real += int(mask.sum())
        padded += mask.numel()
    return padded / real


def step_times(trainer, steps: int) -> list[float]:
    """Wall seconds of each of `steps` optimizer steps (the first, warm-up, dropped)."""
    from transformers import TrainerCallback

    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

    trainer.add_callback(Clock())
    trainer.args.max_steps = steps + 1
    trainer.args.disable_tqdm = True
    trainer.args.logging_steps = 10**6
    trainer.train()
    return [b - a for a, b in zip(marks, marks[1:])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demos", type=int, default=1000, help="expert-demonstrated train tasks")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round and variant")
    ap.add_argument("--sizes", nargs="+", default=["weak", "strong"])
    ap.add_argument("--micro", nargs="+", type=int, default=[0, 16, 8, 4],
                    help="micro_batch values (0: the baseline, one batch of 32)")
    args = ap.parse_args()

    import datasets
    import torch
    import transformers

    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    home = Path(tempfile.mkdtemp(prefix="w2s-batching-"))
    os.environ["W2STREE_HOME"] = str(home)
    from core.models import build_local_models, local_model_names
    from core.stages import demonstrations, split_tasks
    from core.store import Store
    from core.train import make_config
    from core.train.data import sft_rows
    from core.train.sft import build_sft_trainer

    store = Store(home / "w2stree.duckdb")
    build_local_models(ENV, store, seed=0)
    rows = sft_rows(demonstrations(store, ENV, split_tasks(ENV, "train", args.demos)))
    print(f"{len(rows)} demonstrations of {ENV}; batch 32, 1 thread, {args.rounds} rounds x {args.steps} steps")
    print(f"{'model':8} {'micro_batch':>11} {'padded/real':>11} {'s/step (median)':>16} {'speed-up':>9}")
    for size in args.sizes:
        model = local_model_names(ENV)[size]
        times: dict[int, list[float]] = {m: [] for m in args.micro}
        ratio: dict[int, float] = {}
        for r in range(args.rounds):
            for m in args.micro:
                cfg = make_config("sft", "tiny", model=model, batch_size=32, lr=3e-3, seed=r,
                                  save_steps=10**6, micro_batch=m)
                trainer, _ = build_sft_trainer(cfg, rows, home / f"out-{size}-{m}-{r}")
                if r == 0:
                    ratio[m] = padding_ratio(trainer, 40 * max(1, 32 // max(m, 1)))
                times[m] += step_times(trainer, args.steps)
        med = {m: statistics.median(t) for m, t in times.items()}
        for m in args.micro:
            print(f"{size:8} {m or 32:11} {ratio[m]:11.2f} {med[m]:16.3f} {med[args.micro[0]] / med[m]:8.2f}x")


if __name__ == "__main__":
    main()
