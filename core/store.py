"""The DuckDB store: one file holding tasks, runs, trajectories, trees, pairs, jobs and models.

Concurrency: DuckDB lets one process hold a file for writing, and no other process may open it
meanwhile. Every method here therefore opens a short-lived connection and closes it at once;
opening retries with back-off while another process holds the lock (up to `timeout` seconds),
so the dashboard, a CLI command and a collection run can share one file without a
"database is locked" error reaching the user. Training jobs do not write here while they run:
they write to their own job folder, which is ingested (see core.jobs).

Bulk writes go through Arrow tables, never row-by-row inserts.

Errors: a path that is not a store (a folder, a text or truncated file, a store of a newer
schema) or a write that fails (full disk) raises StoreError, one line naming the file. A file the
user may not write is opened read-only: every reader works, a write raises StoreError.

Trees carry a version, bumped by every save. A tree loaded from the store remembers its version,
and saving it back refuses (StaleTreeError) when another process saved that tree meanwhile, so
a slow `mcts` never overwrites a tree that `tree` rebuilt while it ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import networkx as nx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import UserError
from core.paths import default_db
from core.processes import pid_running
from core.store_checks import check_store_file, missing_schema
from core.store_jobs import JobTables
from core.store_summaries import Summaries
from core.trajectory import Pair, Run, Step, Task, Trajectory
from core.tree_data import NO_STEPS, Ragged, Tree, concat
from core.tree_data import NODE_FIELDS as NODE_FIELDS  # noqa: F401 -- importers read it here

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


def _now() -> datetime:
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


class Store(JobTables, Summaries):
    """A w2stree store backed by one DuckDB file (created and migrated on first use).

    Every SQL statement of w2stree is a method of this class: this module holds connections,
    migrations, tasks, runs, trajectories, trees and pairs; `core.store_jobs` jobs, metrics and
    models; `core.store_summaries` the summaries that commands and the dashboard show."""

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
        if not self.read_only:
            self.mark_dead_runs()

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

    # -- tasks and runs ----------------------------------------------------------------------
    def upsert_tasks(self, tasks: Iterable[Task]) -> int:
        rows = [(t.env, t.task_id, t.split, t.instruction) for t in tasks]
        if not rows:
            return 0
        table = pa.table(dict(zip(("env", "task_id", "split", "instruction"), zip(*rows), strict=True)))
        with self.transaction() as con:
            con.register("new_tasks", table)
            con.execute(f"INSERT OR REPLACE INTO tasks ({TASK_COLUMNS}) SELECT {TASK_COLUMNS} FROM new_tasks")
        return len(rows)

    def tasks(self, env: str | None = None, split: str | None = None) -> pd.DataFrame:
        where, params = _where(env=env, split=split)
        return self.query(f"SELECT * FROM tasks {where} ORDER BY env, task_id", params)

    def add_run(self, run: Run, status: str = "running") -> None:
        """Record a run, owned by this process (see `mark_dead_runs`)."""
        with self.transaction() as con:
            con.execute(
                f"INSERT OR REPLACE INTO runs ({RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                [run.run_id, run.kind, run.env, run.policy, run.model,
                 json.dumps(run.settings), status, _now(), os.getpid(), socket.gethostname()],
            )

    def claim_run(self, run_id: str) -> None:
        """Mark a stored run running again, owned by this process (a resumed collect)."""
        with self.transaction() as con:
            con.execute("UPDATE runs SET status = 'running', finished_at = NULL, pid = ?, host = ? "
                        "WHERE run_id = ?", [os.getpid(), socket.gethostname(), run_id])

    def run_owner_alive(self, run_id: str) -> bool:
        """Whether run `run_id` says running and its process (on this machine) still runs."""
        rows = self.query("SELECT pid, host FROM runs WHERE run_id = ? AND status = 'running'", [run_id])
        return bool(len(rows)) and _owner_alive(rows.iloc[0]["pid"], rows.iloc[0]["host"])

    def mark_dead_runs(self) -> int:
        """Runs that say `running` but whose process on this machine is gone (killed, machine
        restarted) become `interrupted` (resumable with `collect --resume RUN`); returns how many."""
        running = self.query("SELECT run_id, pid, host FROM runs WHERE status = 'running'")
        dead = [r.run_id for r in running.itertuples(index=False) if not _owner_alive(r.pid, r.host)]
        if dead:
            with self.transaction() as con:
                con.execute("UPDATE runs SET status = 'interrupted', finished_at = ? "
                            "WHERE status = 'running' AND run_id IN (SELECT unnest(?))", [_now(), dead])
        return len(dead)

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        with self.transaction() as con:
            con.execute(
                "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?",
                [status, _now(), run_id],
            )

    def run_record(self, run_id: str) -> dict[str, Any]:
        """The stored row of run `run_id` (column -> value); KeyError when there is none."""
        rows = self.query(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", [run_id])
        if rows.empty:
            raise KeyError(f"no run {run_id!r}")
        return rows.iloc[0].to_dict()

    def has_run(self, run_id: str) -> bool:
        """Whether a run of this id is stored."""
        return not self.query("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).empty

    def runs(self, kind: str | None = None, env: str | None = None) -> pd.DataFrame:
        where, params = _where(kind=kind, env=env)
        return self.query(f"SELECT * FROM runs {where} ORDER BY created_at", params)

    # -- trajectories ------------------------------------------------------------------------
    def add_trajectories(self, trajs: Iterable[Trajectory], con: duckdb.DuckDBPyConnection | None = None) -> int:
        """Insert trajectories and their steps in one transaction (Arrow batches)."""
        trajs = list(trajs)
        if not trajs:
            return 0
        now = _now()
        head = pa.table({
            "traj_id": [t.traj_id for t in trajs],
            "run_id": [t.run_id for t in trajs],
            "env": [t.env for t in trajs],
            "task_id": [t.task_id for t in trajs],
            "instruction": [t.instruction for t in trajs],
            "reward": pa.array([float(t.reward) for t in trajs], pa.float64()),
            "success": [bool(t.success) for t in trajs],
            "source": [t.source for t in trajs],
            "model": [t.model for t in trajs],
            "temperature": pa.array([t.temperature for t in trajs], pa.float64()),
            "top_p": pa.array([t.top_p for t in trajs], pa.float64()),
            "n_steps": pa.array([len(t.steps) for t in trajs], pa.int32()),
            "meta": [json.dumps(t.meta) for t in trajs],
            "created_at": pa.array([now] * len(trajs), pa.timestamp("us")),
        })
        steps = pa.table({
            "traj_id": [t.traj_id for t in trajs for _ in t.steps],
            "idx": pa.array([i for t in trajs for i in range(len(t.steps))], pa.int32()),
            "thought": [s.thought for t in trajs for s in t.steps],
            "action": [s.action for t in trajs for s in t.steps],
            "observation": [s.observation for t in trajs for s in t.steps],
            "reward": pa.array([float(s.reward) for t in trajs for s in t.steps], pa.float64()),
            "score": pa.array([s.score for t in trajs for s in t.steps], pa.float64()),
        })

        def write(c: duckdb.DuckDBPyConnection) -> None:
            c.register("new_trajs", head)
            c.register("new_steps", steps)
            c.execute(f"INSERT INTO trajectories ({TRAJECTORY_COLUMNS}) SELECT {TRAJECTORY_COLUMNS} FROM new_trajs")
            c.execute(f"INSERT INTO steps ({STEP_COLUMNS}) SELECT {STEP_COLUMNS} FROM new_steps")
            c.unregister("new_trajs")
            c.unregister("new_steps")

        if con is not None:
            write(con)
        else:
            with self.transaction() as c:
                write(c)
        return len(trajs)

    def import_trajectories(self, trajs: Iterable[Trajectory], runs: Iterable[Run] = (),
                            split: str = "train", replace_prefixes: Iterable[str] = (),
                            splits: Mapping[tuple[str, str], str] | None = None) -> int:
        """Store imported trajectories, their runs and tasks in ONE transaction (all or none);
        returns how many trajectories were added.

        Trajectories whose id is already stored, or starts with one of `replace_prefixes` (what
        a file imported before), are replaced (importers derive ids from the file, so importing
        a file again does not duplicate it). A trajectory that is already stored under the id it
        carries in `meta["traj_id"]` (what an export writes) with the same env, task, reward and
        number of steps is left out: re-importing an export adds nothing. Tasks not yet known are
        added to their split in `splits` ((env, task id) -> split, e.g. a spool's), else `split`; runs not yet known are recorded as finished imports, and a stored run
        is never changed."""
        trajs = list(trajs)
        prefixes = list(replace_prefixes)
        if not trajs and not prefixes:
            return 0
        with self.transaction() as con:
            con.register("old_prefixes", pa.table({"prefix": pa.array(prefixes, pa.string())}))
            trajs = _not_stored(con, trajs)
            con.register("old_ids", pa.table({"traj_id": pa.array([t.traj_id for t in trajs], pa.string())}))
            old = ("SELECT traj_id FROM old_ids UNION SELECT t.traj_id FROM trajectories t "
                   "JOIN old_prefixes p ON starts_with(t.traj_id, p.prefix)")
            con.execute(f"DELETE FROM steps WHERE traj_id IN ({old})")
            con.execute(f"DELETE FROM trajectories WHERE traj_id IN ({old})")
            con.unregister("old_ids")
            con.unregister("old_prefixes")
            used = {t.run_id for t in trajs}
            for run in runs:
                if run.run_id in used:
                    con.execute(
                        f"INSERT OR IGNORE INTO runs ({RUN_COLUMNS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, 'finished', ?, ?, NULL, NULL)",
                        [run.run_id, run.kind, run.env, run.policy, run.model,
                         json.dumps(run.settings), _now(), _now()],
                    )
            tasks = {(t.env, t.task_id): t.instruction for t in trajs}
            con.register("new_tasks", pa.table({
                "env": pa.array([k[0] for k in tasks], pa.string()),
                "task_id": pa.array([k[1] for k in tasks], pa.string()),
                "split": pa.array([(splits or {}).get(k, split) for k in tasks], pa.string()),
                "instruction": pa.array(list(tasks.values()), pa.string()),
            }))
            con.execute(f"INSERT OR IGNORE INTO tasks ({TASK_COLUMNS}) SELECT {TASK_COLUMNS} FROM new_tasks")
            con.unregister("new_tasks")
            self.add_trajectories(trajs, con=con)
            # Readers list trajectories by created_at: space them 1 µs apart so they keep
            # the order of the files (trees keep first-insertion order of children).
            con.register("import_order", pa.table({"traj_id": pa.array([t.traj_id for t in trajs], pa.string()),
                                                   "seq": pa.array(range(len(trajs)), pa.int64())}))
            con.execute("UPDATE trajectories SET created_at = created_at + to_microseconds(o.seq) "
                        "FROM import_order o WHERE trajectories.traj_id = o.traj_id")
            con.unregister("import_order")
        return len(trajs)

    def foreign_runs(self, run_ids: Iterable[str], spooled: bool = False) -> set[str]:
        """Those of `run_ids` that are stored runs not made by an import (collect, eval,
        explore): an import never adds trajectories to them. With `spooled`, runs imported from
        collectors' spools (their settings name the spool) are not foreign either: the spools of
        one run, or one spool imported again, add to it."""
        ids = list(run_ids)
        spool = " AND json_extract(settings, '$.spool') IS NULL" if spooled else ""
        return set(self.query("SELECT run_id FROM runs WHERE kind IS DISTINCT FROM 'import' "
                              f"AND run_id IN (SELECT unnest(?)){spool}", [ids])["run_id"]) if ids else set()

    def stored_traj_ids(self, traj_ids: Iterable[str]) -> set[str]:
        """Those of `traj_ids` that the store holds."""
        ids = list(traj_ids)
        return set(self.query("SELECT traj_id FROM trajectories WHERE traj_id IN (SELECT unnest(?))",
                              [ids])["traj_id"]) if ids else set()

    def counts(self) -> dict[str, int]:
        """Row count of every table (cheap; used by stats and to check that nothing changed)."""
        tables = ("tasks", "runs", "trajectories", "steps", "trees", "nodes", "pairs", "jobs",
                  "metrics", "models", "results")
        with self.connect() as con:
            return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables}

    def trajectory_index(self, env: str | None = None, task_id: str | None = None,
                         source: str | None = None, run_id: str | None = None,
                         model: str | None = None) -> pd.DataFrame:
        """Trajectory headers (no steps) matching the filters."""
        where, params = _where(env=env, task_id=task_id, source=source, run_id=run_id, model=model)
        return self.query(f"SELECT * FROM trajectories {where} ORDER BY {TRAJ_ORDER}", params)

    def trajectories(self, env: str | None = None, task_id: str | None = None,
                     source: str | None = None, run_id: str | None = None,
                     model: str | None = None, traj_ids: list[str] | None = None,
                     limit: int | None = None) -> list[Trajectory]:
        """Load full trajectories (with steps), in collection order (`TRAJ_ORDER`)."""
        where, params = _where(env=env, task_id=task_id, source=source, run_id=run_id, model=model)
        if traj_ids is not None:
            where += (" AND " if where else "WHERE ") + "traj_id IN (SELECT unnest(?))"
            params.append(list(traj_ids))
        lim = f"LIMIT {int(limit)}" if limit else ""
        with self.connect() as con:
            head = con.execute(
                f"SELECT * FROM trajectories {where} ORDER BY {TRAJ_ORDER} {lim}", params
            ).df()
            if head.empty:
                return []
            con.register("sel", pa.table({"traj_id": head["traj_id"].tolist()}))
            steps = con.execute(
                "SELECT s.* FROM steps s JOIN sel USING (traj_id) ORDER BY s.traj_id, s.idx"
            ).df()
        by_traj: dict[str, list[Step]] = {}
        for tid, thought, action, obs, rew, score in zip(
            steps["traj_id"], steps["thought"], steps["action"], steps["observation"],
            steps["reward"], steps["score"], strict=True,
        ):
            by_traj.setdefault(tid, []).append(Step(
                action=action, observation=obs, thought=thought, reward=float(rew),
                score=None if pd.isna(score) else float(score),
            ))
        return [
            Trajectory(
                env=r.env, task_id=r.task_id, instruction=r.instruction,
                steps=by_traj.get(r.traj_id, []), reward=float(r.reward), success=bool(r.success),
                source=r.source, run_id=r.run_id, model=r.model,
                temperature=None if pd.isna(r.temperature) else float(r.temperature),
                top_p=None if pd.isna(r.top_p) else float(r.top_p),
                meta=json.loads(r.meta) if r.meta else {}, traj_id=r.traj_id,
            )
            for r in head.itertuples(index=False)
        ]

    # -- trees -------------------------------------------------------------------------------
    def tree_tables(self, env: str | None = None, task_id: str | None = None, source: str | None = None,
                    model: str | None = None, traj_ids: list[str] | None = None) -> tuple[pa.Table, pa.Table]:
        """The input of `core.tree.build_trees_from_tables` for the matching trajectories (never
        evaluation episodes or spliced state paths unless `source` asks for them), in collection
        order (`TRAJ_ORDER`):
        (heads: traj_id, env, task_id, instruction, initial_observation, reward, success,
        n_steps; steps: thought, action, observation in trajectory order, then step order)."""
        where, params = _where(env=env, task_id=task_id, source=source, model=model)
        if source is None:  # played episodes only (a state-merged tree's spliced paths are not)
            where += (" AND " if where else "WHERE ") + "coalesce(source, '') NOT IN ('eval', 'splice')"
        if traj_ids is not None:
            where += " AND traj_id IN (SELECT unnest(?))"
            params.append(list(traj_ids))
        with self.connect() as con:
            heads = con.sql(
                "SELECT traj_id, env, task_id, instruction, reward, success, n_steps, "
                "coalesce(json_extract_string(meta, '$.initial_observation'), '') AS initial_observation "
                f"FROM trajectories {where} ORDER BY {TRAJ_ORDER}", params=params).to_arrow_table()
            con.register("sel", pa.table({"traj_id": heads.column("traj_id"),
                                          "pos": pa.array(range(heads.num_rows), pa.int64())}))
            steps = con.sql("SELECT sel.pos, s.thought, s.action, s.observation FROM steps s JOIN sel "
                            "USING (traj_id) ORDER BY sel.pos, s.idx").to_arrow_table()
        # The steps table is the truth for the number of steps (not the header's n_steps).
        counts = np.bincount(steps.column("pos").to_numpy(), minlength=heads.num_rows)
        heads = heads.set_column(heads.schema.get_field_index("n_steps"), "n_steps", pa.array(counts, pa.int64()))
        return heads, steps

    def save_trees(self, trees: Iterable[Tree | nx.DiGraph]) -> list[str]:
        """Persist trees (replacing earlier trees of the same id) as node rows, one Arrow insert
        for all of them; each gets the next version. A tree that was loaded from the store
        (`version` set) is saved only if the stored tree still has that version: otherwise
        StaleTreeError, and none is saved. DiGraphs (`Tree.to_networkx()` form) are accepted."""
        given = list(trees)
        if not given:
            return []
        arrays = [Tree.from_networkx(t) if isinstance(t, nx.DiGraph) else t for t in given]
        now = _now()
        head_tab = pa.table({
            "tree_id": pa.array([t.tree_id for t in arrays], pa.string()),
            "env": pa.array([t.env for t in arrays], pa.string()),
            "task_id": pa.array([t.task_id for t in arrays], pa.string()),
            "instruction": pa.array([t.instruction for t in arrays], pa.string()),
            "merge": pa.array([t.merge for t in arrays], pa.string()),
            "settings": pa.array([json.dumps(t.settings) for t in arrays], pa.string()),
            "n_trajectories": pa.array([t.n_trajectories for t in arrays], pa.int32()),
            "n_nodes": pa.array([t.n_nodes for t in arrays], pa.int32()),
            "n_branching": pa.array([len(t.branching()) for t in arrays], pa.int32()),
            "mcts_iterations": pa.array([int(t.mcts_iterations or 0) for t in arrays], pa.int32()),
            "mcts_c": pa.array([float(t.mcts_c or 0.0) for t in arrays], pa.float64()),
            "best_path": pa.array([list(t.best_path) for t in arrays], pa.list_(pa.int32())),
            "created_at": pa.array([now] * len(arrays), pa.timestamp("us")),
            "initial_observation": pa.array([t.initial_observation for t in arrays], pa.string()),
        })
        node_tab = _node_table(arrays)
        with self.transaction() as con:
            versions = _next_versions(con, arrays)
            head_tab = head_tab.append_column("version", pa.array(versions, pa.int64()))
            con.register("new_trees", head_tab)
            con.register("new_nodes", node_tab)
            con.execute("DELETE FROM nodes WHERE tree_id IN (SELECT tree_id FROM new_trees)")
            con.execute("DELETE FROM trees WHERE tree_id IN (SELECT tree_id FROM new_trees)")
            for table, new in (("trees", "new_trees"), ("nodes", "new_nodes")):
                names = ", ".join((head_tab if table == "trees" else node_tab).column_names)
                con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {new}")
        for g, t, v in zip(given, arrays, versions, strict=True):
            t.version = v
            if isinstance(g, nx.DiGraph):
                g.graph["version"] = v
        return [t.tree_id for t in arrays]

    def save_scores(self, trees: Iterable[Tree]) -> list[str]:
        """Persist the MCTS results of trees loaded from the store (node `mcts_visits` /
        `mcts_value_sum`, best path, MCTS settings) without rewriting their nodes; same version
        check and bump as `save_trees` (a tree rebuilt meanwhile raises StaleTreeError)."""
        return self._update_nodes(list(trees), {
            "mcts_visits": lambda t: pa.array(t.mcts_visits, pa.int32()),
            "mcts_value_sum": lambda t: pa.array(t.mcts_value_sum, pa.float64())}, mcts_head=True)

    def save_true_values(self, trees: Iterable[Tree]) -> list[str]:
        """Persist the oracle columns (`true_value`, `true_steps`; NULL where unknown) of trees
        loaded from the store, nothing else; same version check and bump as `save_trees`."""
        return self._update_nodes(list(trees), {
            "true_value": lambda t: pa.array(t.true_value, pa.float64(), mask=np.isnan(t.true_value)),
            "true_steps": lambda t: pa.array(t.true_steps, pa.int32(), mask=t.true_steps == NO_STEPS)})

    def _update_nodes(self, trees: list[Tree], columns: dict[str, Any], mcts_head: bool = False) -> list[str]:
        """Write node `columns` (name -> the Arrow array of a tree) of trees loaded from the store in
        place, bumping their versions (StaleTreeError when one was saved by another process since);
        `mcts_head` also writes the MCTS header fields (settings, iterations, c, best path)."""
        if not trees:
            return []
        unsaved = [t.tree_id for t in trees if t.version is None]
        if unsaved:
            raise UserError(f"tree {unsaved[0]} was not loaded from the store; save it with save_trees")
        sizes = [t.n_nodes for t in trees]
        values = pa.table({
            "tree_id": pa.array(np.repeat(np.array([t.tree_id for t in trees], dtype=object), sizes), pa.string()),
            "node_id": pa.array(np.concatenate([np.arange(n) for n in sizes]), pa.int32()),
            **{name: pa.concat_arrays([arr(t) for t in trees]) for name, arr in columns.items()},
        })
        with self.transaction() as con:
            versions = _next_versions(con, trees)
            heads = {"tree_id": pa.array([t.tree_id for t in trees], pa.string()),
                     "version": pa.array(versions, pa.int64())}
            if mcts_head:
                heads.update({
                    "settings": pa.array([json.dumps(t.settings) for t in trees], pa.string()),
                    "mcts_iterations": pa.array([int(t.mcts_iterations or 0) for t in trees], pa.int32()),
                    "mcts_c": pa.array([float(t.mcts_c or 0.0) for t in trees], pa.float64()),
                    "best_path": pa.array([list(t.best_path) for t in trees], pa.list_(pa.int32()))})
            con.register("new_heads", pa.table(heads))
            con.register("node_values", values)
            sets = ", ".join(f"{c} = v.{c}" for c in columns)
            con.execute(f"UPDATE nodes SET {sets} FROM node_values v "
                        "WHERE nodes.tree_id = v.tree_id AND nodes.node_id = v.node_id")
            sets = ", ".join(f"{c} = h.{c}" for c in heads if c != "tree_id")
            con.execute(f"UPDATE trees SET {sets} FROM new_heads h WHERE trees.tree_id = h.tree_id")
        for t, v in zip(trees, versions, strict=True):
            t.version = v
        return [t.tree_id for t in trees]

    def add_to_tree(self, tree_id: str, trajectories: Iterable[Trajectory]) -> Tree:
        """Add trajectories (of the tree's task) to the stored tree `tree_id` and save it; the
        other trees are not touched. The result equals a rebuild from all its trajectories
        (MCTS statistics reset: run MCTS again). Raises StaleTreeError if another process saved
        the tree meanwhile."""
        tree = self.load_tree(tree_id)
        tree.extend(list(trajectories))
        self.save_trees([tree])
        return tree

    def trees(self, env: str | None = None, task_id: str | None = None) -> pd.DataFrame:
        """Tree headers (one row per tree)."""
        where, params = _where(env=env, task_id=task_id)
        return self.query(f"SELECT * FROM trees {where} ORDER BY env, task_id", params)

    def load_tree(self, tree_id: str) -> Tree:
        """The stored tree `tree_id` (`Tree.to_networkx()` gives its DiGraph)."""
        trees = self.load_trees(tree_ids=[tree_id])
        if not trees:
            raise KeyError(f"no tree {tree_id!r}; run `w2stree tree` first")
        return trees[0]

    def load_trees(self, env: str | None = None, task_id: str | None = None,
                   tree_ids: list[str] | None = None, numeric_only: bool = False) -> list[Tree]:
        """Stored trees matching the filters (by env and task), or exactly `tree_ids` in that
        order (unknown ids are left out); one connection and two queries for all of them.

        `numeric_only` reads just the numeric node columns (structure and statistics: what MCTS
        and `save_scores` need): node texts (action, thoughts, observations) come back empty,
        and so do the trajectories through each node (`trajs`, `traj_ids`)."""
        with self.connect() as con:
            if tree_ids is None:
                where, params = _where(env=env, task_id=task_id)
                heads = con.sql(f"SELECT * FROM trees {where} ORDER BY env, task_id", params=params)
            else:
                con.register("want", pa.table({"tree_id": pa.array(list(tree_ids), pa.string()),
                                               "pos": pa.array(range(len(tree_ids)), pa.int64())}))
                heads = con.sql("SELECT t.* FROM trees t JOIN want USING (tree_id) ORDER BY want.pos")
            heads = heads.to_arrow_table()
            con.register("sel", pa.table({"tree_id": heads.column("tree_id"),
                                          "pos": pa.array(range(heads.num_rows), pa.int64())}))
            cols = ", ".join(f"n.{c}" for c in _NUMERIC_NODE_COLUMNS) if numeric_only else "n.*"
            nodes = con.sql(f"SELECT sel.pos, {cols} FROM nodes n JOIN sel USING (tree_id) "
                            "ORDER BY sel.pos, n.node_id").to_arrow_table()
        return _trees_from_tables(heads, nodes)

    # -- pairs -------------------------------------------------------------------------------
    def save_pairs(self, pairs: Iterable[Pair], replace_tasks: Iterable[tuple[str, str, str]] = ()) -> int:
        """Insert pairs; first delete the pairs of `replace_tasks` ((env, task_id, granularity)
        triples) so re-running replaces them."""
        pairs = list(pairs)
        now = _now()
        table = pa.table({
            "pair_id": [p.pair_id for p in pairs],
            "tree_id": pa.array([p.tree_id for p in pairs], pa.string()),
            "env": pa.array([p.env for p in pairs], pa.string()),
            "task_id": pa.array([p.task_id for p in pairs], pa.string()),
            "node_id": pa.array([p.node_id for p in pairs], pa.int32()),
            "granularity": pa.array([p.granularity for p in pairs], pa.string()),
            "value_kind": pa.array([p.value_kind for p in pairs], pa.string()),
            "prompt": pa.array([json.dumps(p.prompt) for p in pairs], pa.string()),
            "chosen": pa.array([json.dumps(p.chosen) for p in pairs], pa.string()),
            "rejected": pa.array([json.dumps(p.rejected) for p in pairs], pa.string()),
            "chosen_value": pa.array([p.chosen_value for p in pairs], pa.float64()),
            "rejected_value": pa.array([p.rejected_value for p in pairs], pa.float64()),
            "margin": pa.array([p.margin for p in pairs], pa.float64()),
            "chosen_node": pa.array([p.chosen_node for p in pairs], pa.int32()),
            "rejected_node": pa.array([p.rejected_node for p in pairs], pa.int32()),
            "chosen_success": pa.array([p.chosen_success for p in pairs], pa.bool_()),
            "rejected_success": pa.array([p.rejected_success for p in pairs], pa.bool_()),
            "created_at": pa.array([now] * len(pairs), pa.timestamp("us")),
        })
        with self.transaction() as con:
            for env, task_id, gran in replace_tasks:
                con.execute("DELETE FROM pairs WHERE env = ? AND task_id = ? AND granularity = ?",
                            [env, task_id, gran])
            if pairs:
                con.register("new_pairs", table)
                cols = ", ".join(table.column_names)
                con.execute(f"INSERT INTO pairs ({cols}) SELECT {cols} FROM new_pairs")
        return len(pairs)

    def pairs(self, env: str | None = None, task_id: str | None = None,
              granularity: str | None = None, tree_id: str | None = None,
              min_margin: float | None = None) -> list[Pair]:
        """Stored pairs matching the filters."""
        df = self.pairs_frame(env, task_id, granularity, tree_id, min_margin)
        return [
            Pair(env=r.env, task_id=r.task_id, prompt=json.loads(r.prompt),
                 chosen=json.loads(r.chosen), rejected=json.loads(r.rejected),
                 chosen_value=float(r.chosen_value), rejected_value=float(r.rejected_value),
                 granularity=r.granularity, value_kind=r.value_kind, tree_id=r.tree_id or "",
                 node_id=int(r.node_id), chosen_node=int(r.chosen_node),
                 rejected_node=int(r.rejected_node), chosen_success=bool(r.chosen_success),
                 rejected_success=bool(r.rejected_success), pair_id=r.pair_id)
            for r in df.itertuples(index=False)
        ]

    def pairs_frame(self, env: str | None = None, task_id: str | None = None,
                    granularity: str | None = None, tree_id: str | None = None,
                    min_margin: float | None = None) -> pd.DataFrame:
        where, params = _where(env=env, task_id=task_id, granularity=granularity, tree_id=tree_id)
        if min_margin is not None:
            where += (" AND " if where else "WHERE ") + "margin >= ?"
            params.append(float(min_margin))
        return self.query(f"SELECT * FROM pairs {where} ORDER BY env, task_id, node_id, pair_id", params)

    # -- results -----------------------------------------------------------------------------
    def add_results(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        cols = ("experiment_id", "env", "method", "model", "seed", "trajs_per_task",
                "avg_reward", "success_rate", "n_examples", "n_episodes", "run_id")
        df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows])
        df["created_at"] = _now()
        names = ", ".join(df.columns)
        with self.transaction() as con:
            con.register("new_results", df)
            con.execute(f"INSERT INTO results ({names}) SELECT {names} FROM new_results")

    def results(self, experiment_id: str | None = None) -> pd.DataFrame:
        where, params = _where(experiment_id=experiment_id)
        return self.query(f"SELECT * FROM results {where} ORDER BY created_at", params)


def _next_versions(con: duckdb.DuckDBPyConnection, trees: list[Tree]) -> list[int]:
    """The versions trees get when saved in this transaction; StaleTreeError when a tree loaded
    from the store (`version` set) was saved by another process since. The process holds the
    file until COMMIT, so no other save can come between this check and the write."""
    con.register("ids", pa.table({"tree_id": pa.array([t.tree_id for t in trees], pa.string())}))
    stored = dict(con.execute("SELECT i.tree_id, t.version FROM ids i LEFT JOIN trees t USING (tree_id)").fetchall())
    stale = [t.tree_id for t in trees if t.version is not None and stored.get(t.tree_id) != t.version]
    if stale:
        raise StaleTreeError(stale)
    return [(stored.get(t.tree_id) or 0) + 1 for t in trees]


def _not_stored(con: duckdb.DuckDBPyConnection, trajs: list[Trajectory]) -> list[Trajectory]:
    """`trajs` without those already stored under the id they carry in `meta["traj_id"]` (same
    env, task, reward and number of steps), unless that stored one is about to be replaced (its
    id starts with a prefix of the registered `old_prefixes`)."""
    origin = [t.meta.get("traj_id") if isinstance(t.meta.get("traj_id"), str) else None for t in trajs]
    if not any(origin):
        return trajs
    con.register("origin", pa.table({
        "pos": pa.array(range(len(trajs)), pa.int64()), "traj_id": pa.array(origin, pa.string()),
        "env": pa.array([t.env for t in trajs], pa.string()),
        "task_id": pa.array([t.task_id for t in trajs], pa.string()),
        "reward": pa.array([float(t.reward) for t in trajs], pa.float64()),
        "n_steps": pa.array([len(t.steps) for t in trajs], pa.int32())}))
    known = {row[0] for row in con.execute(
        "SELECT o.pos FROM origin o JOIN trajectories t USING (traj_id, env, task_id, reward, n_steps) "
        "WHERE NOT EXISTS (SELECT 1 FROM old_prefixes p WHERE starts_with(t.traj_id, p.prefix))").fetchall()}
    con.unregister("origin")
    return [t for i, t in enumerate(trajs) if i not in known]


def _list_column(parts: list[Ragged], kind: pa.DataType) -> pa.ListArray:
    """The rows of several Ragged as one Arrow list column."""
    rows = concat(parts)
    return pa.ListArray.from_arrays(pa.array(rows.offsets, pa.int32()), pa.array(rows.values, kind))


def _node_table(trees: list[Tree]) -> pa.Table:
    """The `nodes` rows of trees, column by column from their arrays."""
    sizes = [t.n_nodes for t in trees]
    parent = np.concatenate([t.parent for t in trees])
    return pa.table({
        "tree_id": pa.array(np.repeat(np.array([t.tree_id for t in trees], dtype=object), sizes), pa.string()),
        "node_id": pa.array(np.concatenate([np.arange(n) for n in sizes]), pa.int32()),
        "parent_id": pa.array(parent, pa.int32(), mask=parent < 0),
        "depth": pa.array(np.concatenate([t.depth for t in trees]), pa.int32()),
        "action": pa.array(np.concatenate([t.action for t in trees]), pa.string()),
        "thoughts": _list_column([t.thoughts for t in trees], pa.string()),
        "observations": _list_column([t.observations for t in trees], pa.string()),
        "visits": pa.array(np.concatenate([t.visits for t in trees]), pa.int32()),
        "value_sum": pa.array(np.concatenate([t.value_sum for t in trees]), pa.float64()),
        "successes": pa.array(np.concatenate([t.successes for t in trees]), pa.int32()),
        "failures": pa.array(np.concatenate([t.failures for t in trees]), pa.int32()),
        "terminal_rewards": _list_column([t.terminal_rewards for t in trees], pa.float64()),
        "mcts_visits": pa.array(np.concatenate([t.mcts_visits for t in trees]), pa.int32()),
        "mcts_value_sum": pa.array(np.concatenate([t.mcts_value_sum for t in trees]), pa.float64()),
        "traj_ids": _list_column([Ragged(t.trajs.offsets, t.traj_ids[t.trajs.values]) for t in trees],
                                 pa.string()),
        "true_value": pa.array(np.concatenate([t.true_value for t in trees]), pa.float64(),
                               mask=np.isnan(np.concatenate([t.true_value for t in trees]))),
        "true_steps": pa.array(np.concatenate([t.true_steps for t in trees]), pa.int32(),
                               mask=np.concatenate([t.true_steps for t in trees]) == NO_STEPS),
    })


def _list_parts(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(offsets from 0, flat values) of an Arrow list column; nulls read as empty lists."""
    arr = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    arr = pc.if_else(pc.is_null(arr), pa.scalar([], arr.type), arr) if arr.null_count else arr
    offsets = arr.offsets.to_numpy().astype(np.int64)
    return offsets - offsets[0], arr.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def _ragged(column: pa.ChunkedArray, dtype: Any) -> Ragged:
    """An Arrow list column as Ragged."""
    offsets, values = _list_parts(column)
    return Ragged(offsets, values.to_numpy(zero_copy_only=False).astype(dtype))


# The node columns `load_trees(numeric_only=True)` reads.
_NUMERIC_NODE_COLUMNS = ("node_id", "parent_id", "depth", "visits", "value_sum", "successes", "failures",
                         "terminal_rewards", "mcts_visits", "mcts_value_sum", "true_value", "true_steps")


def _trees_from_tables(heads: pa.Table, nodes: pa.Table) -> list[Tree]:
    """Trees from `trees` header rows and their `nodes` rows (column `pos` = the header's row,
    sorted by pos, then node id); without the text columns (action, thoughts, observations,
    traj_ids) the trees get empty ones."""
    if not heads.num_rows:  # no tree matched (an unknown id): nothing to index
        return []
    pos = nodes.column("pos").to_numpy()
    bounds = np.searchsorted(pos, np.arange(heads.num_rows + 1))

    def num(name: str, dtype: Any, fill: Any = 0) -> np.ndarray:
        return nodes.column(name).fill_null(fill).to_numpy().astype(dtype)

    parent = num("parent_id", np.int64, -1)
    cols = {k: num(k, d) for k, d in (("depth", np.int64), ("visits", np.int64), ("value_sum", np.float64),
                                      ("successes", np.int64), ("failures", np.int64),
                                      ("mcts_visits", np.int64), ("mcts_value_sum", np.float64))}
    cols["true_value"] = num("true_value", np.float64, np.nan)
    cols["true_steps"] = num("true_steps", np.int64, NO_STEPS)
    ragged = {"terminal_rewards": _ragged(nodes.column("terminal_rewards"), np.float64)}
    n = nodes.num_rows
    if "action" in nodes.column_names:
        ragged.update({k: _ragged(nodes.column(k), object) for k in ("thoughts", "observations")})
        action = nodes.column("action").fill_null("").to_numpy(zero_copy_only=False).astype(object)
        ragged["trajs"], names, root_codes = _through(nodes.column("traj_ids"), bounds)
    else:
        empty = Ragged(np.zeros(n + 1, np.int64), np.empty(0, object))
        ragged.update(thoughts=empty, observations=empty, trajs=Ragged(empty.offsets, np.empty(0, np.int64)))
        action, names, root_codes = np.full(n, "", dtype=object), np.empty(0, object), None
    parts = {k: r.split(bounds) for k, r in ragged.items()}
    b = bounds.tolist()
    trees = []
    for i, h in enumerate(heads.to_pylist()):
        lo, hi = b[i], b[i + 1]
        settings = json.loads(h["settings"] or "{}")
        trees.append(Tree(
            tree_id=h["tree_id"], env=h["env"], task_id=h["task_id"], instruction=h["instruction"] or "",
            initial_observation=h["initial_observation"] or "", merge=h["merge"] or "action",
            settings=settings, parent=parent[lo:hi], action=action[lo:hi],
            **{k: v[lo:hi] for k, v in cols.items()}, **{k: p[i] for k, p in parts.items()},
            traj_ids=names[root_codes[i]] if root_codes is not None else names,
            best_path=[int(x) for x in h["best_path"] or []], mcts_iterations=int(h["mcts_iterations"] or 0),
            mcts_c=float(h["mcts_c"] or 0.0), mcts_rule=(settings.get("mcts") or {}).get("rule"),
            version=int(h["version"]),
        ))
    return trees


def _through(column: pa.ChunkedArray, bounds: np.ndarray) -> tuple[Ragged, np.ndarray, list[np.ndarray]]:
    """The `traj_ids` column of the nodes of trees `bounds[i]..bounds[i + 1] - 1` as the
    trajectories through each node (positions in its tree's list, the root's list), the distinct
    ids, and per tree the codes of its list. Ids are hashed by Arrow; only the distinct ids
    become Python strings."""
    offsets, values = _list_parts(column)
    enc = values.dictionary_encode()
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = enc.dictionary.to_numpy(zero_copy_only=False).astype(object)
    roots = bounds[:-1][np.diff(bounds) > 0]  # the root row of every non-empty tree
    root_len = offsets[roots + 1] - offsets[roots]
    root_vals = np.repeat(offsets[roots] - np.concatenate([[0], np.cumsum(root_len)[:-1]]), root_len) + \
        np.arange(int(root_len.sum()))
    local = np.full(len(names), -1, np.int64)
    local[codes[root_vals]] = root_vals - np.repeat(offsets[roots], root_len)
    off = offsets.tolist()
    root_codes = [codes[off[lo]:off[lo + 1]] if hi > lo else codes[:0]
                  for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist())]
    return Ragged(offsets, local[codes]), names, root_codes


def _owner_alive(pid: Any, host: Any) -> bool:
    """Whether the process `pid` of machine `host` runs. A run of another machine (or one
    recorded before runs kept their process) cannot be checked here: it counts as alive."""
    if pd.isna(pid) or not host or host != socket.gethostname():
        return True
    return pid_running(int(pid))


def _where(**filters: Any) -> tuple[str, list[Any]]:
    """A WHERE clause (and its parameters) for the filters that are not None."""
    parts, params = [], []
    for col, val in filters.items():
        if val is not None:
            parts.append(f"{col} = ?")
            params.append(val)
    return ("WHERE " + " AND ".join(parts) if parts else ""), params
