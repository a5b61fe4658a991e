"""`--db` names the store a command works on, as an argument passed down: the environment of the
process is left alone, and without `--db` the environment's default still holds."""

from __future__ import annotations

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
    assert "total: 1 trajectories" in capsys.readouterr().out
    assert main(["--db", str(other.path), "models", "list"]) == 0
    assert "lamp-model" in capsys.readouterr().out
    assert os.environ["W2STREE_DB"] == default

    assert main(["stats"]) == 0  # no --db: the default store (empty)
    assert "the store is empty" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    assert "no models registered" in capsys.readouterr().out
    assert store.counts()["trajectories"] == 0
