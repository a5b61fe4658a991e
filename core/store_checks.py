"""What a store file must be before DuckDB opens it, and the tables and columns a store must have
(core.store uses both when it opens a store).

DuckDB opens a FIFO (and blocks), and opens JSON, CSV or Parquet files as read-only views; a
file of another program would get w2stree's tables. So a path is checked first: it must not
exist (a new store), or be a regular DuckDB file. After migrating, every table and column of the
schema (MIGRATIONS run once in memory) must be there, so a damaged or hand-made store is one line
naming what it lacks, not a traceback in whatever command reads it first.
"""

from __future__ import annotations

import functools
import os
import stat
from pathlib import Path

import duckdb

DUCKDB_MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file


def check_store_file(path: Path, error: type[Exception]) -> bool:
    """Whether `path` already exists as a DuckDB file (False: a new store is made there);
    `error` (one line), without waiting or writing, for anything else there: a FIFO or pipe
    (`--db <(...)`), a device, or a file that is not a DuckDB database (JSON, CSV, Parquet, text)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            raise error(f"store {path} is a broken symbolic link; fix it or pass another --db") from None
        return False
    except OSError as exc:
        raise error(f"cannot open store {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"store {path} is not a regular file (a FIFO, pipe, device or socket); pass --db "
                    "a w2stree store file (or a new file name)")
    try:
        # O_NONBLOCK: should the path become a FIFO after the check, opening it does not wait
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            head = fh.read(12)
    except OSError as exc:
        raise error(f"cannot read store {path}: {exc.strerror or exc}") from None
    if head[8:12] != DUCKDB_MAGIC:
        raise error(f"{path} is not a w2stree store (not a DuckDB file); nothing was changed; pass --db "
                    "a w2stree store (or a new file name)")
    return True


def missing_schema(con: duckdb.DuckDBPyConnection, migrations: tuple[str, ...] | list[str]) -> str | None:
    """What the open store lacks of the schema `migrations` build ("has no table T" / "has no
    column C in table T"), or None."""
    have: dict[str, set[str]] = {}
    for table, column in con.execute("SELECT table_name, column_name FROM information_schema.columns "
                                     "WHERE table_schema = 'main'").fetchall():
        have.setdefault(table, set()).add(column)
    for table, columns in _schema_columns(tuple(migrations)).items():
        if table not in have:
            return f"has no table {table}"
        missing = [c for c in columns if c not in have[table]]
        if missing:
            return f"has no column {missing[0]} in table {table}"
    return None


@functools.cache
def _schema_columns(migrations: tuple[str, ...]) -> dict[str, list[str]]:
    """The columns of every table after `migrations` (run in an in-memory database)."""
    con = duckdb.connect()
    try:
        for migration in migrations:
            con.execute(migration)
        rows = con.execute("SELECT table_name, column_name FROM information_schema.columns "
                           "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position").fetchall()
    finally:
        con.close()
    out: dict[str, list[str]] = {}
    for table, column in rows:
        out.setdefault(table, []).append(column)
    return out
