"""Import never changes a run it did not create, and re-importing an export adds nothing (issue
21, item 2): the export-then-import round trip into the same store is idempotent."""

from __future__ import annotations

import json

from core.agents.scripted import ExpertPolicy
from core.cli import main
from core.collect import collect
from core.store import Store


def _snapshot(store: Store) -> tuple:
    runs = store.runs().drop(columns=["pid", "host"]).to_dict("records")
    trajs = store.trajectory_index().to_dict("records")
    return store.counts(), runs, trajs


def _collected(store: Store) -> None:
    collect(store, "shop", ExpertPolicy("shop"), ["train_0", "train_1", "train_2"], run_id="run-c",
            progress=False)


def test_export_then_import_into_the_same_store_adds_nothing(store, tmp_path, capsys) -> None:
    _collected(store)
    before = _snapshot(store)
    out = tmp_path / "trajs.jsonl"
    assert main(["export", "trajectories", str(out)]) == 0
    for _ in range(2):
        capsys.readouterr()
        assert main(["import", "jsonl", str(out)]) == 0
        assert "imported 0 trajectories from 1 file; 3 already stored" in capsys.readouterr().out
        assert _snapshot(store) == before
    # into another store they all arrive, once
    other = Store(tmp_path / "other.duckdb")
    assert main(["--db", str(other.path), "import", "jsonl", str(out)]) == 0
    assert main(["--db", str(other.path), "import", "jsonl", str(out)]) == 0
    assert other.counts()["trajectories"] == 3


def test_a_record_naming_a_collected_run_leaves_that_run_alone(store, tmp_path, capsys) -> None:
    _collected(store)
    run_before = store.run_record("run-c")
    new = {"env": "shop", "task_id": "train_5", "instruction": "buy a hat", "reward": 0.5,
           "steps": [{"action": "search[hat]", "observation": "results"}], "model": "other-model",
           "run": "run-c"}
    path = tmp_path / "foreign.jsonl"
    path.write_text(json.dumps(new) + "\n")
    assert main(["import", "jsonl", str(path)]) == 0
    assert "imported 1 trajectory" in capsys.readouterr().out
    after = store.run_record("run-c")
    assert {k: after[k] for k in ("kind", "env", "policy", "model", "settings", "status", "created_at")} == \
        {k: run_before[k] for k in ("kind", "env", "policy", "model", "settings", "status", "created_at")}
    assert len(store.trajectories(run_id="run-c")) == 3  # the collected run did not grow
    [imported] = store.trajectories(model="other-model")
    assert imported.run_id == "import:foreign.jsonl" and imported.meta["run"] == "run-c"
    assert store.run_record("import:foreign.jsonl")["kind"] == "import"


def test_a_file_name_with_a_line_break_stays_one_line(store, tmp_path, capsys) -> None:
    bad = tmp_path / "two\nlines.jsonl"
    bad.write_text('{"env": "shop"}\n')
    assert main(["import", "jsonl", str(bad)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "two\\nlines.jsonl" in err
    assert main(["import", "jsonl", str(tmp_path / "gone\nfile.jsonl")]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    folder = tmp_path / "dir\nname"
    folder.mkdir()
    assert main(["--db", str(folder), "stats"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "dir\\nname" in err


def _record(i: int, size: int) -> dict:
    return {"env": "shop", "task_id": f"train_{i}", "instruction": "buy", "reward": 1.0,
            "steps": [{"action": "search[x]", "observation": "o" * size}]}


def test_jsonl_is_read_line_by_line(tmp_path) -> None:
    """Peak memory of reading a file stays near what its trajectories hold: the file is not held
    whole (as bytes, text and a list of lines) besides them."""
    import tracemalloc

    from core.formats.jsonl import read_jsonl

    path = tmp_path / "big.jsonl"
    with open(path, "w") as fh:
        for i in range(400):
            fh.write(json.dumps(_record(i, 50_000)) + "\n")
    size = path.stat().st_size
    tracemalloc.start()
    trajs = read_jsonl(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(trajs) == 400 and trajs[-1].steps[0].observation == "o" * 50_000
    assert peak < 1.5 * size, (peak, size)


def test_a_folder_tree_deeper_than_the_recursion_limit_imports(store, tmp_path) -> None:
    import sys

    from core.formats.eto import explore_files

    deep = folder = tmp_path / "root"
    deep.mkdir()
    for _ in range(sys.getrecursionlimit() + 50):  # level by level: Path.mkdir(parents=True) recurses
        folder = folder / "d"
        folder.mkdir()
    (folder / "t1.json").write_text("{}")
    try:
        assert explore_files(deep) == [folder / "t1.json"]
        assert main(["import", "eto-explore", str(deep)]) == 1  # the one file is not a trajectory: one line
    finally:  # level by level: pytest's own clean-up of old temporary folders recurses
        (folder / "t1.json").unlink()
        while folder != deep:
            folder.rmdir()
            folder = folder.parent
