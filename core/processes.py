"""Whether a process of this machine runs, and since when (Linux /proc; elsewhere only `kill 0`);
reaping the ended children of this process."""

from __future__ import annotations

import os
from pathlib import Path


def pid_running(pid: int | None) -> bool:
    """Whether process `pid` exists and has not ended (a zombie has ended: only its parent has not
    collected it yet). A process of another user counts as running."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:  # ended between the two checks
        return False
    except (OSError, IndexError):  # no /proc (not Linux): kill 0 is all there is
        return True


def started_at(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch, to about a second); None if unknown."""
    try:
        fields = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat: start time in clock ticks after boot
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def reap_ended_children() -> int:
    """Collect the exit status of every ended child process of this one, so that none stays a
    zombie ("defunct"); returns how many. For the moment before `exec`: the new program never
    waits on the children it inherits (children still running are left alone)."""
    reaped = 0
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # no children at all
            return reaped
        if pid == 0:  # children left, all running
            return reaped
        reaped += 1
