"""A store file: the schema and its forward migrations, the store's errors, and connections.

Concurrency: DuckDB lets one process hold a file for writing, and no other process may open it
meanwhile. Every method of the store therefore opens a short-lived connection and closes it at
once; opening retries with back-off while another process holds the lock (up to `timeout`
seconds), so the dashboard, a CLI command and a collection run can share one file without a
"database is locked" error reaching the user. Training jobs do not write here while they run:
they write to their own job folder, which is ingested (see core.jobs).

Errors: a path that is not a store (a folder, a text or truncated file, a store of a newer
schema) or a write that fails (full disk) raises StoreError, one line naming the file. A file the
user may not write is opened read-only: every reader works, a write raises StoreError.

Schema changes are forward migrations: append one to `MIGRATIONS` and bump `SCHEMA_VERSION`.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from core.errors import UserError
from core.paths import default_db
from core.store_checks import check_store_file, missing_schema

SCHEMA_VERSION = 6

# Forward migrations: MIGRATIONS[v] takes a store at version v to v + 1.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
    CREATE TABLE IF NOT EXISTS tasks (
        env VARCHAR, task_id VARCHAR, split VARCHAR, instruction VARCHAR,
        PRIMARY KEY (env, task_id));
    CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY, kind VARCHAR, env VARCHAR, policy VARCHAR, model VARCHAR,
        settings JSON, status VARCHAR, created_at TIMESTAMP, finished_at TIMESTAMP);
    CREATE TABLE IF NOT EXISTS trajectories (
        traj_id VARCHAR PRIMARY KEY, run_id VARCHAR, env VARCHAR, task_id VARCHAR,
        instruction VARCHAR, reward DOUBLE, success BOOLEAN, source VARCHAR, model VARCHAR,
        temperature DOUBLE, top_p DOUBLE, n_steps INTEGER, meta JSON, created_at TIMESTAMP);
    CREATE TABLE IF NOT EXISTS steps (
        traj_id VARCHAR, idx INTEGER, thought VARCHAR, action VARCHAR, observation VARCHAR,
        reward DOUBLE, score DOUBLE);
    CREATE TABLE IF NOT EXISTS trees (
        tree_id VARCHAR PRIMARY KEY, env VARCHAR, task_id VARCHAR, instruction VARCHAR,
        merge VARCHAR, settings JSON, n_trajectories INTEGER, n_nodes INTEGER,
        n_branching INTEGER, mcts_iterations INTEGER, mcts_c DOUBLE, best_path INTEGER[],
        created_at TIMESTAMP);
    CREATE TABLE IF NOT EXISTS nodes (
        tree_id VARCHAR, node_id INTEGER, parent_id INTEGER, depth INTEGER, action VARCHAR,
        thoughts VARCHAR[], observations VARCHAR[], visits INTEGER, value_sum DOUBLE,
        successes INTEGER, failures INTEGER, terminal_rewards DOUBLE[], mcts_visits INTEGER,
        mcts_value_sum DOUBLE, traj_ids VARCHAR[]);
    CREATE TABLE IF NOT EXISTS pairs (
        pair_id VARCHAR PRIMARY KEY, tree_id VARCHAR, env VARCHAR, task_id VARCHAR,
        node_id INTEGER, granularity VARCHAR, value_kind VARCHAR, prompt JSON, chosen JSON,
        rejected JSON, chosen_value DOUBLE, rejected_value DOUBLE, margin DOUBLE,
        chosen_node INTEGER, rejected_node INTEGER, chosen_success BOOLEAN,
        rejected_success BOOLEAN, created_at TIMESTAMP);
    CREATE TABLE IF NOT EXISTS jobs (
        job_id VARCHAR PRIMARY KEY, kind VARCHAR, status VARCHAR, config JSON, pid INTEGER,
        step INTEGER, max_steps INTEGER, job_dir VARCHAR, output_path VARCHAR, error VARCHAR,
        created_at TIMESTAMP, started_at TIMESTAMP, updated_at TIMESTAMP,
        finished_at TIMESTAMP);
    CREATE TABLE IF NOT EXISTS metrics (
        job_id VARCHAR, step INTEGER, name VARCHAR, value DOUBLE, ts DOUBLE);
    CREATE TABLE IF NOT EXISTS models (
        name VARCHAR PRIMARY KEY, path VARCHAR, role VARCHAR, base VARCHAR, params BIGINT,
        job_id VARCHAR, data VARCHAR, lineage JSON, created_at TIMESTAMP);
    CREATE TABLE IF NOT EXISTS results (
        experiment_id VARCHAR, env VARCHAR, method VARCHAR, model VARCHAR, seed INTEGER,
        trajs_per_task INTEGER, avg_reward DOUBLE, success_rate DOUBLE, n_examples INTEGER,
        n_episodes INTEGER, created_at TIMESTAMP);
    """,
    # (every ADD COLUMN says IF NOT EXISTS: a store that a development build already gave the
    # column, under the older version number, still migrates)
    # v2: trees keep the first observation of their task (the task message needs it)
    "ALTER TABLE trees ADD COLUMN IF NOT EXISTS initial_observation VARCHAR DEFAULT '';",
    # v3: trees get a version (stale saves refuse); runs the process that runs them (a killed
    # collect reads as interrupted)
    """
    ALTER TABLE trees ADD COLUMN IF NOT EXISTS version BIGINT DEFAULT 1;
    ALTER TABLE runs ADD COLUMN IF NOT EXISTS pid INTEGER;
    ALTER TABLE runs ADD COLUMN IF NOT EXISTS host VARCHAR;
    """,
    # v4: a result row names its evaluation run (per-task rewards for paired comparisons)
    "ALTER TABLE results ADD COLUMN IF NOT EXISTS run_id VARCHAR;",
    # v5: a job row keeps the state of its folder's files at its last sync (unchanged: no write)
    "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS folder_state VARCHAR;",
    # v6: a node's true value by the env's expert (core.oracle); NULL where unknown
    """
    ALTER TABLE nodes ADD COLUMN IF NOT EXISTS true_value DOUBLE;
    ALTER TABLE nodes ADD COLUMN IF NOT EXISTS true_steps INTEGER;
    """,
]

RUN_COLUMNS = ("run_id, kind, env, policy, model, settings, status, created_at, finished_at, "
               "pid, host")
TASK_COLUMNS = "env, task_id, split, instruction"
TRAJECTORY_COLUMNS = ("traj_id, run_id, env, task_id, instruction, reward, success, source, model, "
                      "temperature, top_p, n_steps, meta, created_at")
STEP_COLUMNS = "traj_id, idx, thought, action, observation, reward, score"


# Trajectories are listed in collection order: a collected run's trajectories (they carry
# `meta.seq`, their place in the run, written by core.collect) at their run's start time, by seq
# (episodes finish and are flushed in another order, many at one created_at); others (imports,
# spaced 1 us apart in file order) at their insertion time. Trees insert trajectories in this
# order, so their "earliest child" and tie-breaks never depend on random ids.
_SEQ = "TRY_CAST(json_extract_string(meta, '$.seq') AS BIGINT)"
TRAJ_ORDER = (f"CASE WHEN {_SEQ} IS NULL THEN created_at ELSE coalesce((SELECT r.created_at FROM runs r "
              f"WHERE r.run_id = trajectories.run_id), created_at) END, run_id, {_SEQ}, created_at, traj_id")


class StoreError(UserError):
    """The store cannot be opened or written: one line naming the file and the cause."""


class StoreBusyError(StoreError):
    """Another process held the store for longer than the timeout."""


class StaleTreeError(StoreError):
    """A tree was saved by another process after this one loaded it."""

    def __init__(self, tree_ids: list[str]) -> None:
        self.tree_ids = tree_ids
        shown = ", ".join(tree_ids[:3]) + (", ..." if len(tree_ids) > 3 else "")
        super().__init__(f"{len(tree_ids)} tree(s) ({shown}) were rebuilt by another process while "
                         "this one worked on them; nothing of them was saved; run the command again")


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def now_utc() -> datetime:
    """Now in UTC, without a zone (the store's TIMESTAMP columns)."""
    return datetime.now(UTC).replace(tzinfo=None)


def _is_write_failure(exc: BaseException) -> bool:
    """Whether a failed write is the file's (full disk, I/O error): an IOException, or the
    TransactionException a commit raises when it cannot write (not a conflict between two
    writers, which callers retry)."""
    if isinstance(exc, duckdb.IOException):
        return True
    text = str(exc).lower()
    return isinstance(exc, duckdb.TransactionException) and "conflict" not in text and any(
        w in text for w in ("could not write", "no space", "io error", "i/o error", "failed to commit"))


def _is_lock_error(exc: Exception) -> bool:
    # DuckDB: 'IO Error: Could not set lock on file "...": Conflicting lock is held in ...'
    # (Windows says the file is being used by another process). Anything else fails at once.
    text = str(exc).lower()
    return "could not set lock" in text or "conflicting lock" in text or "being used" in text


def where_clause(**filters: Any) -> tuple[str, list[Any]]:
    """A WHERE clause (and its parameters) for the filters that are not None."""
    parts, params = [], []
    for col, val in filters.items():
        if val is not None:
            parts.append(f"{col} = ?")
            params.append(val)
    return ("WHERE " + " AND ".join(parts) if parts else ""), params


class StoreFile:
    """One DuckDB file opened as a store (created and migrated on first use): connections,
    transactions, the schema version and plain queries. `core.store.Store` adds the tables'
    methods to it."""

    def __init__(self, path: str | Path | None = None, timeout: float = 120.0) -> None:
        self.path = Path(path) if path else default_db()
        self.timeout = timeout
        if self.path.is_dir():
            raise StoreError(f"store {self.path} is a folder; pass --db a store file (or a new file name)")
        self._existed = check_store_file(self.path, StoreError)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder of store {self.path}: {exc.strerror}") from None
        # A file we may not write is opened read-only: readers work, writes say why they cannot.
        self.read_only = self.path.exists() and not os.access(self.path, os.W_OK)
        self._migrate()

    # -- connections -------------------------------------------------------------------------
    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; waits (with jittered back-off) while another process
        holds the file, then raises StoreBusyError naming the file."""
        deadline = time.monotonic() + self.timeout
        delay = 0.01
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=self.read_only)
                break
            except duckdb.Error as exc:
                if not _is_lock_error(exc):
                    raise StoreError(f"cannot open store {self.path}: {_first_line(exc)}; pass --db a "
                                     "w2stree store (or a new file name)") from None
                if time.monotonic() > deadline:
                    raise StoreBusyError(
                        f"store {self.path} stayed locked by another process for "
                        f"{self.timeout:.0f}s; stop that process or pass another --db"
                    ) from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 1.6, 0.5)
        try:
            yield con
        except (duckdb.InterruptException, RuntimeError) as exc:
            # DuckDB turns a Ctrl-C during a query into its own error (a RuntimeError "Query
            # interrupted" while fetching): it is the user's interrupt, not a failure
            if isinstance(exc, RuntimeError) and str(exc) != "Query interrupted":
                raise
            raise KeyboardInterrupt from exc
        finally:
            con.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside BEGIN/COMMIT that bumps the change counter; rolls back on error.

        A failed write of the file itself (full disk, I/O error) raises StoreError; a rollback
        that fails in turn is ignored so that the error reported is the real cause."""
        if self.read_only:
            raise StoreError(f"store {self.path} is read-only (the file is not writable): it can be "
                             "read but not changed; make it writable or pass another --db")
        with self.connect() as con:
            con.begin()
            try:
                yield con
                con.execute(
                    "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS VARCHAR) "
                    "WHERE key = 'changes'"
                )
                con.commit()
            except BaseException as exc:
                with contextlib.suppress(duckdb.Error):
                    con.rollback()
                if _is_write_failure(exc):
                    raise StoreError(f"writing store {self.path} failed, nothing of this write was "
                                     f"kept: {_first_line(exc)}") from exc
                raise

    def _migrate(self) -> None:
        with self.connect() as con:
            try:
                version = self._version(con)
                if version > SCHEMA_VERSION:
                    raise StoreError(f"store {self.path} has schema {version}, newer than this w2stree "
                                     f"({SCHEMA_VERSION}); upgrade w2stree or pass another --db")
                if version < SCHEMA_VERSION and self.read_only:
                    raise StoreError(f"store {self.path} has schema {version} and must be upgraded to "
                                     f"{SCHEMA_VERSION}, but the file is not writable; make it writable")
                for v in range(version, SCHEMA_VERSION):
                    con.begin()
                    con.execute(MIGRATIONS[v])
                    con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                                [str(v + 1)])
                    con.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('changes', '0')")
                    con.commit()
                missing = missing_schema(con, MIGRATIONS)
                if missing:
                    raise StoreError(f"store {self.path} is damaged: it {missing}; restore it from a backup "
                                     "or pass another --db")
            except (duckdb.Error, ValueError) as exc:
                raise StoreError(f"store {self.path} is not a usable w2stree store: {_first_line(exc)}; "
                                 "pass --db a w2stree store (or a new file name)") from None

    def _version(self, con: duckdb.DuckDBPyConnection) -> int:
        """The schema version of the open store (0: a new, empty file)."""
        has_meta = con.execute("SELECT count(*) FROM information_schema.tables "
                               "WHERE table_name = 'meta'").fetchone()[0]
        if not has_meta:
            tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                                "ORDER BY table_name").fetchall()]
            if self._existed and tables:  # someone else's database: never add our tables to it
                raise StoreError(f"{self.path} is a DuckDB file of another program (tables: "
                                 f"{', '.join(tables[:5])}{', ...' if len(tables) > 5 else ''}), not a "
                                 "w2stree store; nothing was changed; pass --db a w2stree store (or a new file name)")
            if self.read_only:
                raise StoreError(f"store {self.path} is empty and the file is not writable; "
                                 "make it writable or pass another --db")
            con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    # -- generic -----------------------------------------------------------------------------
    def query(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        """Run a read query and return a DataFrame."""
        with self.connect() as con:
            return con.execute(sql, params or []).df()

    def schema_version(self) -> int:
        return int(self.query("SELECT value FROM meta WHERE key='schema_version'").iloc[0, 0])

    def changes(self) -> int:
        """A counter bumped by every write: a cheap cache key for readers."""
        return int(self.query("SELECT value FROM meta WHERE key='changes'").iloc[0, 0])
