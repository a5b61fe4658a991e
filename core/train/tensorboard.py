"""TensorBoard logs of training jobs: every job's logged metrics also go to TensorBoard event
files in its folder (`<job>/tensorboard/`) when the `tensorboard` package is installed, offline.
The Train page keeps its own live charts; `w2stree jobs tensorboard JOB` prints the command that
opens a job's logs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
from collections.abc import Iterator
from pathlib import Path

from core.errors import UserError
from core.jobs.folder import job_dir_of

# transformers' TensorBoard callback reads its folder from this variable when it is built
LOG_DIR_VARIABLE = "TENSORBOARD_LOGGING_DIR"


def report_to() -> list[str] | str:
    """TRL's `report_to`: TensorBoard when the `tensorboard` package is importable, else "none"."""
    return ["tensorboard"] if importlib.util.find_spec("tensorboard") is not None else "none"


def tensorboard_dir(job_dir: Path) -> Path:
    """The TensorBoard folder of a job folder."""
    return job_dir / "tensorboard"


@contextlib.contextmanager
def tensorboard_logs(job_dir: Path) -> Iterator[None]:
    """Build a trainer inside this block to have it log to the job's TensorBoard folder; the
    variable is restored after it (a job run in-process leaves nothing behind)."""
    before = os.environ.get(LOG_DIR_VARIABLE)
    os.environ[LOG_DIR_VARIABLE] = str(tensorboard_dir(job_dir))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(LOG_DIR_VARIABLE, None)
        else:
            os.environ[LOG_DIR_VARIABLE] = before


def tensorboard_command(job_id: str) -> str:
    """The shell command that opens a job's TensorBoard logs on 127.0.0.1; UserError when the
    job wrote none."""
    logs = tensorboard_dir(job_dir_of(job_id))
    if not any(logs.rglob("events.out.tfevents.*")):
        raise UserError(f"job {job_id} wrote no TensorBoard logs (its trainer writes them when the "
                        "`tensorboard` package is installed: pip install tensorboard, then train again)")
    return shlex.join(["tensorboard", "--logdir", str(logs), "--host", "127.0.0.1"])
