"""The job process: `python -m core.train.runner JOB_DIR [--resume]`.

Started by `core.train.jobs` (in its own process group, output to JOB_DIR/log.txt); runs the job
in JOB_DIR and exits 0 on success or stop, 1 on failure (the error is in status.json).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.train.runner", description=__doc__)
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from core.console import quiet_library_bars

    quiet_library_bars()  # the job's output is its log.txt: no progress bars redrawn into it
    from core.train.jobs import execute

    try:
        execute(args.job_dir.resolve(), resume=args.resume)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
