"""Two real processes share one store: no lock error reaches either, no write is lost; a failed
write leaves every table as it was."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from core.store import Store
from core.trajectory import Run, Step, Trajectory

REPO = Path(__file__).resolve().parents[1]

# Holds the store in one long transaction first (the other process must wait for it), then
# keeps writing metric rows in short transactions while the other process writes too. With a
# fifth argument it first waits for the writer's "ready" file, so the writer is surely running
# (interpreter start-up included) when the long transaction begins.
HOLDER = """
import sys, time
from pathlib import Path
from core.store import Store
db, flag, hold, n = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
store = Store(db)
ready = flag.with_name("ready")
while len(sys.argv) > 5 and not ready.exists():  # wait until the other process is started
    time.sleep(0.005)
with store.transaction() as con:
    flag.write_text("holding")
    for i in range(10):
        con.execute("INSERT INTO metrics VALUES ('holder', ?, 'long', 1.0, 0)", [i])
        time.sleep(hold / 10)
for i in range(n):
    with store.transaction() as con:
        con.execute("INSERT INTO metrics VALUES ('holder', ?, 'short', 1.0, 0)", [i])
        time.sleep(0.01)
"""

# Waits until the holder holds the store, then writes trajectories through Store; prints how long
# its first write waited.
WRITER = """
import sys, time
from pathlib import Path
from core.store import Store
from core.trajectory import Step, Trajectory
db, flag, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
flag.with_name("ready").write_text("ready")
while not flag.exists():
    time.sleep(0.005)
t0 = time.monotonic()
store = Store(db)
for i in range(n):
    store.add_trajectories([Trajectory(env="toy", task_id=str(i), instruction="x", reward=1.0,
                                       steps=[Step("a", "o"), Step("b", "p")])])
    if i == 0:
        print(f"first_write_waited {time.monotonic() - t0:.3f}")
"""


def _spawn(code: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # two fresh interpreters importing duckdb/pandas: ~10 s on 2 busy cores
def test_two_processes_write_concurrently(tmp_path):
    db, flag = tmp_path / "shared.duckdb", tmp_path / "holding"
    Store(db)  # created and migrated before the race
    hold, n_holder, n_writer = 1.0, 10, 10
    holder = _spawn(HOLDER, db, flag, hold, n_holder, "wait-for-ready")
    writer = _spawn(WRITER, db, flag, n_writer)
    out_w, err_w = writer.communicate(timeout=120)
    out_h, err_h = holder.communicate(timeout=120)
    assert holder.returncode == 0, err_h
    assert writer.returncode == 0, err_w
    assert "lock" not in (err_h + err_w).lower()
    # the writer really met the lock: its first write waited for the holder's long transaction
    waited = float(out_w.split()[1])
    assert waited > hold / 2, f"writer did not wait ({waited:.3f}s): no contention was tested"
    store = Store(db)
    c = store.counts()
    assert c["trajectories"] == n_writer and c["steps"] == 2 * n_writer
    assert c["metrics"] == 10 + n_holder
    assert store.query("SELECT count(DISTINCT task_id) AS n FROM trajectories")["n"][0] == n_writer
    assert store.changes() == 1 + n_holder + n_writer


@pytest.mark.slow  # a second interpreter: ~5 s on busy cores
def test_reader_waits_for_writer_then_sees_its_data(tmp_path):
    """A read while another process holds the store waits instead of failing."""
    db, flag = tmp_path / "r.duckdb", tmp_path / "holding"
    Store(db)
    holder = _spawn(HOLDER, db, flag, 1.0, 0)
    while not flag.exists():
        time.sleep(0.005)
    assert Store(db).counts()["metrics"] == 10  # waited for the commit, saw all of it
    holder.communicate(timeout=60)
    assert holder.returncode == 0


def test_failed_import_transaction_leaves_store_unchanged(store: Store):
    """A write that fails inside the transaction (duplicate id after deletes, run and task rows were
    already executed) is rolled back completely."""
    t = Trajectory(env="toy", task_id="1", instruction="x", reward=1.0, steps=[Step("a", "o")])
    store.import_trajectories([t], [Run("import:a", "import", "toy", "import")])
    before, changes = store.counts(), store.changes()
    dup = [Trajectory(env="toy", task_id="2", instruction="y", reward=0.0, steps=[Step("b")], traj_id="d"),
           Trajectory(env="toy", task_id="2", instruction="y", reward=0.0, steps=[Step("c")], traj_id="d")]
    with pytest.raises(Exception, match="(?i)constraint|duplicate"):
        store.import_trajectories([t, *dup], [Run("import:b", "import", "toy", "import")])
    assert store.counts() == before and store.changes() == changes
    assert store.trajectories()[0].steps == [Step("a", "o")]
