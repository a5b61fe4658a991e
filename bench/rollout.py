"""Model rollout (and training) throughput: the embedded default (issue 4) and a model server
(issue 23).

Sections (run all, or one with `--only NAME`):

  * rollout — env steps/s of `collect` with `HFPolicy` on the tiny weak preset: B episodes in
    lockstep (one batched `generate` per step for all live episodes) against one episode at a
    time (B = 1), same model, same tasks, same greedy decoding, in one run. Medians over
    repeats, the two settings alternating; the ratio is batched / one-at-a-time (target >= 5x
    on CPU with B = 16).
  * server — episodes/s of `collect` with `ServerPolicy` against a `w2stree serve` server (the
    same weak preset, batching concurrent calls) whose replies take uneven times: a row whose
    prompt hashes into the `--slow-share` waits `--slow-s` more (a long generation, a retry); a
    call ends with its slowest row, as a batching server's does. Lockstep (every live episode
    waits for the round's slowest reply) against independent (each episode steps as its own
    reply comes in), B episodes in flight, same tasks, greedy; medians over repeats, the two
    alternating, and whether both stored the same trajectories.

The presets are built into a temporary folder (tokenizer on a few expert episodes), so the
bench needs nothing but the installed packages.

    python bench/rollout.py [--only rollout|server] [--tasks 16] [--batch 16] [--max-steps 5]
                            [--max-new-tokens 64] [--repeats 3] [--threads 1]
                            [--slow-share 0.15] [--slow-s 0.5]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _weak(args: argparse.Namespace, workdir: Path):
    """(store, the weak preset's folder, the first `--tasks` shop train tasks), built once per run."""
    from core.envs import make_env
    from core.models import build_local_models
    from core.store import Store

    store = Store(workdir / "rollout.duckdb")
    paths = build_local_models("shop", store, out_dir=workdir / "models", n_tasks=20)  # reused when built
    return store, str(paths["weak"]), [t.task_id for t in make_env("shop").tasks("train")[: args.tasks]]


def bench_rollout(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """Steps/s of batched vs one-at-a-time HFPolicy rollouts on shop; prints and returns them."""
    from core.agents.base import Sampling
    from core.agents.hf import HFPolicy
    from core.collect import collect

    store, weak, task_ids = _weak(args, workdir)
    policy = HFPolicy(weak, max_new_tokens=args.max_new_tokens, batch_size=args.batch)

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


def _serve_uneven(weak: str, args: argparse.Namespace, conn) -> None:
    """A spawned process: `w2stree serve`'s server for `weak`, each call waiting as long as its
    slowest row, a row `--slow-s` when its prompt hashes into `--slow-share` (the same rows in
    both modes: their prompts are the same); sends its port on `conn`, then serves."""
    import torch

    from core.agents.hf import HFPolicy
    from core.serve import CompletionsHandler, make_server

    class Uneven(CompletionsHandler):
        def do_POST(self) -> None:  # noqa: N802 - the base class's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            prompts = json.loads(body).get("prompt") or [[]]
            slow = any(zlib.crc32(json.dumps(p).encode()) / 2**32 < args.slow_share for p in prompts)
            time.sleep(args.slow_s if slow else 0.0)
            self.rfile = io.BytesIO(body)
            super().do_POST()

    torch.set_num_threads(args.threads)
    server = make_server(HFPolicy(weak, max_new_tokens=args.max_new_tokens, batch_size=args.batch), 0,
                         handler=Uneven)
    conn.send(server.server_address[1])
    server.serve_forever()


def bench_server(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """Episodes/s of lockstep vs independent ServerPolicy rollouts against a `w2stree serve`
    server in its own process with uneven reply times (module docstring); prints and returns them."""
    import multiprocessing as mp

    from core.agents.base import Sampling
    from core.agents.server import ServerPolicy
    from core.collect import collect

    store, weak, task_ids = _weak(args, workdir)
    ours, theirs = mp.Pipe()
    server = mp.get_context("spawn").Process(target=_serve_uneven, args=(weak, args, theirs), daemon=True)
    server.start()
    if not ours.poll(300):
        sys.exit("bench server: the server process did not start in 300 s")
    client = ServerPolicy(weak, f"http://127.0.0.1:{ours.recv()}", max_new_tokens=args.max_new_tokens)
    rates: dict[str, list[float]] = {"lockstep": [], "independent": []}
    stored: dict[str, list] = {}
    steps = 0
    try:
        for _ in range(args.repeats):
            for mode in rates:  # alternate, so machine load drifts hit both alike
                client.independent = mode == "independent"
                t0 = time.perf_counter()
                res = collect(store, "shop", client, task_ids, (Sampling(),), max_steps=args.max_steps,
                              batch_size=args.batch, progress=False, model=f"bench-{mode}")
                rates[mode].append(len(task_ids) / (time.perf_counter() - t0))
                trajs = store.trajectories(run_id=res.run_id)
                steps = sum(len(t.steps) for t in trajs)
                stored[mode] = [(t.task_id, [(s.thought, s.action, s.observation) for s in t.steps]) for t in trajs]
    finally:
        client.close()
        server.terminate()
        server.join()
    lock, indep = statistics.median(rates["lockstep"]), statistics.median(rates["independent"])
    print(f"server   shop, weak preset behind `w2stree serve` (its own process, batching calls), {len(task_ids)} episodes x "
          f"<= {args.max_steps} steps ({steps} steps), B={args.batch} in flight, {args.max_new_tokens} new "
          f"tokens/step, greedy; a row is {args.slow_s:g} s slower with probability {args.slow_share:g}; "
          f"{args.repeats} repeats (median); load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"  lockstep     {lock:8.2f} episodes/s")
    print(f"  independent  {indep:8.2f} episodes/s")
    print(f"  ratio {indep / lock:.2f}x; same stored trajectories: {stored['lockstep'] == stored['independent']}")
    return {"lockstep_episodes_per_s": lock, "independent_episodes_per_s": indep, "ratio": indep / lock}


#: name -> function(args, workdir); the training half adds its section here.
SECTIONS: dict[str, Callable[[argparse.Namespace, Path], dict[str, float]]] = {
    "rollout": bench_rollout,
    "server": bench_server,
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
    p.add_argument("--slow-share", type=float, default=0.15, help="server: share of rows that reply slowly")
    p.add_argument("--slow-s", type=float, default=0.5, help="server: seconds a slow row takes longer")
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
