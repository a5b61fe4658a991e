"""The stage layer: one implementation behind the CLI and the pipeline, pairs replaced per
granularity, and registries that reject unknown names with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import stages
from core.cli import main
from core.errors import UserError
from core.formats.jsonl import read_jsonl
from core.pipeline import training_files
from core.scales import Scale
from core.store import Store
from core.work import Reporter

ENV = "toy"


def _traj(task: str, actions: list[str], reward: float, model: str, run: str) -> dict:
    return {"env": ENV, "task_id": task, "instruction": f"solve {task}", "reward": reward, "success": reward == 1.0,
            "steps": [{"thought": f"why {a}", "action": a, "observation": f"after {a}"} for a in actions],
            "model": model, "run": run, "meta": {"initial_observation": f"start of {task}"}}


@pytest.fixture
def data_file(tmp_path) -> Path:
    """Two tasks explored by `weak` (successes and failures that part at branching nodes, the
    continuation longer than one step), each with one expert demonstration."""
    rows = []
    for task in ("t1", "t2"):
        rows += [_traj(task, ["a", "b", "e"], 1.0, "weak", "w0"), _traj(task, ["a", "c", "f"], 0.0, "weak", "w1"),
                 _traj(task, ["a", "c", "g"], 0.3, "weak", "w2"), _traj(task, ["d"], 0.0, "weak", "w3"),
                 _traj(task, ["a", "b", "e"], 1.0, "expert", "x0")]
    path = tmp_path / "trajs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _tree_rows(store: Store) -> list[tuple]:
    """Every stored tree's task, nodes (with data and MCTS statistics) and best path; no ids."""
    out = []
    for g in (t.to_networkx() for t in store.load_trees()):
        nodes = tuple(sorted((n, d["action"], d["visits"], d["value_sum"], d["successes"], d["failures"],
                              d["mcts_visits"], d["mcts_value_sum"], tuple(g.predecessors(n)))
                             for n, d in g.nodes(data=True)))
        out.append((g.graph["task_id"], nodes, tuple(g.graph["best_path"]), g.graph["mcts_iterations"]))
    return sorted(out)


def _pair_rows(store: Store) -> list[tuple]:
    return sorted((p.task_id, p.granularity, json.dumps(p.prompt), json.dumps(p.chosen), json.dumps(p.rejected),
                   p.chosen_value, p.rejected_value) for p in store.pairs())


def test_cli_and_pipeline_store_the_same_trees_and_pairs(tmp_path, data_file, monkeypatch):
    cli_db, pipe_db = tmp_path / "cli.duckdb", tmp_path / "pipe.duckdb"
    monkeypatch.setenv("W2STREE_DB", str(cli_db))
    assert main(["--db", str(cli_db), "import", "jsonl", str(data_file)]) == 0
    assert main(["tree", "--model", "weak"]) == 0
    assert main(["mcts", "--iterations", "50"]) == 0
    assert main(["pairs"]) == 0
    assert main(["pairs", "--granularity", "trajectory"]) == 0  # expert baseline

    assert main(["--db", str(pipe_db), "import", "jsonl", str(data_file)]) == 0
    pipe = Store(pipe_db)
    weak, experts = pipe.trajectories(model="weak"), stages.expert_trajectories(pipe)
    cfg = Scale(name="test", mcts_iterations=50)
    _, counts = training_files(pipe, cfg, weak, experts, seed=0, folder=tmp_path, rep=Reporter(None), save=True)

    cli = Store(cli_db)
    assert counts["tree_pairs"] > 0 and counts["eto_pairs"] > 0
    assert _tree_rows(cli) == _tree_rows(pipe) and len(_tree_rows(cli)) == 2
    assert _pair_rows(cli) == _pair_rows(pipe)
    assert {g for _, g, *_ in _pair_rows(cli)} == {"step", "trajectory"}


def test_pairs_are_replaced_per_granularity(store, data_file, tmp_path):
    store.add_trajectories(read_jsonl(data_file))
    weak = [t for t in store.trajectories() if t.model == "weak"]
    experts = stages.expert_trajectories(store)
    trees = stages.score_trees(stages.grow_trees(weak), stages.MCTSSettings(iterations=20))
    cont = stages.cut_pairs(trees, stages.PairSettings("continuation"))
    assert cont
    stages.save_tree_data(store, trees, {"continuation": cont})
    # the pipeline stores step and trajectory pairs of the same trees: a user's continuation pairs stay
    cfg = Scale(name="test", mcts_iterations=20)
    training_files(store, cfg, weak, experts, seed=0, folder=tmp_path, rep=Reporter(None), save=True)
    by_gran = store.pairs_frame().groupby("granularity").size().to_dict()
    assert by_gran["continuation"] == len(cont) and by_gran["step"] > 0 and by_gran["trajectory"] > 0
    # replacing one granularity with nothing empties exactly that one
    stages.replace_pairs(store, trees, "step", [])
    assert set(store.pairs_frame()["granularity"]) == {"continuation", "trajectory"}
    # the CLI path replaces the same way
    n = stages.cut_pairs_stored(store, store.trees()["tree_id"].tolist(), stages.PairSettings("step"))
    assert store.pairs_frame().groupby("granularity").size().to_dict() == {
        "continuation": len(cont), "step": n, "trajectory": by_gran["trajectory"]}


@pytest.mark.parametrize("settings,match", [
    (stages.TreeSettings(merge="fuzzy"), "unknown merge rule 'fuzzy'; use one of action, observation, semantic"),
    (stages.MCTSSettings(rule="greedy"), "unknown MCTS rule 'greedy'; use one of uct, "),
    (stages.MCTSSettings(iterations=0), "--iterations must be at least 1"),
    (stages.PairSettings(granularity="node"), "unknown pair granularity 'node'; use one of step, continuation, "
                                              "trajectory"),
    (stages.PairSettings(value="q"), "unknown pair value 'q'; use one of data, mcts"),
    (stages.PairSettings(granularity="trajectory", baseline="strong"), "unknown pair baseline 'strong'"),
])
def test_stage_settings_reject_unknown_names_in_one_line(settings, match):
    with pytest.raises(UserError, match=match) as err:
        settings.check()
    assert "\n" not in str(err.value)


def test_policy_registry_rejects_an_unknown_name_in_one_line(store):
    from core.agents.registry import SCRIPTED, make_policy
    from core.agents.scripted import NoisyExpertPolicy

    assert isinstance(make_policy("noisy-expert", "shop", seed=3), NoisyExpertPolicy)
    assert make_policy("random", "shop", seed=3).seed == 3
    with pytest.raises(UserError, match="policy 'no-such-policy' is not one of expert, random, noisy-expert") as err:
        make_policy("no-such-policy", "shop", store=store)
    assert "\n" not in str(err.value) and set(SCRIPTED) == {"expert", "random", "noisy-expert"}


def test_train_cli_rejects_another_methods_data_in_one_line(store, capsys):
    assert main(["train", "mcts", "--model", "anything", "--data", "expert:shop", "--detach"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("w2stree: error: mcts trains on best-paths:ENV (or a file of rows); "
                   "--data expert:shop is another method's data")


def test_task_selection_is_checked(store):
    assert stages.split_tasks("shop", "train", tasks=3) == ["train_0", "train_1", "train_2"]
    with pytest.raises(UserError, match="no split 'valid'"):
        stages.split_tasks("shop", "valid")
    with pytest.raises(UserError, match="not in the 'train' split"):
        stages.split_tasks("shop", "train", task_ids=["nope"])
