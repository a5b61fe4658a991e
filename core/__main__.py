import os
import signal
import sys


def _exit_interrupted() -> None:
    """Exit 130 after Ctrl-C. Through os._exit: a Ctrl-C that landed in code a C extension ran
    while importing leaves CPython marked "interrupted", and a normal exit would then kill the
    process with SIGINT even though the interrupt was handled (one line was printed)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


# A Ctrl-C while the modules load would land wherever the import machinery is: in a C extension's
# module init (duckdb's nanobind prints "Critical nanobind error" and a traceback) or an import-lock
# callback ("Exception ignored"). It is held back until `core.cli.main` has read the arguments,
# which lets it in where one line and 130 follow.
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
from core.cli import main  # noqa: E402

rc = main()
if rc == 130:
    _exit_interrupted()
# The command is done. CPython resets its SIGINT handler to the default while it shuts down (which
# takes a moment with torch loaded), so a Ctrl-C then would kill a finished command (status -2);
# an ignored SIGINT is left alone.
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.exit(rc)
