"""The results table, paired per-task comparisons and `w2stree results`."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from core.cli import main
from core.results import (
    COMPARISON_COLUMNS,
    K_COLUMNS,
    format_table,
    k_table,
    paired_comparisons,
    paired_differences,
    result_rows,
    summarize,
)
from core.stats import bootstrap_mean
from core.trajectory import Step, Trajectory


def _outcomes(table: dict[str, dict[int, list[float]]], k: int = 4) -> pd.DataFrame:
    """Outcome rows from {method: {seed: per-task rewards}} (success = reward 1)."""
    return pd.DataFrame([dict(method=m, seed=seed, trajs_per_task=k, task_id=f"t{i}", reward=r, success=float(r == 1.0))
                         for m, seeds in table.items() for seed, rs in seeds.items() for i, r in enumerate(rs)])


def test_paired_comparison_rows_by_hand():
    # seed 0: diffs (+1, 0) -> mean 0.5; seed 1: (+1, +1) -> 1.0; over both: 0.75
    out = _outcomes({"SFT-weak": {0: [0.0, 1.0], 1: [0.0, 0.0]}, "TreeDPO": {0: [1.0, 1.0], 1: [1.0, 1.0]}})
    cmp = paired_comparisons(out, claims=(("TreeDPO", "SFT-weak"),), n_boot=2000)
    assert list(cmp.columns) == COMPARISON_COLUMNS and list(cmp["metric"]) == ["reward", "success"]
    r = cmp.iloc[0].to_dict()
    assert (r["a"], r["b"], r["k"], r["resampled"], r["n_seeds"], r["n_tasks"]) == (
        "TreeDPO", "SFT-weak", 4, "seeds+tasks", 2, 2)
    assert r["diff"] == 0.75
    # t over the two per-seed means 0.5 and 1.0: sd = 0.5/sqrt(2), se = sd/sqrt(2) = 0.25
    assert r["t_lo"] == pytest.approx(0.75 - 12.706205 * 0.25) and r["t_hi"] == pytest.approx(0.75 + 12.706205 * 0.25)
    # the draw "seed 0 twice, task t1 twice" has mean 0 and chance 1/4 * 1/4 > 2.5 %, and draws of
    # mean 1 (task t0 twice, or seed 1 twice with any tasks) are more likely still: [0, 1]. The
    # old bootstrap over seed-averaged tasks (1.0 and 0.5) could not go below 0.5.
    assert (r["lo"], r["hi"]) == (0.0, 1.0)
    assert bootstrap_mean(np.array([1.0, 0.5]), n_boot=2000)[1] == 0.5
    # a bootstrap draw is the mean of drawn seeds' means over the same drawn tasks
    d = paired_differences(out, "TreeDPO", "SFT-weak", "reward")
    assert d.to_numpy().tolist() == [[1.0, 0.0], [1.0, 1.0]]


def test_comparison_keeps_the_tasks_both_methods_ran_in_every_seed():
    out = _outcomes({"A": {0: [1.0, 0.5, 0.2], 1: [1.0, 0.5]}, "B": {0: [0.0, 0.0, 0.0], 1: [0.0, 0.5]}})
    d = paired_differences(out, "A", "B", "reward")
    assert list(d.columns) == ["t0", "t1"] and d.shape == (2, 2)  # t2 only in seed 0
    cmp = paired_comparisons(out, claims=(("A", "B"), ("A", "C")), n_boot=200)
    assert cmp.iloc[0]["diff"] == pytest.approx(0.625)
    missing = cmp[cmp["b"] == "C"].iloc[0]
    assert math.isnan(missing["diff"]) and (missing["n_seeds"], missing["n_tasks"]) == (0, 0)


def test_one_seed_comparison_says_so_instead_of_an_interval_over_seeds():
    out = _outcomes({"SFT-weak": {0: [0.0, 1.0, 0.5]}, "TreeDPO": {0: [1.0, 1.0, 0.5]}})
    cmp = paired_comparisons(out, claims=(("TreeDPO", "SFT-weak"),), n_boot=500)
    r = cmp.iloc[0]
    assert r["n_seeds"] == 1 and math.isnan(r["t_lo"]) and math.isnan(r["t_hi"])
    assert (r["diff"], r["lo"], r["hi"]) == bootstrap_mean(np.array([1.0, 0.0, 0.0]), n_boot=500)
    rows = pd.DataFrame([dict(method=m, seed=0, trajs_per_task=4, avg_reward=v, success_rate=v, n_examples=9,
                              n_episodes=3) for m, v in (("SFT-weak", 0.5), ("TreeDPO", 0.83))])
    text = format_table(rows, cmp)
    assert "± 0.000" not in text and "0.500 (1 seed)" in text
    line = next(x for x in text.splitlines() if "TreeDPO  - SFT-weak" in x and "reward" in x)
    assert f"{r['diff']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}] | t 1 seed  (1 seed x 3 tasks)" in line


def test_k_table_is_the_mean_over_seeds_with_its_t_interval():
    rows = pd.DataFrame([dict(method="TreeDPO", seed=s, trajs_per_task=k, avg_reward=v, success_rate=v / 2,
                              n_examples=10, n_episodes=5)
                         for k, vals in ((1, (0.2, 0.4, 0.6)), (4, (0.5, 0.5, 0.8))) for s, v in enumerate(vals)]
                        + [dict(method="MCTS", seed=0, trajs_per_task=k, avg_reward=0.3, success_rate=0.1,
                                n_examples=n, n_episodes=5) for k, n in ((1, 0), (4, 3))])
    t = k_table(rows)
    assert list(t.columns) == K_COLUMNS
    r = t[(t["method"] == "TreeDPO") & (t["k"] == 1) & (t["metric"] == "reward")].iloc[0]
    # mean 0.4, sd 0.2, half-width 4.302653 * 0.2 / sqrt(3)
    half = 4.302653 * 0.2 / math.sqrt(3)
    assert r["mean"] == pytest.approx(0.4) and r["n_seeds"] == 3
    assert (r["t_lo"], r["t_hi"]) == (pytest.approx(0.4 - half), pytest.approx(0.4 + half))
    mcts = t[(t["method"] == "MCTS") & (t["metric"] == "reward")].set_index("k")
    assert math.isnan(mcts.loc[1, "mean"]) and mcts.loc[4, "mean"] == 0.3  # K=1 had no training data
    assert math.isnan(mcts.loc[4, "t_lo"]) and mcts.loc[4, "n_seeds"] == 1
    text = format_table(rows)
    assert "performance against trajectories per task K" in text
    tree = next(x for x in text.splitlines() if x.strip().startswith("TreeDPO") and "[" in x)
    assert f"0.400 [{0.4 - half:.3f}, {0.4 + half:.3f}]" in tree
    assert k_table(rows[rows["trajs_per_task"] == 4]).empty  # one K: no figure


def test_a_method_without_data_says_so_and_keeps_out_of_the_means():
    rows = [dict(method="SFT-weak", seed=0, trajs_per_task=4, avg_reward=0.3, success_rate=0.1, n_examples=50,
                 n_episodes=100),
            dict(method="TreeDPO", seed=0, trajs_per_task=4, avg_reward=None, success_rate=None, n_examples=0,
                 n_episodes=0)]
    df = pd.DataFrame(rows)
    s = summarize(df)
    assert s["avg_reward"].isna().tolist() == [False, True]
    text = format_table(df)
    assert "TreeDPO" in text and "no data" in text.split("TreeDPO")[1].splitlines()[0]
    assert "evaluation tasks: 100" in text


def test_results_command_prints_json_rows_and_comparisons(store, capsys):
    for run, model, rewards in (("run-eval-1", "sft-weak", [1.0, 0.5]), ("run-eval-2", "mcts", [1.0, 1.0])):
        store.add_trajectories([Trajectory(env="shop", task_id=f"test_{i}", instruction="buy",
                                           steps=[Step(action="click[buy now]", reward=r)], reward=r,
                                           success=r == 1.0, source="eval", run_id=run, model=model)
                                for i, r in enumerate(rewards)])
    row = dict(experiment_id="e1", env="shop", seed=0, trajs_per_task=4)
    store.add_results([dict(row, method="SFT-weak", model="m", avg_reward=0.75, success_rate=0.5, n_examples=7,
                            n_episodes=2, run_id="run-eval-1"),
                       dict(row, method="TreeDPO", model="", avg_reward=None, success_rate=None, n_examples=0,
                            n_episodes=0, run_id=None),
                       dict(row, method="MCTS", model="x", avg_reward=1.0, success_rate=1.0, n_examples=3,
                            n_episodes=2, run_id="run-eval-2")])
    assert main(["--db", str(store.path), "results", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"rows", "comparisons"}
    assert out["rows"][:2] == [dict(method="SFT-weak", seed=0, k=4, env="shop", avg_reward=0.75, success_rate=0.5,
                                    n_test=2, n_train_examples=7),
                               dict(method="TreeDPO", seed=0, k=4, env="shop", avg_reward=None, success_rate=None,
                                    n_test=0, n_train_examples=0)]
    by = {(c["a"], c["b"], c["metric"]): c for c in out["comparisons"]}
    assert set(out["comparisons"][0]) == set(COMPARISON_COLUMNS)
    mcts = by[("MCTS", "SFT-weak", "reward")]  # per-task differences 0 and 0.5, one seed
    diff, lo, hi = bootstrap_mean(np.array([0.0, 0.5]))
    assert (mcts["diff"], mcts["lo"], mcts["hi"], mcts["t_lo"], mcts["t_hi"]) == (diff, lo, hi, None, None)
    assert (mcts["resampled"], mcts["n_seeds"], mcts["n_tasks"], mcts["k"]) == ("seeds+tasks", 1, 2, 4)
    assert by[("MCTS", "SFT-weak", "success")]["diff"] == 0.5
    assert by[("TreeDPO", "SFT-weak", "reward")]["diff"] is None  # no eval run: no data
    assert main(["--db", str(store.path), "results", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "method,seed,k,env,avg_reward,success_rate,n_test,n_train_examples"
    assert main(["--db", str(store.path), "results"]) == 0
    text = capsys.readouterr().out
    assert "experiment e1" in text and "no data" in text
    assert "MCTS     - SFT-weak      K=4 reward  +0.250" in text and "| t 1 seed" in text
    assert main(["--db", str(store.path), "results", "--experiment", "nope"]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err
    assert list(result_rows(store.results())["method"]) == ["SFT-weak", "TreeDPO", "MCTS"]
