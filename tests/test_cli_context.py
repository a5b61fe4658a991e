"""`--db` names the store a command works on, as an argument passed down: the environment of the
process is left alone, and without `--db` the environment's default still holds."""

from __future__ import annotations

import json
import os

from core.cli import main
from core.store import Store
from core.trajectory import Step, Trajectory


def test_db_argument_is_passed_down_and_leaves_the_environment_alone(store: Store, tmp_path, capsys):
    other = Store(tmp_path / "other.duckdb")
    other.add_trajectories([Trajectory(env="shop", task_id="7", instruction="buy a lamp",
                                       steps=[Step(action="search[lamp]")], reward=1.0, success=True)])
    other.register_model("lamp-model", str(tmp_path / "lamp"), role="sft")
    default = os.environ["W2STREE_DB"]

    assert main(["--db", str(other.path), "stats"]) == 0
    assert "total: 1 trajectory," in capsys.readouterr().out
    assert main(["--db", str(other.path), "models", "list"]) == 0
    assert "lamp-model" in capsys.readouterr().out
    assert os.environ["W2STREE_DB"] == default

    assert main(["stats"]) == 0  # no --db: the default store (empty)
    assert "the store is empty" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    assert "no models registered" in capsys.readouterr().out
    assert store.counts()["trajectories"] == 0


def test_every_data_verb_works_on_the_db_argument(store: Store, tmp_path, capsys):
    lines = [{"env": "toy", "task_id": "t1", "instruction": "open the box", "reward": reward, "run": run,
              "steps": [{"action": a, "observation": f"after {a}"} for a in actions]}
             for actions, reward, run in ((["a", "b"], 1.0, "r0"), (["a", "c"], 0.0, "r1"))]
    data = tmp_path / "trajs.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    other = tmp_path / "other.duckdb"
    for verb in (["import", "jsonl", str(data)], ["tree"], ["mcts", "--iterations", "4"], ["pairs"],
                 ["export", "pairs", str(tmp_path / "pairs.jsonl")], ["stats"]):
        assert main(["--db", str(other), *verb]) == 0, verb
    capsys.readouterr()
    counts = Store(other).counts()
    assert counts["trajectories"] == 2 and counts["trees"] == 1 and counts["pairs"] > 0
    assert Store(other).trees()["mcts_iterations"].tolist() == [4]
    assert (tmp_path / "pairs.jsonl").read_text().count("\n") == counts["pairs"]
    assert sum(store.counts().values()) == 0  # the default store was never written
