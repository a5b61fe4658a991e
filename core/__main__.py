import os
import sys


def _exit_interrupted() -> None:
    """Exit 130 after Ctrl-C. Through os._exit: a Ctrl-C that landed in code a C extension ran
    while importing leaves CPython marked "interrupted", and a normal exit would then kill the
    process with SIGINT even though the interrupt was handled (one line was printed)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


try:
    from core.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command line itself loads
    print("w2stree: interrupted; what was finished is stored", file=sys.stderr)
    _exit_interrupted()

rc = main()
if rc == 130:
    _exit_interrupted()
sys.exit(rc)
