"""The data CLI end to end through `core.cli.main`: import → tree → mcts → pairs → export → stats,
on a JSONL file written here, with hand-computed tree and MCTS statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.agents.prompt import env_prefix
from core.cli import main
from core.store import Store

ENV = "toy"  # unregistered: the export prefix is the default role prompt and "OK"


def _line(actions: list[str], reward: float, run: str) -> str:
    steps = [{"thought": f"why {a}", "action": a, "observation": f"after {a}"} for a in actions]
    return json.dumps({"env": ENV, "task_id": "t1", "instruction": "open the box", "reward": reward,
                       "steps": steps, "model": "weak", "run": run,
                       "meta": {"initial_observation": "A box."}})


@pytest.fixture
def data_file(tmp_path) -> Path:
    """Tree: 0 -> 1 "a" -> {2 "b" (reward 1), 3 "c" (0)}; 0 -> 4 "d" (0.5)."""
    path = tmp_path / "trajs.jsonl"
    path.write_text("\n".join([_line(["a", "b"], 1.0, "r0"), _line(["a", "c"], 0.0, "r1"),
                               _line(["d"], 0.5, "r2")]) + "\n")
    return path


def test_pipeline_end_to_end(store: Store, data_file: Path, tmp_path, capsys):
    assert main(["--db", str(store.path), "import", "jsonl", str(data_file)]) == 0
    assert "imported 3 trajectories from 1 file" in capsys.readouterr().out
    assert main(["tree"]) == 0
    assert "built 1 tree (5 nodes) from 3 trajectories" in capsys.readouterr().out
    assert main(["mcts", "--iterations", "4"]) == 0
    assert main(["pairs"]) == 0
    assert "stored 2 step pairs" in capsys.readouterr().out
    assert main(["pairs", "--granularity", "trajectory", "--baseline", "weak"]) == 0
    assert main(["pairs"]) == 0  # re-running replaces that granularity's pairs
    assert store.pairs_frame().groupby("granularity").size().to_dict() == {"step": 2, "trajectory": 2}

    out = tmp_path / "tree.json"
    assert main(["export", "tree", str(out), "--env", ENV]) == 0
    tree = json.loads(out.read_text())
    assert (tree["env"], tree["task_id"]) == (ENV, "t1")
    rows = {n["id"]: n for n in tree["nodes"]}
    # data statistics, by hand
    stats = {i: (rows[i]["parent"], rows[i]["action"], rows[i]["visits"], rows[i]["value_sum"],
                 rows[i]["successes"], rows[i]["failures"]) for i in rows}
    assert stats == {0: (None, "", 3, 1.5, 1, 2), 1: (0, "a", 2, 1.0, 1, 1), 2: (1, "b", 1, 1.0, 1, 0),
                     3: (1, "c", 1, 0.0, 0, 1), 4: (0, "d", 1, 0.5, 0, 1)}
    # 4 UCT iterations, c = 1.41, by hand: 0-1-2 (leaf value 1), 0-4 (0.5; unvisited first),
    # 0-1-3 (UCB 2.17 vs 1.67; value 0), 0-4 (UCB 1.55 vs 1.98; value 0.5). Root not backed up.
    mcts = {i: (rows[i]["mcts_visits"], rows[i]["mcts_value_sum"]) for i in rows}
    assert mcts == {0: (0, 0.0), 1: (2, 1.0), 2: (1, 1.0), 3: (1, 0.0), 4: (2, 1.0)}
    # Q(1) = Q(4) = 0.5: tie to the earlier child 1, then 2 (Q 1.0) over 3 (Q 0.0)
    assert tree["best_path"] == [0, 1, 2]

    best = tmp_path / "best.jsonl"
    assert main(["export", "best-paths", str(best)]) == 0
    (row,) = [json.loads(x) for x in best.read_text().splitlines()]
    prefix = env_prefix(ENV)
    assert row["messages"] == prefix + [
        {"role": "user", "content": "open the box\nObservation: A box."},
        {"role": "assistant", "content": "Thought: why a\nAction: a"},
        {"role": "user", "content": "Observation: after a"},
        {"role": "assistant", "content": "Thought: why b\nAction: b"},
    ]

    pairs_path = tmp_path / "pairs.json"
    assert main(["export", "pairs", str(pairs_path), "--format", "eto", "--granularity", "step"]) == 0
    eto = json.loads(pairs_path.read_text())
    assert [(p["chosen"][0]["value"], p["rejected"][0]["value"]) for p in eto] == [
        ("Thought: why a\nAction: a", "Thought: why d\nAction: d"),
        ("Thought: why b\nAction: b", "Thought: why c\nAction: c")]
    assert eto[0]["prompt"][: len(prefix)] == [{"from": "human", "value": prefix[0]["content"]},
                                               {"from": "gpt", "value": "OK"}]
    trl = tmp_path / "pairs.jsonl"
    assert main(["export", "pairs", str(trl), "--granularity", "trajectory"]) == 0
    rows_trl = [json.loads(x) for x in trl.read_text().splitlines()]
    assert len(rows_trl) == 2 and all(r["prompt"][: len(prefix)] == prefix for r in rows_trl)

    trajs = tmp_path / "back.jsonl"
    assert main(["export", "trajectories", str(trajs)]) == 0
    back = [json.loads(x) for x in trajs.read_text().splitlines()]
    assert [[s["action"] for s in r["steps"]] for r in back] == [["a", "b"], ["a", "c"], ["d"]]

    capsys.readouterr()
    assert main(["stats", "--all"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    at = lines.index("per task (without evaluation episodes)")
    assert lines[at + 1].split() == ["env", "task", "trajectories", "success_rate", "mean_reward", "nodes",
                                     "branching", "pairs"]
    assert lines[at + 2].split() == [ENV, "t1", "3", "0.33", "0.50", "5", "2", "4"]
    assert "total: 3 trajectories, 1 tree, 5 nodes, 4 pairs" in out


def test_stats_is_compact_and_keeps_evaluation_apart_per_model(store: Store, data_file: Path, capsys):
    """Evaluation episodes (two models on a test task) stay out of the totals and the per-task
    rates, and each model has its own row; the per-task table only with a filter or --all."""
    from core.trajectory import Step, Trajectory

    assert main(["import", "jsonl", str(data_file)]) == 0
    store.add_trajectories([
        Trajectory(ENV, "test1", "do", [Step("a", "o")], reward=r, source="eval", model=m)
        for m, r in (("sft", 1.0), ("sft", 0.0), ("sft", 0.0), ("dpo", 1.0), ("dpo", 0.5))])
    capsys.readouterr()

    def rows(*args: str) -> tuple[list[list[str]], str]:
        assert main(["stats", *args]) == 0
        out = capsys.readouterr().out
        return [ln.split() for ln in out.splitlines()], out

    lines, out = rows()
    assert [ENV, "evaluation", "dpo", "2", "0.50", "0.75", "1.0"] in lines
    assert [ENV, "evaluation", "sft", "3", "0.33", "0.33", "1.0"] in lines
    assert [ENV, "exploration", "3", "0.33", "0.50", "1.7"] in lines  # no model column text
    assert "per task (" not in out and not any(ln[:2] == [ENV, "t1"] for ln in lines)
    assert "total: 3 trajectories, 0 trees, 0 nodes, 0 pairs; 5 evaluation episodes apart" in out
    lines, out = rows("--env", ENV)
    assert [ENV, "t1", "3", "0.33", "0.50", "0", "0", "0"] in lines
    assert not any(ln[:2] == [ENV, "test1"] for ln in lines)  # evaluation only: no per-task row
    lines, out = rows("--task", "test1")
    assert "per environment" not in out and "no trajectories, trees or pairs" in out
    assert [ENV, "evaluation", "sft", "3", "0.33", "0.33", "1.0"] in lines
    assert "total: 0 trajectories, 0 trees, 0 nodes, 0 pairs; 5 evaluation episodes apart" in out
    assert main(["stats", "--env", "shop?n=1&m=2"]) == 2
    assert capsys.readouterr().err == (f"w2stree: error: no environment 'shop?n=1&m=2' in the store (it "
                                       f"holds: {ENV})\n")
    assert main(["stats", "--task", "zz"]) == 2
    assert "nothing stored for task 'zz'; `w2stree stats --all` lists the tasks" in capsys.readouterr().err


def test_clear_errors_when_nothing_matches(store: Store, data_file: Path, tmp_path, capsys):
    assert main(["stats"]) == 0
    assert "the store is empty" in capsys.readouterr().out
    assert main(["tree"]) == 2
    assert "no trajectories; run `w2stree import`" in capsys.readouterr().err
    main(["import", "jsonl", str(data_file)])
    assert main(["mcts", "--env", "nope"]) == 2
    assert "w2stree: error: no trees for env 'nope'; run `w2stree tree` first" in capsys.readouterr().err
    assert main(["tree", "--task", "zz"]) == 2
    assert "no trajectories for task 'zz'" in capsys.readouterr().err
    main(["tree"])
    assert main(["export", "best-paths", str(tmp_path / "b.jsonl")]) == 2
    assert "has no best path; run `w2stree mcts` first" in capsys.readouterr().err
    assert main(["pairs", "--value", "mcts"]) == 2
    assert "no MCTS statistics; run `w2stree mcts` first" in capsys.readouterr().err
    assert main(["export", "pairs", str(tmp_path / "p.jsonl")]) == 2
    assert "no pairs; run `w2stree pairs` first" in capsys.readouterr().err
    assert main(["export", "tree", str(tmp_path / "t.jsonl"), "--format", "trl"]) == 2
    assert "export tree has no --format trl; use one of json" in capsys.readouterr().err
    assert main(["import", "eto-sft", str(data_file), "--env", "sciworld"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (f"w2stree: skipped {data_file}: line 2: not valid JSON (Extra data at column 1); one JSON "
                           "value per line is JSONL: use `w2stree import jsonl`")


def test_import_reports_skipped_files_and_keeps_good_ones(store: Store, data_file: Path, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_line(["a"], 1.0, "x") + "\n" + _line(["a"], 1.0, "x").replace('"action"', '"act"') + "\n")
    assert main(["import", "jsonl", str(bad), str(data_file)]) == 1
    cap = capsys.readouterr()
    assert cap.err.strip() == (f"w2stree: skipped {bad}: line 2: field 'steps[0].act': unknown field "
                               "(allowed: action, observation, reward, score, thought)")
    assert cap.out.strip() == "imported 3 trajectories from 1 file; skipped 1 file with errors"
    assert store.counts()["trajectories"] == 3


def test_several_trees_export_as_a_list(store: Store, tmp_path, capsys):
    path = tmp_path / "two.jsonl"
    path.write_text(_line(["a"], 1.0, "r") + "\n" + _line(["b"], 0.0, "r").replace('"t1"', '"t2"') + "\n")
    main(["import", "jsonl", str(path)])
    main(["tree"])
    out = tmp_path / "trees.json"
    assert main(["export", "tree", str(out)]) == 0
    trees = json.loads(out.read_text())
    assert [t["task_id"] for t in trees] == ["t1", "t2"] and trees[0]["best_path"] == []
    capsys.readouterr()
    assert main(["export", "tree", "-", "--task", "t2"]) == 0  # "-": stdout
    assert json.loads(capsys.readouterr().out)["nodes"][1]["action"] == "b"


def test_export_continuation_pairs_keeps_every_turn_of_each_side(store: Store, tmp_path, capsys):
    """`export pairs --format trl --granularity continuation`: each side is TRL's conversational
    messages with every assistant turn of that side and the observations between them; read back
    as training data under a one-decision prompt, each side keeps all its decisions."""
    from core.agents.prompt import DECISION_COLUMNS, decision_rows
    from core.train.data import build_rows

    data = tmp_path / "long.jsonl"
    data.write_text(_line(["a", "b", "e"], 1.0, "r0") + "\n" + _line(["a", "c", "f", "g"], 0.0, "r1") + "\n")
    assert main(["--db", str(store.path), "import", "jsonl", str(data)]) == 0
    assert main(["tree"]) == 0 and main(["pairs", "--granularity", "continuation"]) == 0
    out = tmp_path / "cont.jsonl"
    assert main(["export", "pairs", str(out), "--format", "trl", "--granularity", "continuation"]) == 0
    (row,) = [json.loads(x) for x in out.read_text().splitlines()]

    def turns(actions: list[str]) -> list[dict[str, str]]:
        out = []
        for a in actions:
            out += [{"role": "assistant", "content": f"Thought: why {a}\nAction: {a}"},
                    {"role": "user", "content": f"Observation: after {a}"}]
        return out[:-1]  # no observation after the last turn

    assert row["prompt"] == env_prefix(ENV) + [{"role": "user", "content": "open the box\nObservation: A box."},
                                               *turns(["a"]), {"role": "user", "content": "Observation: after a"}]
    assert row["chosen"] == turns(["b", "e"]) and row["rejected"] == turns(["c", "f", "g"])
    (back,) = decision_rows(build_rows(str(out)), 1)
    assert [[d["prompt"][0]["content"].splitlines()[1] for d in back[c]] for c in DECISION_COLUMNS] == [
        ["Previous actions: a", "Previous actions: b"], ["Previous actions: a", "Previous actions: c",
                                                         "Previous actions: f"]]


def test_eto_baseline_from_the_cli_and_the_renamed_rule(store: Store, data_file: Path, tmp_path, capsys):
    assert main(["import", "jsonl", str(data_file)]) == 0
    assert main(["tree"]) == 0
    capsys.readouterr()
    assert main(["pairs", "--granularity", "trajectory"]) == 2
    assert "no expert trajectories for the expert baseline" in capsys.readouterr().err
    expert = json.loads(_line(["a", "b"], 1.0, "r9")) | {"model": "expert"}
    (tmp_path / "expert.jsonl").write_text(json.dumps(expert) + "\n")
    assert main(["import", "jsonl", str(tmp_path / "expert.jsonl")]) == 0
    assert main(["tree"]) == 0
    assert main(["pairs", "--granularity", "trajectory"]) == 0
    assert "stored 2 trajectory pairs from 1 tree (baseline=expert)" in capsys.readouterr().out
    # the expert (1.0) against the explored ones of lower reward: 0.0 and 0.5 (the 1.0 tie dropped)
    assert sorted((p.chosen_value, p.rejected_value) for p in store.pairs()) == [(1.0, 0.0), (1.0, 0.5)]
    assert main(["mcts", "--rule", "reference"]) == 2
    assert "MCTS rule 'reference' is now called 'early-release'" in capsys.readouterr().err
    assert main(["mcts", "--rule", "early-release", "--iterations", "3"]) == 0


def test_eto_fixture_pipeline(store: Store, fixtures: Path, tmp_path, capsys):
    """The real ScienceWorld fixture runs: import → trees that branch → pairs that prefer the
    successful branch → best paths that replay a successful run (re-imported as ETO SFT)."""
    fx = fixtures
    expected = json.loads((fx / "eto-explore-expected.json").read_text())
    assert main(["import", "eto-explore", str(fx / "eto-explore"), "--env", ENV]) == 0
    assert main(["tree"]) == 0
    trees = {g.task_id: g.to_networkx() for g in store.load_trees(env=ENV)}
    assert set(trees) == set(expected)
    for task, runs in expected.items():
        root = trees[task].nodes[0]
        assert root["visits"] == len(runs)
        assert root["value_sum"] == pytest.approx(sum(r["reward"] for r in runs))
        assert root["successes"] == sum(r["reward"] == 1.0 for r in runs)
        assert any(trees[task].out_degree(n) > 1 for n in trees[task])  # the runs branch
    assert main(["mcts", "--iterations", "200"]) == 0
    assert main(["pairs", "--granularity", "continuation"]) == 0
    pairs = store.pairs(env=ENV)
    assert {p.task_id for p in pairs} == set(expected)
    assert all(p.chosen_success and not p.rejected_success for p in pairs)
    out = tmp_path / "best.json"
    assert main(["export", "best-paths", str(out), "--format", "eto"]) == 0
    successes = {(t.task_id, tuple(t.actions)) for t in store.trajectories(env=ENV) if t.success}
    capsys.readouterr()
    assert main(["import", "eto-sft", str(out), "--env", "replayed"]) == 0
    for t in store.trajectories(env="replayed"):
        assert (t.task_id.split("/")[1], tuple(t.actions)) in successes


def _jsonl(path: Path, lines: list[tuple[str, list[str], float, str]]) -> Path:
    """(task, actions, reward, model) per line."""
    path.write_text("".join(json.dumps({
        "env": ENV, "task_id": task, "instruction": "open the box", "reward": reward, "model": model,
        "steps": [{"action": a, "observation": f"after {a}"} for a in actions]}) + "\n"
        for task, actions, reward, model in lines))
    return path


@pytest.mark.parametrize(("lines", "reason"), [
    ([("t1", ["a", "b"], 1.0, "expert"), ("t2", ["c"], 1.0, "expert")], "only expert demonstrations"),
    ([("t1", ["a", "b"], 1.0, "weak"), ("t1", ["a", "c"], 1.0, "weak")], "every trajectory in the 1 tree succeeds"),
    ([("t1", ["a", "b"], 0.0, "weak"), ("t1", ["a", "c"], 0.2, "weak")], "no trajectory in the 1 tree succeeds"),
    ([("t1", ["a"], 1.0, "weak"), ("t2", ["a"], 0.0, "weak")], "no task has both a success and a failure"),
    # both outcomes, but the failure is a prefix of the success: no branching node parts them
    ([("t1", ["a", "b"], 1.0, "weak"), ("t1", ["a"], 0.0, "weak")], "no branching node has one child"),
])
def test_pairs_and_export_say_why_there_are_none(store: Store, tmp_path, capsys, lines, reason):
    main(["import", "jsonl", str(_jsonl(tmp_path / "d.jsonl", lines))])
    main(["tree"])
    capsys.readouterr()
    assert main(["export", "pairs", str(tmp_path / "p.jsonl")]) == 2
    err = capsys.readouterr().err
    if reason.startswith("no branching"):  # the trees could hold pairs: cutting them is the next step
        assert "run `w2stree pairs` first" in err and reason in err
    else:
        assert reason in err and "run `w2stree pairs` first" not in err
    assert main(["pairs"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("stored 0 step pairs from") and reason in out
    assert main(["export", "pairs", str(tmp_path / "p.jsonl")]) == 2
    assert reason in capsys.readouterr().err
