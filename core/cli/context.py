"""The store a command works on, taken from its arguments.

`--db PATH` (before the verb, or after `dashboard` / `up`) names it; without it the default of
`core.paths.default_db` holds ($W2STREE_DB, else <$W2STREE_HOME or ./data>/w2stree.duckdb). A
command opens it with `open_store(args)` and passes that Store on; a process it starts gets the
path as an argument. Nothing here changes the environment of this process.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from core.env_slots import Pool
from core.envs import UnknownEnvError, canonical_env_name
from core.errors import UserError
from core.names import full_model_name
from core.paths import default_db
from core.store import Store

DB_HELP = "DuckDB store (default: $W2STREE_DB, else w2stree.duckdb in $W2STREE_HOME or ./data)"


def add_db_argument(parser: argparse.ArgumentParser, dest: str = "db") -> None:
    """Add `--db PATH` to `parser` (stored as `dest`)."""
    parser.add_argument("--db", dest=dest, metavar="PATH", help=DB_HELP)


#: The largest number the store's INTEGER columns (iterations, seeds, counts) hold.
INT32_MAX = 2**31 - 1


def int_in(lo: int, hi: int = INT32_MAX) -> Callable[[str], int]:
    """An argparse type: a whole number from `lo` to `hi`, else argparse's one line saying so
    (so that no out-of-range number reaches DuckDB or means "all")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
        if not lo <= value <= hi:
            shown = text if len(text) <= 40 else text[:20] + "..."
            raise argparse.ArgumentTypeError(f"{shown} is outside {lo}..{hi}")
        return value

    return parse


COUNT = int_in(1)  # how many (tasks, samples, steps, workers, limit): at least one
NONNEGATIVE = int_in(0)  # seeds, node ids


def env_arg(text: str) -> str:
    """The argparse type of `--env`: the canonical name of the world it names (see
    `core.envs.canonical_env_name`; an env unknown here as given), or one line saying why not."""
    try:
        return canonical_env_name(text)
    except UnknownEnvError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Renamed(argparse.Action):
    """A flag's earlier name: the command refuses it with one line naming the new flag."""

    def __init__(self, *args: object, new: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        message = f"{option_string} is now called {self.new}; pass {self.new} {values}"

        def refuse(args: argparse.Namespace) -> int:  # the command, instead of the verb's
            raise UserError(message)

        namespace.func = refuse


def add_renamed_flag(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Keep `old`, the earlier name of flag `new`, out of --help; given, the command stops with
    one line (`w2stree: error: --preset is now called --scale; pass --scale tiny`)."""
    parser.add_argument(old, action=_Renamed, new=new, dest=argparse.SUPPRESS, help=argparse.SUPPRESS)


def db_path(args: argparse.Namespace) -> Path:
    """The absolute path of the store named by `args` (the verb's `--db` wins over the global one)."""
    given = getattr(args, "app_db", None) or getattr(args, "db", None)
    if not given:
        return default_db()
    path = Path(given).absolute()
    resolved = path.resolve()
    # /dev/fd/N of `--db <(...)` resolves to a name that cannot be opened: keep it as given
    return resolved if resolved.exists() or not path.exists() else path


def open_store(args: argparse.Namespace) -> Store:
    """The store named by `args`, created and migrated on first use."""
    return Store(db_path(args))


def model_arg(store: Store, name: str | None, env: str | None = None) -> str | None:
    """The model a command-line model name stands for: a short one (`sft-weak`, `treedpo`,
    `tinyshop-weak`; see `core.names`) as its full name, saying so on stderr; any other as given."""
    import sys

    found = full_model_name(store, name, env) if name else None
    if found is None:
        return name
    print(f"w2stree: {name} is {found[0]} ({found[1]})", file=sys.stderr, flush=True)
    return found[0]


def add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    """Add where the env slots live (`core.env_slots.Pool`): `--workers W --executor
    local|process|ray [--ray-address ADDR] [--recycle K]`."""
    parser.add_argument("--workers", type=COUNT, default=1, metavar="W",
                        help="env workers: processes or Ray actors (default 1)")
    parser.add_argument("--executor", choices=("local", "process", "ray"), default=None,
                        help="where the envs run: local (this process, the default for one worker), process "
                             "(the default for several), ray (actors; pip install 'w2stree[ray]')")
    parser.add_argument("--ray-address", metavar="ADDR",
                        help="the Ray cluster to run on (e.g. ray://head:10001 or head:6379; default: start "
                             "Ray on this machine for the run)")
    parser.add_argument("--recycle", type=int_in(0), default=None, metavar="K",
                        help="rebuild each env instance after K episodes (0 = never; default 500 for sciworld, "
                             "whose JVM grows, else never)")


def pool_from_args(args: argparse.Namespace) -> Pool:
    """The `core.env_slots.Pool` of `add_pool_arguments`' flags, checked (UserError on a bad mix)."""
    pool = Pool(args.workers, args.executor, args.ray_address, args.recycle)
    pool.check()
    return pool
