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


def _unraisable(info: "sys.UnraisableHookArgs") -> None:
    """A Ctrl-C that lands in a callback of the import machinery (a module lock's weakref callback)
    cannot propagate: CPython would print "Exception ignored" with a traceback and go on. It ends
    the command as any Ctrl-C does (one line, 130); nothing is half-written, since a store write
    is one transaction."""
    if issubclass(info.exc_type, KeyboardInterrupt):
        print("w2stree: interrupted; what was finished is stored", file=sys.stderr)
        _exit_interrupted()
    sys.__unraisablehook__(info)


sys.unraisablehook = _unraisable

try:
    from core.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command line itself loads
    print("w2stree: interrupted; what was finished is stored", file=sys.stderr)
    _exit_interrupted()

rc = main()
if rc == 130:
    _exit_interrupted()
# The command is done. CPython resets its SIGINT handler to the default while it shuts down (which
# takes a moment with torch loaded), so a Ctrl-C then would kill a finished command (status -2);
# an ignored SIGINT is left alone.
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.exit(rc)
