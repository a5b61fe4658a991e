"""The job process: `python -m core.job_runner JOB_DIR [--resume]`.

Started by `core.jobs.process.launch` (in its own process group, output to JOB_DIR/log.txt). It
imports every module that registers a job kind, then runs the job in JOB_DIR with the kind its
folder names, and exits 0 on success or stop, 1 on failure (the error is in status.json). A new
kind of job is a module that registers itself (`core.jobs.kinds.register`), imported here.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

import core.explore_job  # noqa: F401  (registers the kind `explore`)
import core.fill_job  # noqa: F401  (registers the kind `fill`)
import core.grow_job  # noqa: F401  (registers the kind `grow`)
import core.train.jobs  # noqa: F401  (registers a kind per training method)
from core.jobs.kinds import run_kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.job_runner", description=__doc__)
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    args = parser.parse_args(argv)
    try:
        run_kind(args.job_dir.resolve(), resume=args.resume)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from core.console import quiet_library_bars

    quiet_library_bars()  # the job's output is its log.txt: no progress bars redrawn into it
    sys.exit(main())
