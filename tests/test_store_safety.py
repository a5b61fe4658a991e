"""Store and output errors are one line, never a traceback and never lost data: `--db` on things
that are not a store, read-only stores, newer schemas, exports onto the store / a folder / an
existing file / a full disk (a closed pipe is a normal end), and tree versions (a stale `mcts` save never
overwrites a tree rebuilt meanwhile, checked with two real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from core.cli import main
from core.store import SCHEMA_VERSION, StaleTreeError, Store, StoreError
from core.trajectory import Step, Trajectory
from core.tree import build_trees

REPO = Path(__file__).resolve().parents[1]


def _traj(actions: list[str], reward: float, task: str = "t1") -> Trajectory:
    return Trajectory(env="toy", task_id=task, instruction="do it", reward=reward,
                      steps=[Step(a, f"after {a}") for a in actions])


def _run(*args: str, stdout=subprocess.PIPE, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("w2stree: error: ")
    return lines[0]


# -- --db on things that are not a store ------------------------------------------------------
def _not_a_store(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.duckdb"
    if kind == "text":
        path.write_text("hello\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "json":
        path.write_text(json.dumps({"a": 1}))
    elif kind == "folder":
        path.mkdir()
    elif kind == "truncated":
        Store(path).add_trajectories([_traj(["a"] * 50, 1.0, str(i)) for i in range(300)])
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    return path


@pytest.mark.parametrize("kind", ["text", "empty", "json", "folder", "truncated"])
def test_db_that_is_not_a_store_is_one_line(tmp_path, capsys, kind):
    path = _not_a_store(tmp_path, kind)
    before = path.read_bytes() if path.is_file() else None
    assert main(["--db", str(path), "stats"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(path) in line
    if before is not None:
        assert path.read_bytes() == before  # nothing written into someone else's file


def test_newer_schema_is_one_line(tmp_path, capsys):
    path = tmp_path / "new.duckdb"
    Store(path)
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    con.close()
    assert main(["--db", str(path), "stats"]) == 2
    assert "newer than this w2stree" in _one_error_line(capsys.readouterr().err)


def _make_read_only(path: Path) -> None:
    """Make `path` unwritable for this process: mode 0444, and for root the immutable flag."""
    path.chmod(0o444)
    if os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("running as root without chattr: cannot make a file read-only")


def test_read_only_store_reads_and_refuses_writes(tmp_path, capsys):
    path = tmp_path / "ro.duckdb"
    Store(path).import_trajectories([_traj(["a", "b"], 1.0)])
    _make_read_only(path)
    try:
        store = Store(path)
        assert store.read_only and store.counts()["trajectories"] == 1
        assert [t.actions for t in store.trajectories()] == [["a", "b"]]
        assert main(["--db", str(path), "stats"]) == 0
        assert "total: 1 trajectory," in capsys.readouterr().out
        assert main(["--db", str(path), "tree"]) == 2
        assert "is read-only" in _one_error_line(capsys.readouterr().err)
        with pytest.raises(StoreError, match="read-only"):
            store.add_trajectories([_traj(["c"], 0.0)])
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        path.chmod(0o644)


# -- export -----------------------------------------------------------------------------------
@pytest.fixture
def filled(store: Store) -> Store:
    store.import_trajectories([_traj(["a", "b"], 1.0), _traj(["a", "c"], 0.0)])
    return store


def test_export_onto_the_store_refuses(filled: Store, capsys):
    before, size = filled.counts(), filled.path.stat().st_size
    for extra in ([], ["--force"]):
        assert main(["--db", str(filled.path), "export", "trajectories", str(filled.path), *extra]) == 2
        assert "is the store itself" in _one_error_line(capsys.readouterr().err)
    assert filled.path.stat().st_size == size and Store(filled.path).counts() == before


def test_export_needs_force_for_an_existing_file_and_writes_whole(filled: Store, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")
    assert main(["export", "trajectories", str(out)]) == 2
    assert "exists; pass --force" in _one_error_line(capsys.readouterr().err)
    assert out.read_text() == "keep me\n"
    assert main(["export", "trajectories", str(out), "--force"]) == 0
    assert len(out.read_text().splitlines()) == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp file left


def test_export_to_a_folder_is_one_line(filled: Store, tmp_path, capsys):
    assert main(["export", "trajectories", str(tmp_path)]) == 2
    assert "is a folder" in _one_error_line(capsys.readouterr().err)


def _read_one_line_and_close(*args: str, env: dict) -> tuple[str, int, str]:
    """Run `w2stree ARGS` into a real pipe, read its first line and close the pipe (as `| head -1`
    does): (that line, exit status, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "core", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), **env})
    line = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    return line, proc.wait(timeout=300), err


def test_a_closed_pipe_is_a_normal_end(store: Store):
    # 3,000 tasks: both outputs are far larger than a pipe's buffer (64 KiB), so the writer
    # certainly meets the closed pipe
    store.import_trajectories([_traj(["a", "b"], float(i % 2), f"task{i:04d}") for i in range(3000)])
    env = {"W2STREE_DB": str(store.path)}
    line, rc, err = _read_one_line_and_close("export", "trajectories", "-", env=env)
    assert json.loads(line)["task_id"] == "task0000"
    assert (rc, err) == (0, "")
    line, rc, err = _read_one_line_and_close("stats", "--all", env=env)
    assert line.startswith("per environment")
    assert (rc, err) == (0, "")


def test_export_to_a_full_disk(filled: Store):
    env = {"W2STREE_DB": str(filled.path)}
    with open("/dev/full", "w") as full:
        res = _run("export", "trajectories", "-", stdout=full, env=env)
    assert res.returncode == 2
    assert "No space left on device" in _one_error_line(res.stderr)


# -- tree versions ----------------------------------------------------------------------------
def test_stale_tree_save_refuses(store: Store):
    store.import_trajectories([_traj(["a"], 1.0)])
    store.save_trees(build_trees(store.trajectories()))
    (old,) = store.load_trees()
    assert old.version == 1
    store.import_trajectories([_traj(["b"], 0.0, "t1")])
    store.save_trees(build_trees(store.trajectories()))  # a rebuild: version 2
    with pytest.raises(StaleTreeError, match="rebuilt by another process"):
        store.save_trees([old])
    (now,) = store.load_trees()
    assert (now.version, now.n_trajectories) == (2, 2)
    store.save_trees([now])  # saving the current version is fine and bumps it
    assert store.load_trees()[0].version == 3


# `w2stree mcts` in its own process, held after it loaded and scored the trees until the test
# says go (the tree is rebuilt by another process meanwhile).
MCTS_PAUSED = """
import sys, time
from pathlib import Path
import core.stages
from core.cli import main
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
real = core.stages.run_mcts_all
def paused(trees, **kw):
    out = real(trees, **kw)
    if not ready.exists():
        ready.write_text("scored")
        while not go.exists():
            time.sleep(0.02)
    return out
core.stages.run_mcts_all = paused  # the stage scores through its own name for it
sys.exit(main(["mcts", "--iterations", "50"]))
"""


@pytest.mark.slow  # three interpreters importing the CLI: ~20 s on 2 busy cores
def test_mcts_never_overwrites_a_tree_rebuilt_meanwhile(store: Store, tmp_path):
    store.import_trajectories([_traj(["a"], 1.0), _traj(["b"], 0.0)])
    assert _run("tree").returncode == 0
    ready, go = tmp_path / "ready", tmp_path / "go"
    mcts = subprocess.Popen([sys.executable, "-c", textwrap.dedent(MCTS_PAUSED), str(ready), str(go)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 300
    while not ready.exists():
        assert mcts.poll() is None and time.monotonic() < deadline, mcts.communicate()
        time.sleep(0.05)
    store.import_trajectories([_traj(["c"], 1.0)])
    rebuilt = _run("tree")  # the other process: rebuilds the tree from 3 trajectories
    assert rebuilt.returncode == 0, rebuilt.stderr
    go.write_text("go")
    out, err = mcts.communicate(timeout=300)
    assert mcts.returncode == 0, err
    assert "rebuilt while MCTS ran; scoring them again" in err
    (g,) = [t.to_networkx() for t in store.load_trees()]
    # the rebuilt tree, scored: not the 2-trajectory tree the mcts process had loaded first
    assert g.graph["n_trajectories"] == 3 and g.number_of_nodes() == 4
    assert g.graph["mcts_iterations"] == 50 and g.graph["version"] == 3
    assert sum(g.nodes[n]["mcts_visits"] for n in g.successors(0)) == 50
