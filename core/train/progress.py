"""The trainer callback that writes a job's progress and metrics into its folder.

Progress (step, max_steps, ETA) goes to status.json at every optimizer step; every logged metric
dict (loss, learning_rate, grad_norm, and for DPO rewards/chosen, rewards/rejected,
rewards/margins, rewards/accuracies, logps/...) becomes one line of metrics.jsonl with its step
and a timestamp, and one human-readable line on stdout (the job's log.txt).

Stop: at the end of every optimizer step the callback looks for the job's `stop` file (written by
`core.jobs.stop_job`) and for a SIGTERM seen by `request_stop`. Either makes the trainer save a checkpoint
and end training after that step. With several processes the ranks agree first (an all-reduce of
the flag), so all of them stop at the same step and none waits forever in a collective.
A checkpoint is marked complete once the trainer has saved all of it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from core.jobs.folder import mark_checkpoint_complete, update_status


class JobProgress(TrainerCallback):
    """Writes progress and metrics of a running trainer to `job_dir` (only when `write`: rank 0)."""

    def __init__(self, job_dir: Path, write: bool = True) -> None:
        self.job_dir = Path(job_dir)
        self.write = write
        self.stop_requested = False
        self._t0 = time.monotonic()
        self._step0 = 0

    def request_stop(self, *_: Any) -> None:
        """Signal handler: checkpoint and stop at the end of the current step."""
        self.stop_requested = True

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0, self._step0 = time.monotonic(), state.global_step
        self._status(step=state.global_step, max_steps=state.max_steps)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        done = state.global_step - self._step0
        eta = (time.monotonic() - self._t0) / done * (state.max_steps - state.global_step) if done else None
        self._status(step=state.global_step, max_steps=state.max_steps, eta_s=eta)
        if self._agree(self.stop_requested or (self.job_dir / "stop").exists(), args):
            self.stop_requested = True
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """The checkpoint of this step is complete: mark it so (a resume ignores unmarked ones,
        such as one half-written when the process was killed)."""
        if self.write:
            mark_checkpoint_complete(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    @staticmethod
    def _agree(flag: bool, args: Any) -> bool:
        """`flag` of any rank, on every rank (one all-reduce when several processes train)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return flag
        import torch

        t = torch.tensor([int(flag)], device=args.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        values = {k: float(v) for k, v in (logs or {}).items()
                  if isinstance(v, int | float) and not isinstance(v, bool)}
        if not values or not self.write:
            return
        with open(self.job_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps({"step": state.global_step, "ts": time.time(), **values}) + "\n")
        shown = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        print(f"step {state.global_step}/{state.max_steps} {shown}", flush=True)

    def _status(self, **fields: Any) -> None:
        if self.write:
            update_status(self.job_dir, **fields)
