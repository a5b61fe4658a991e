"""Store methods for training jobs, their metrics and the models they register.

A job process never opens the store: its folder is the record, and `core.jobs.sync_job`
copies it into the `jobs` and `metrics` tables with `record_job`. The Train page syncs every two
seconds, so a sync of a folder that did not change writes nothing (a write bumps the change
counter and so invalidates every cached reader of the dashboard): the job row keeps the state of
the folder's files at its last sync (`folder_state`).

A mixin of `core.store.Store`: use these methods through Store.
"""

from __future__ import annotations

import json
import random
import time
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd
import pyarrow as pa

from core.store_file import StoreBusyError, now_utc

if TYPE_CHECKING:
    from core.store import Store

JOB_COLUMNS = ("job_id", "kind", "status", "config", "pid", "step", "max_steps", "job_dir", "output_path",
               "error", "created_at", "started_at", "updated_at", "finished_at", "folder_state")
MODEL_COLUMNS = ("name", "path", "role", "base", "params", "job_id", "data", "lineage", "created_at")
ACTIVE_JOB = ("queued", "running")  # statuses of a job that has not ended


def _insert(table: str, columns: tuple[str, ...], replace: bool = False) -> str:
    """An INSERT of one row naming its columns (OR REPLACE: a row of the same key is replaced)."""
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


class JobTables:
    """Jobs, metrics and models (mixed into Store)."""

    # -- jobs --------------------------------------------------------------------------------
    def job_folder_state(self: Store, job_id: str) -> str | None:
        """The folder state recorded by the last sync of `job_id` (None: never synced)."""
        df = self.query("SELECT folder_state FROM jobs WHERE job_id = ?", [job_id])
        return None if df.empty else df.iloc[0, 0]

    def record_job(self: Store, job: dict[str, Any], metrics: pd.DataFrame,
                   model: dict[str, Any] | None = None, attempts: int = 20) -> bool:
        """Write a job row (`JOB_COLUMNS`; `folder_state` says what of its folder it reflects), the
        rows of `metrics` [step, name, value, ts] newer than the stored ones, and once `model`
        (register_model's arguments) unless the job registered one already: all in one transaction.

        Two syncers of one job (two dashboard tabs, a CLI beside the dashboard) never duplicate a
        metric: the newest stored metric is read inside the transaction, after the job row is
        written, and DuckDB lets only one of two transactions that write one row commit. The other
        is retried, and writes nothing if the row then already holds its folder state. Returns
        whether anything was written."""
        job_id = job["job_id"]
        for attempt in range(attempts):
            if attempt and self.job_folder_state(job_id) == job["folder_state"]:
                return False
            try:
                with self.transaction() as con:
                    con.execute(_insert("jobs", JOB_COLUMNS, replace=True), [job.get(c) for c in JOB_COLUMNS])
                    last = con.execute("SELECT max(ts) FROM metrics WHERE job_id = ?", [job_id]).fetchall()[0][0]
                    new = metrics if last is None else metrics[metrics["ts"] > last]
                    if not new.empty:
                        con.register("new_metrics", pa.table({
                            "job_id": [job_id] * len(new), "step": pa.array(new["step"], pa.int32()),
                            "name": new["name"].tolist(), "value": pa.array(new["value"], pa.float64()),
                            "ts": pa.array(new["ts"], pa.float64())}))
                        con.execute("INSERT INTO metrics (job_id, step, name, value, ts) "
                                    "SELECT job_id, step, name, value, ts FROM new_metrics")
                    if model is not None and not con.execute(
                            "SELECT count(*) FROM models WHERE job_id = ?", [job_id]).fetchall()[0][0]:
                        _insert_model(con, **model)
                return True
            except (duckdb.TransactionException, duckdb.ConstraintException):  # another syncer won
                time.sleep(0.01 * (1 + random.random()) * (attempt + 1))
        raise StoreBusyError(f"job {job_id}: {attempts} syncs into store {self.path} in a row collided with "
                             "other processes syncing it; try again")

    def active_job_ids(self: Store) -> list[str]:
        """Jobs whose stored status is queued or running."""
        return self.query("SELECT job_id FROM jobs WHERE status IN (SELECT unnest(?)) ORDER BY created_at",
                          [list(ACTIVE_JOB)])["job_id"].tolist()

    def job_row(self: Store, job_id: str) -> dict[str, Any] | None:
        """The stored row of job `job_id` (column -> value), or None."""
        df = self.query("SELECT * FROM jobs WHERE job_id = ?", [job_id])
        return None if df.empty else {k: None if pd.isna(v) else v for k, v in df.iloc[0].items()}

    def mark_job_failed(self: Store, job_id: str, error: str) -> None:
        """Mark a stored job that still says queued or running failed with `error` (its folder
        is gone, so no sync will ever end it)."""
        with self.transaction() as con:
            con.execute("UPDATE jobs SET status = 'failed', error = ?, finished_at = ? "
                        "WHERE job_id = ? AND status IN (SELECT unnest(?))",
                        [error, now_utc(), job_id, list(ACTIVE_JOB)])

    def jobs(self: Store) -> pd.DataFrame:
        """All job rows, newest first."""
        return self.query("SELECT * FROM jobs ORDER BY created_at DESC")

    def job_metrics(self: Store, job_id: str) -> pd.DataFrame:
        """The stored metrics of a job: [step, name, value, ts]."""
        return self.query("SELECT step, name, value, ts FROM metrics WHERE job_id = ? ORDER BY ts, step, name",
                          [job_id])

    # -- models ------------------------------------------------------------------------------
    def register_model(self: Store, name: str, path: str, role: str = "", base: str = "",
                       params: int = 0, job_id: str = "", data: str = "",
                       lineage: dict[str, Any] | None = None) -> None:
        """Record a model folder under `name` (replacing a model of that name)."""
        with self.transaction() as con:
            _insert_model(con, name, path, role, base, params, job_id, data, lineage)

    def models(self: Store) -> pd.DataFrame:
        """All registered models, oldest first."""
        return self.query("SELECT * FROM models ORDER BY created_at")

    def find_model(self: Store, name_or_path: str) -> tuple[str, str] | None:
        """(name, path) of the registered model named `name_or_path`, else of one whose path it
        is; None when none is."""
        df = self.query("SELECT name, path FROM models WHERE name = ? OR path = ? ORDER BY name = ? DESC, name",
                        [name_or_path, name_or_path, name_or_path])
        return (str(df.iloc[0]["name"]), str(df.iloc[0]["path"])) if len(df) else None


def _insert_model(con: duckdb.DuckDBPyConnection, name: str, path: str, role: str = "", base: str = "",
                  params: int = 0, job_id: str = "", data: str = "",
                  lineage: dict[str, Any] | None = None) -> None:
    con.execute(_insert("models", MODEL_COLUMNS, replace=True),
                [name, str(path), role, base, int(params), job_id, data, json.dumps(lineage or {}), now_utc()])
