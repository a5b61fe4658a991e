"""Why one seed's SFT-strong scored 0.739 in run 5 and 0.714 in run 8 at the same budget (issue
"An honest, faithful test", item 7): run 7 split every step's batch of 32 into sorted
micro-batches of 8 (`micro_batch=8`). The step is the same in exact arithmetic (the loss is
normalised over the step's tokens), not in fp32: the sums run in another order. This script trains
the same model on the same rows from the same seed with `micro_batch` 8 and 0 (one batch of 32)
and prints how far the weights are apart after each number of steps, with its own learning-rate
schedule per run length.

    python docs/scripts/microbatch_divergence.py BASE_MODEL ROWS.jsonl [--steps 10 50 150] [--threads 1]

BASE_MODEL is the untrained strong model folder, ROWS the expert decision rows (a pipeline
experiment's `expert.jsonl`). Each training goes to a temporary home.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("rows", type=Path)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 50, 150])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["W2STREE_HOME"] = tempfile.mkdtemp(prefix="mbdiv-")
    from core.store import Store
    from core.train import make_config, train

    store = Store()
    base = weights(args.model)
    print("steps | max |w8 - w32| | ||w8 - w32|| / ||w32 - w0|| (the difference against the update itself)")
    for n in args.steps:
        out = {}
        for mb in (8, 0):
            cfg = make_config("sft", "tiny", model=str(args.model), data=str(args.rows), output=f"mb{mb}-{n}",
                              max_steps=n, lr=3e-3, batch_size=32, micro_batch=mb, seed=0, save_steps=10_000)
            out[mb] = weights(train("sft", cfg, store))
        diff = max(float((out[8][k] - out[0][k]).abs().max()) for k in base)
        update = sum(float((out[0][k] - base[k]).pow(2).sum()) for k in base)  # 0 while the warm-up's rate is 0
        rel = (sum(float((out[8][k] - out[0][k]).pow(2).sum()) for k in base) / update) ** 0.5 if update else 0.0
        print(f"{n:5d} | {diff:.3e} | {rel:.3e}", flush=True)


if __name__ == "__main__":
    main()
