"""Does `--packing tree` train the same TreeDPO as `--packing none` at the tiny scale (issue
"Tree-packed TreeDPO", the identical-results target), and how much faster is it?

    W2STREE_HOME=COPY python docs/scripts/packing_same_result.py COPY [--method treedpo|eto-dpo] [--tasks 200]
        [--packings none tree]

COPY is a copy of a stored run's home (run 10: its store and models). The script trains seed 0's
TreeDPO of that run (its stored step pairs, `tree_pairs.jsonl`; with `--method eto-dpo` ETO-DPO on
its trajectory pairs, `eto_pairs.jsonl`; the tiny scale's DPO budget, from
SFT-strong with SFT-weak as the reference) once per packing, one job at a time, from the same
seed; then prints per packing the job's training seconds and pairs per second, the largest weight
difference from the first packing's model relative to that model's own update (how far the weights
moved from SFT-strong), and each model's greedy evaluation on dev[:tasks] with the number of tasks
whose episodes differ in any action from the first packing's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from strong_methods_on_stored_data import ENV, stored_seed_run  # the script beside this one

from core.envs import env_slug
from core.pipeline import train_unit
from core.work import run_units


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a saved model folder."""
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def train_figures(home: Path, output: Path) -> dict:
    """The last metrics line (train_runtime, samples per second) of the latest job that wrote `output`."""
    jobs = [d for d in (home / "jobs").iterdir() if (d / "status.json").exists()
            and json.loads((d / "status.json").read_text()).get("output_path") == str(output)]
    last = max(jobs, key=lambda d: d.name.rsplit("-", 3)[1:3])
    return json.loads((last / "metrics.jsonl").read_text().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("home", type=Path)
    ap.add_argument("--tasks", type=int, default=200, help="evaluate on the first N dev tasks")
    ap.add_argument("--packings", nargs="+", default=["none", "tree"])
    ap.add_argument("--method", choices=("treedpo", "eto-dpo"), default="treedpo")
    args = ap.parse_args()
    store, run, weak, strong = stored_seed_run(args.home, "packing", args.tasks, "dev")
    method, file = {"treedpo": ("TreeDPO", "tree_pairs"), "eto-dpo": ("ETO-DPO", "eto_pairs")}[args.method]
    pairs = next(args.home.glob(f"experiments/*-tiny-dev-*/s0/k4/{file}.jsonl"))
    n = sum(1 for _ in pairs.open())
    start = weights(strong)
    rows = []
    for packing in args.packings:
        output = f"{env_slug(ENV)}-packing-{args.method}-{packing}"
        unit = train_unit(method, args.method, run.cfg, run.cfg.dpo, n, model=str(strong), data=str(pairs),
                          output=output, seed=0, ref=str(weak), packing=packing)
        done = run_units([unit, run.eval_unit(method, run.model_path(output), 4, (f"train {method}",))],
                         store, 1, run.rep)
        status = train_figures(args.home, run.model_path(output))
        res = done[f"eval {method}"].result
        episodes = {t.task_id: t.actions for t in store.trajectories(run_id=res.run_id)}
        rows.append((packing, status, res, episodes, weights(run.model_path(output))))
    first = rows[0]
    for packing, status, res, episodes, w in rows:
        update = max(float((first[4][k] - start[k]).abs().max()) for k in start if k in first[4])
        diff = max(float((w[k] - first[4][k]).abs().max()) for k in w)
        differ = sum(episodes[t] != first[3].get(t) for t in episodes)
        print(f"packing {packing}: train {status['train_runtime']:.0f} s, {status['train_samples_per_second']} "
              f"pairs/s, weights max diff {diff:.3g} "
              f"= {diff / max(update, 1e-30):.2g} of the update; dev reward {res.avg_reward:.3f} success "
              f"{res.success_rate:.3f}; tasks whose episode differs from {first[0]}'s: {differ}/{len(episodes)}",
              flush=True)


if __name__ == "__main__":
    main()
