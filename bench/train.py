"""Training throughput: our `treedpo` trainer against plain TRL `DPOTrainer`, and SFT.

Builds the shop presets (or smaller `--size tiny` models) in a temporary home, collects expert +
random episodes on a few train tasks, builds trees, runs MCTS and cuts step / continuation pairs
(all real modules), then measures training tokens/s (tokens = non-padding tokens of the batches,
TRL's `num_tokens`; the first `--warmup` steps are not timed) for:

  * treedpo step pairs, ours (MaskedDPOTrainer + collator)   vs plain TRL DPOTrainer, same pairs
  * treedpo continuation pairs, ours (observation-masked)    vs plain TRL (unmasked), same pairs
  * SFT on expert demonstrations (assistant-only loss)

Variants alternate within each round; medians over `--rounds`; ratio = ours / plain TRL.
Reference model: the weak preset (the W2S setting). CPU: one torch thread.

Also the one thing our trainer adds per step, collating a batch with the observation masks, timed
against TRL's collator on the same rows (milliseconds, medians of 200).

`--packing` instead compares `--packing none|pair|tree` (`core.train.packed_dpo`) on the same
step and continuation pairs, in one process: positions computed per pass over the pairs (one
model's forward, padding included; the reference computes the same again) against the real
tokens, pairs/s of timed training steps (medians over rounds, modes alternating), and memory:
the bytes autograd saves for the backward of one batch (activations, parameters excluded; the
peak that grows with the batch) and, on CUDA, the peak allocated. Ratios are against `none`.
`--prompts full` builds the models with the paper's full-history prompt instead of the embedded
default's one-decision prompt.

    python bench/train.py [--rounds 3] [--steps 6] [--warmup 1] [--batch 4] [--size preset|tiny]
                          [--collator-only | --packing [--prompts decision|full]]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from transformers import PrinterCallback, TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TINY = {"weak": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                     num_key_value_heads=1),
        "strong": dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1)}


def setup(home: Path, size: str, n_tasks: int, prompts: str = "decision") -> dict[str, Path]:
    """Models and a store with trajectories, trees and pairs under `home` (`prompts`: the models'
    one-decision prompt, the embedded default, or the full history)."""
    from core.agents.scripted import ExpertPolicy, RandomPolicy
    from core.collect import collect
    from core.envs.base import make_env
    from core.mcts import run_mcts_all
    from core.models import build_local_models
    from core.pairs import tree_pairs
    from core.store import Store
    from core.tree import build_trees

    store = Store()
    history = {} if prompts == "decision" else {"decision_history": None}
    models = build_local_models("shop", store=store, n_tasks=20, configs=TINY if size == "tiny" else None, **history)
    tids = [t.task_id for t in make_env("shop").tasks("train")[:n_tasks]]
    collect(store, "shop", ExpertPolicy("shop"), tids, model="expert", progress=False)
    for seed in (1, 2):
        collect(store, "shop", RandomPolicy(seed=seed), tids, model="weak", progress=False, max_steps=5,
                run_id=f"random-{seed}")
    trees = build_trees(store.trajectories(env="shop"))
    run_mcts_all(trees, iterations=200)
    store.save_trees(trees)
    store.save_pairs([p for g in trees for gran in ("step", "continuation") for p in tree_pairs(g, gran)])
    return models


class Clock(TrainerCallback):
    """Time and the trainer's token count (TRL's `_total_train_tokens`) at every step end."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []
        self.trainer = None

    def on_step_end(self, args, state, control, **kw):
        self.marks.append((time.perf_counter(), float(self.trainer._total_train_tokens)))


def tokens_per_s(kind: str, rows: list, models: dict, steps: int, warmup: int, batch: int, masked: bool,
                 out: Path, packing: str = "none") -> tuple[float, float]:
    """(training tokens/s, pairs or rows/s) of the timed steps."""
    from core.train import make_config
    from core.train.dpo import build_dpo_trainer
    from core.train.sft import build_sft_trainer

    clock = Clock()
    common = dict(model=str(models["strong"]), data="bench", max_steps=steps + warmup, batch_size=batch,
                  save_steps=10_000, logging_steps=1, warmup_ratio=0.0)
    if kind == "sft":
        cfg = make_config("sft", "tiny", **common)
        trainer, _ = build_sft_trainer(cfg, rows, out, callbacks=[clock])
    else:
        cfg = make_config("treedpo", "tiny", ref=str(models["weak"]), packing=packing, **common)
        trainer, _ = build_dpo_trainer(cfg, rows, out, callbacks=[clock], masked=masked)
    clock.trainer = trainer
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    (t0, n0), (t1, n1) = clock.marks[warmup - 1], clock.marks[-1]
    return (n1 - n0) / (t1 - t0), steps * batch / (t1 - t0)


def collator_overhead(rows: list, models: dict, batch: int, repeats: int = 200) -> tuple[float, float]:
    """Median ms to collate one batch: our masked collator vs TRL's, on the same tokenized rows
    (the only per-step code our trainer adds; a steady figure on a loaded machine)."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from core.train import make_config
    from core.train.dpo import build_dpo_trainer

    cfg = make_config("treedpo", "tiny", model=str(models["strong"]), data="bench", max_steps=1)
    trainer, tok = build_dpo_trainer(cfg, rows, Path(tempfile.mkdtemp()))
    examples = [trainer.train_dataset[i] for i in range(min(batch, len(trainer.train_dataset)))]
    ours, plain = trainer.data_collator, DataCollatorForPreference(pad_token_id=tok.pad_token_id)
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    for _ in range(repeats):
        for name, fn in (("ours", ours), ("plain", plain)):
            t = time.perf_counter()
            fn(examples)
            times[name].append((time.perf_counter() - t) * 1e3)
    return statistics.median(times["ours"]), statistics.median(times["plain"])


def pass_tokens(trainer, batch: int) -> tuple[int, int]:
    """(positions one model computes, padding included; real tokens) over the trainer's pairs in
    batches of `batch`, in dataset order."""
    data, collate = trainer.train_dataset, trainer.data_collator
    positions = real = 0
    for start in range(0, len(data), batch):
        b = collate([data[i] for i in range(start, min(start + batch, len(data)))])
        ids = b.get("packed_input_ids", b.get("decision_input_ids", b["input_ids"]))
        positions += ids.numel()
        real += int(b["attention_mask"].sum())  # the rows' (or packed rows') real tokens
    return positions, real


def saved_bytes(trainer, batch: int) -> int:
    """Bytes autograd saves for the backward of the loss on the first `batch` pairs, parameters excluded."""
    import torch

    model = trainer.model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def keep(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    inputs = trainer.data_collator([trainer.train_dataset[i] for i in range(min(batch, len(trainer.train_dataset)))])
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss = trainer.compute_loss(model, trainer._prepare_inputs(inputs))
    loss.backward()
    model.zero_grad()
    return sum(seen.values())


def packing_figures(data: dict, models: dict, args, tmp: Path) -> None:
    """The `--packing` comparison (module docstring)."""
    import torch

    from core.train import make_config
    from core.train.dpo import build_dpo_trainer

    modes = ("none", "pair", "tree")
    for gran in ("step", "continuation"):
        rows = data[gran]
        fixed = {}
        for mode in modes:
            cfg = make_config("treedpo", "tiny", model=str(models["strong"]), ref=str(models["weak"]), data="bench",
                              max_steps=1, batch_size=args.batch, packing=mode)
            trainer, _ = build_dpo_trainer(cfg, rows, tmp / f"fixed-{gran}-{mode}")
            fixed[mode] = (*pass_tokens(trainer, args.batch), saved_bytes(trainer, args.batch))
        speed: dict[str, list[float]] = {m: [] for m in modes}
        peak: dict[str, float] = {}
        for r in range(args.rounds):
            for mode in modes:
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                _, pps = tokens_per_s("dpo", rows, models, args.steps, args.warmup, args.batch, True,
                                      tmp / f"pack-{gran}-{mode}-{r}", packing=mode)
                speed[mode].append(pps)
                if torch.cuda.is_available():
                    peak[mode] = max(peak.get(mode, 0.0), torch.cuda.max_memory_allocated() / 2**20)
                print(f"  round {r}: {gran:12s} {mode:4s} {pps:8.2f} pairs/s", flush=True)
        med = {m: statistics.median(v) for m, v in speed.items()}
        base = fixed["none"]
        print(f"\n{gran} pairs ({len(rows)}), batch {args.batch}: positions computed per pass (one model) / real "
              "tokens, pairs/s (median), saved activations per batch; x = ratio to none")
        for mode in modes:
            pos, real, saved = fixed[mode]
            cuda = f", CUDA peak {peak[mode]:.0f} MiB" if mode in peak else ""
            print(f"  {mode:4s} positions {pos:8d} ({pos / base[0]:.2f}x)  real {real:8d}  pairs/s {med[mode]:7.2f} "
                  f"({med[mode] / med['none']:.2f}x)  saved {saved / 2**20:7.1f} MiB ({saved / base[2]:.2f}x){cuda}",
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="timed optimizer steps per measurement")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=6)
    ap.add_argument("--size", choices=("preset", "tiny"), default="preset")
    ap.add_argument("--collator-only", action="store_true", help="only the per-batch collator overhead")
    ap.add_argument("--packing", action="store_true", help="only none / pair / tree packing (module docstring)")
    ap.add_argument("--prompts", choices=("decision", "full"), default="decision",
                    help="the models' prompt: one decision (the embedded default) or the full history")
    args = ap.parse_args()

    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["W2STREE_HOME"] = tmp
        os.environ.pop("W2STREE_DB", None)
        models = setup(Path(tmp), args.size, args.tasks, args.prompts)
        from core.store import Store
        from core.train.data import build_rows

        store = Store()  # setup's: the default store of the temporary home
        data = {"step": build_rows("pairs:shop:step", store),
                "continuation": build_rows("pairs:shop:continuation", store), "sft": build_rows("expert:shop", store)}
        device = "cuda" if torch.cuda.is_available() else "cpu (1 thread)"
        print(f"device {device}; strong = {models['strong'].name}, ref = {models['weak'].name}; "
              f"{len(data['step'])} step pairs, {len(data['continuation'])} continuation pairs, "
              f"{len(data['sft'])} SFT rows; batch {args.batch}, {args.steps} timed steps, {args.rounds} rounds")
        if args.packing:
            packing_figures(data, models, args, Path(tmp))
            return
        for gran in ("step", "continuation"):
            ours, plain = collator_overhead(data[gran], models, args.batch)
            print(f"collate one batch of {gran} pairs: ours {ours:.2f} ms, plain TRL {plain:.2f} ms "
                  f"(ours adds {ours - plain:+.2f} ms per batch)", flush=True)
        if args.collator_only:
            return
        results: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for name, kind, rows, masked in (("treedpo-step ours", "dpo", data["step"], True),
                                             ("treedpo-step plain TRL", "dpo", data["step"], False),
                                             ("treedpo-continuation ours", "dpo", data["continuation"], True),
                                             ("treedpo-continuation plain TRL", "dpo", data["continuation"], False),
                                             ("sft", "sft", data["sft"], True)):
                tps, _ = tokens_per_s(kind, rows, models, args.steps, args.warmup, args.batch, masked,
                                      Path(tmp) / f"run-{r}-{name.replace(' ', '-')}")
                results.setdefault(name, []).append(tps)
                print(f"  round {r}: {name:32s} {tps:10.0f} tokens/s", flush=True)
        med = {k: statistics.median(v) for k, v in results.items()}
        print("\nmedian training tokens/s")
        for k, v in med.items():
            print(f"  {k:32s} {v:10.0f}")
        for gran in ("step", "continuation"):
            ratio = med[f"treedpo-{gran} ours"] / med[f"treedpo-{gran} plain TRL"]
            print(f"  ratio treedpo-{gran} ours / plain TRL: {ratio:.2f}")


if __name__ == "__main__":
    main()
