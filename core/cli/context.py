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

from core.errors import UserError
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
    from core.envs import UnknownEnvError, canonical_env_name

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

    from core.names import full_model_name

    found = full_model_name(store, name, env) if name else None
    if found is None:
        return name
    print(f"w2stree: {name} is {found[0]} ({found[1]})", file=sys.stderr, flush=True)
    return found[0]
