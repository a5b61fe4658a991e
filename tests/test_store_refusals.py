"""`--db` on what is not a w2stree store is one line and changes nothing (issue 21, items 3, 6, 7,
8): another program's DuckDB file is refused, never migrated; a FIFO or /dev/fd pipe does not
hang; JSON, CSV and Parquet files are not opened as views; a store missing a column names it; a
write that fails at commit on a full disk is the store's one-line error and the store stays
readable."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import duckdb
import pytest

from core.store import Store, StoreError
from core.trajectory import Step, Trajectory

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


def _one_line(res: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_another_programs_duckdb_file_is_refused_untouched(tmp_path) -> None:
    path = tmp_path / "theirs.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE accounts (id INTEGER, owner VARCHAR)")
    con.execute("CREATE TABLE runs (id INTEGER, lap_time DOUBLE)")  # a table with a w2stree name
    con.execute("INSERT INTO runs VALUES (1, 61.5)")
    con.close()
    before = _digest(path)
    for verb in (["stats"], ["tree"], ["export", "trajectories", "-"]):
        line = _one_line(_cli("--db", str(path), *verb))
        assert str(path) in line and "not a w2stree store" in line, line
    assert _digest(path) == before
    con = duckdb.connect(str(path), read_only=True)
    assert sorted(r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()) == \
        ["accounts", "runs"]
    con.close()


@pytest.mark.parametrize("suffix", [".json", ".csv", ".parquet"])
def test_data_files_are_not_stores(tmp_path, suffix) -> None:
    path = tmp_path / f"data{suffix}"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT 1 AS a, 'x' AS b) TO '{path}'" + (" (FORMAT json)" if suffix == ".json" else ""))
    con.close()
    before = _digest(path)
    line = _one_line(_cli("--db", str(path), "stats"))
    assert str(path) in line and "not a w2stree store" in line, line
    assert _digest(path) == before


def test_a_fifo_or_a_pipe_is_one_line_without_hanging(tmp_path) -> None:
    fifo = tmp_path / "store.fifo"
    os.mkfifo(fifo)
    line = _one_line(_cli("--db", str(fifo), "stats", timeout=60))
    assert "not a regular file" in line
    store = Store(tmp_path / "real.duckdb")
    res = subprocess.run(["bash", "-c", f'"{sys.executable}" -m core --db <(cat "{store.path}") stats'],
                         cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "not a regular file" in _one_line(res)


def test_a_store_missing_a_column_names_it(tmp_path) -> None:
    path = tmp_path / "damaged.duckdb"
    Store(path)
    con = duckdb.connect(str(path))
    con.execute("ALTER TABLE trajectories DROP COLUMN model")
    con.close()
    for verb in (["stats"], ["export", "trajectories", "-"]):
        line = _one_line(_cli("--db", str(path), *verb))
        assert "trajectories" in line and "model" in line and "damaged" in line, line


def test_a_full_disk_at_commit_is_one_line_and_the_store_stays_readable(tmp_path) -> None:
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs (a disk that fills up) needs root")
    disk = Path("/tmp") / f"w2stree-full-{uuid.uuid4().hex[:8]}"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(disk)], capture_output=True).returncode:
        disk.rmdir()
        pytest.skip("cannot mount a tmpfs here")
    try:
        store = Store(disk / "s.duckdb")
        store.add_trajectories([Trajectory(env="toy", task_id="t0", instruction="x", steps=[Step("a", "o")],
                                           reward=1.0)])
        big = [Trajectory(env="toy", task_id=f"t{i}", instruction="x", steps=[Step("a", os.urandom(500_000).hex())],
                          reward=1.0) for i in range(1, 4)]
        with pytest.raises(StoreError, match=r"writing store .* failed, nothing of this write was kept.*space") as info:
            for t in big:
                store.add_trajectories([t])
        assert "\n" not in str(info.value)
        assert store.counts()["trajectories"] >= 1  # still readable
        assert [t.task_id for t in store.trajectories()][:1] == ["t0"]
    finally:
        subprocess.run(["umount", str(disk)], check=False)
        disk.rmdir()


def test_ctrl_c_during_a_query_is_the_users_interrupt(tmp_path) -> None:
    """DuckDB reports a Ctrl-C inside a query as RuntimeError("Query interrupted"): the store hands
    it on as KeyboardInterrupt, so the CLI prints its one interrupt line, not a traceback."""
    import os
    import signal
    import threading
    import time

    store = Store(tmp_path / "s.duckdb")

    def ctrl_c() -> None:
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    # Python's own Ctrl-C handling, whatever an earlier test or the test runner left set
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        threading.Thread(target=ctrl_c).start()
        with pytest.raises(KeyboardInterrupt):
            store.query("SELECT count(*) FROM range(100000000000) a")  # minutes of work: the signal lands inside
    finally:
        signal.signal(signal.SIGINT, old)
    assert store.schema_version() > 0  # the file is intact
