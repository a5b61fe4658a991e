"""The DuckDB store: one file holding tasks, runs, trajectories, trees, pairs, jobs and models.

Every SQL statement of w2stree is a method of `Store`, kept in modules named for their tables:
`core.store_file` (the schema, its migrations, errors, connections and transactions),
`core.store_runs` (tasks, runs, trajectories, results), `core.store_trees` (trees, nodes,
pairs), `core.store_jobs` (jobs, metrics, registered models) and `core.store_summaries` (the
summaries commands and pages show). Bulk writes go through Arrow tables, never row-by-row
inserts. Callers import `Store` (and its errors) from here.
"""

from __future__ import annotations

from pathlib import Path

from core.store_file import MIGRATIONS as MIGRATIONS
from core.store_file import SCHEMA_VERSION as SCHEMA_VERSION
from core.store_file import StaleTreeError as StaleTreeError
from core.store_file import StoreBusyError as StoreBusyError
from core.store_file import StoreError as StoreError
from core.store_file import StoreFile
from core.store_jobs import JobTables
from core.store_runs import RunTables
from core.store_summaries import Summaries
from core.store_trees import TreeTables
from core.tree_data import NODE_FIELDS as NODE_FIELDS  # noqa: F401 -- importers read it here


class Store(RunTables, TreeTables, JobTables, Summaries, StoreFile):
    """A w2stree store backed by one DuckDB file (created and migrated on first use)."""

    def __init__(self, path: str | Path | None = None, timeout: float = 120.0) -> None:
        super().__init__(path, timeout)
        if not self.read_only:
            self.mark_dead_runs()  # runs whose process died read as interrupted
