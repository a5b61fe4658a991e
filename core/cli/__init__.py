"""`w2stree` command line: one sub-command module per area, each exposing `register(sub)`.

Every known user error is printed as one line (`w2stree: error: ...`) with exit status 2. A reader
that closes standard output early (`w2stree stats | head`) is a normal end: exit 0, no message.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from core.cli.context import add_db_argument
from core.cli.data import silence_stdout
from core.console import quiet_library_bars
from core.envs.base import UnknownEnvError
from core.errors import UserError, one_line

# Command modules, in the order their verbs appear in --help.
COMMAND_MODULES = (
    "core.cli.data",      # import, tree, mcts, pairs, export
    "core.cli.stats",     # stats
    "core.cli.envs",      # collect, replay
    "core.cli.explore",   # explore
    "core.cli.oracle",    # oracle
    "core.cli.env_data",  # data (environment data files)
    "core.cli.models",    # models build|list
    "core.cli.train",     # train
    "core.cli.jobs",      # jobs
    "core.cli.pipeline",  # eval, pipeline
    "core.cli.app",       # dashboard, up
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="w2stree",
        description="Weak-to-strong generalization with trajectory trees.",
    )
    add_db_argument(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in COMMAND_MODULES:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name == mod:  # that area is not built yet
                continue
            raise
        module.register(sub)
    return parser


INTERRUPTED = "w2stree: interrupted; what was finished is stored"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `w2stree` console script."""
    try:  # Ctrl-C while the verbs' modules load and the arguments are read: one line too
        quiet_library_bars()  # before any verb imports transformers: bars only on a terminal
        args = build_parser().parse_args(argv)
        # `python -m core` holds Ctrl-C back while the modules load: a pending one is raised here
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    try:
        rc = args.func(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe found by the last flush is caught below
    except (UserError, UnknownEnvError, FileNotFoundError) as exc:
        print(f"w2stree: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `w2stree stats | head -1`: the reader has all it wanted
        silence_stdout()
        return 0
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
