"""Store methods for what was run: tasks, runs (collect / eval / import, each owned by the
process that runs it), their trajectories and steps, and the experiments' results rows.

Trajectories are written in bulk as Arrow tables, never row by row, and listed in collection
order (`core.store_file.TRAJ_ORDER`). A mixin of `core.store.Store`: use these methods through
Store.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from core.processes import pid_running
from core.store_file import (
    RUN_COLUMNS,
    STEP_COLUMNS,
    TASK_COLUMNS,
    TRAJ_ORDER,
    TRAJECTORY_COLUMNS,
    now_utc,
    where_clause,
)
from core.trajectory import Run, Step, Task, Trajectory


class RunTables:
    """Tasks, runs, trajectories and results (mixed into Store)."""

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
        where, params = where_clause(env=env, split=split)
        return self.query(f"SELECT * FROM tasks {where} ORDER BY env, task_id", params)

    def add_run(self, run: Run, status: str = "running") -> None:
        """Record a run, owned by this process (see `mark_dead_runs`)."""
        with self.transaction() as con:
            con.execute(
                f"INSERT OR REPLACE INTO runs ({RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                [run.run_id, run.kind, run.env, run.policy, run.model,
                 json.dumps(run.settings), status, now_utc(), os.getpid(), socket.gethostname()],
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
                            "WHERE status = 'running' AND run_id IN (SELECT unnest(?))", [now_utc(), dead])
        return len(dead)

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        with self.transaction() as con:
            con.execute(
                "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?",
                [status, now_utc(), run_id],
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
        where, params = where_clause(kind=kind, env=env)
        return self.query(f"SELECT * FROM runs {where} ORDER BY created_at", params)

    # -- trajectories ------------------------------------------------------------------------
    def add_trajectories(self, trajs: Iterable[Trajectory], con: duckdb.DuckDBPyConnection | None = None) -> int:
        """Insert trajectories and their steps in one transaction (Arrow batches)."""
        trajs = list(trajs)
        if not trajs:
            return 0
        now = now_utc()
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
                         json.dumps(run.settings), now_utc(), now_utc()],
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
        where, params = where_clause(env=env, task_id=task_id, source=source, run_id=run_id, model=model)
        return self.query(f"SELECT * FROM trajectories {where} ORDER BY {TRAJ_ORDER}", params)

    def trajectories(self, env: str | None = None, task_id: str | None = None,
                     source: str | None = None, run_id: str | None = None,
                     model: str | None = None, traj_ids: list[str] | None = None,
                     limit: int | None = None) -> list[Trajectory]:
        """Load full trajectories (with steps), in collection order (`TRAJ_ORDER`)."""
        where, params = where_clause(env=env, task_id=task_id, source=source, run_id=run_id, model=model)
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

    # -- results -----------------------------------------------------------------------------
    def add_results(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        cols = ("experiment_id", "env", "method", "model", "seed", "trajs_per_task",
                "avg_reward", "success_rate", "n_examples", "n_episodes", "run_id")
        df = pd.DataFrame([{c: r.get(c) for c in cols} for r in rows])
        df["created_at"] = now_utc()
        names = ", ".join(df.columns)
        with self.transaction() as con:
            con.register("new_results", df)
            con.execute(f"INSERT INTO results ({names}) SELECT {names} FROM new_results")

    def results(self, experiment_id: str | None = None) -> pd.DataFrame:
        where, params = where_clause(experiment_id=experiment_id)
        return self.query(f"SELECT * FROM results {where} ORDER BY created_at", params)


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


def _owner_alive(pid: Any, host: Any) -> bool:
    """Whether the process `pid` of machine `host` runs. A run of another machine (or one
    recorded before runs kept their process) cannot be checked here: it counts as alive."""
    if pd.isna(pid) or not host or host != socket.gethostname():
        return True
    return pid_running(int(pid))
