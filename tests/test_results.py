"""The results table, paired per-task comparisons and `w2stree results`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.cli import main
from core.results import bootstrap_mean, format_table, paired_comparisons, result_rows, summarize
from core.trajectory import Step, Trajectory


def test_bootstrap_of_a_constant_difference_is_that_constant():
    mean, lo, hi = bootstrap_mean(np.array([0.25, 0.25, 0.25]))
    assert (mean, lo, hi) == (0.25, 0.25, 0.25)


def test_bootstrap_interval_brackets_the_mean_and_matches_the_resampled_spread():
    diffs = np.array([0.0, 1.0] * 50)
    mean, lo, hi = bootstrap_mean(diffs, n_boot=4000)
    assert mean == 0.5
    # the mean of 100 Bernoulli(0.5) draws: sd 0.05, so the 95% interval is about 0.5 ± 0.098
    assert lo == pytest.approx(0.402, abs=0.02) and hi == pytest.approx(0.598, abs=0.02)


def test_paired_comparison_averages_each_task_over_seeds_first():
    rows = []
    for seed, (weak, tree) in enumerate([((0.0, 1.0), (1.0, 1.0)), ((0.0, 0.0), (1.0, 0.0))]):
        for task, (w, t) in enumerate(zip(weak, tree)):
            rows += [dict(method="SFT-weak", seed=seed, trajs_per_task=4, task_id=f"t{task}", reward=w, success=w),
                     dict(method="TreeDPO", seed=seed, trajs_per_task=4, task_id=f"t{task}", reward=t, success=t)]
    out = paired_comparisons(pd.DataFrame(rows), claims=(("TreeDPO", "SFT-weak"),), n_boot=200)
    (r,) = out.to_dict(orient="records")
    # task t0: +1 in both seeds; task t1: 0 in seed 0 (1 vs 1), 0 in seed 1 -> mean diff 0.5
    assert (r["n_tasks"], r["n_seeds"], r["diff"]) == (2, 2, 0.5)
    assert r["lo"] == 0.0 and r["hi"] == 1.0


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
    assert "test tasks: 100" in text


def test_results_command_prints_json_rows(store, capsys):
    run = "run-eval-1"
    trajs = [Trajectory(env="shop", task_id=f"test_{i}", instruction="buy", steps=[Step(action="click[buy now]", reward=r)],
                        reward=r, success=r == 1.0, source="eval", run_id=run, model="sft-weak")
             for i, r in enumerate([1.0, 0.5])]
    store.add_trajectories(trajs)
    store.add_results([dict(experiment_id="e1", env="shop", method="SFT-weak", model="m", seed=0, trajs_per_task=4,
                            avg_reward=0.75, success_rate=0.5, n_examples=7, n_episodes=2, run_id=run),
                       dict(experiment_id="e1", env="shop", method="TreeDPO", model="", seed=0, trajs_per_task=4,
                            avg_reward=None, success_rate=None, n_examples=0, n_episodes=0, run_id=None)])
    assert main(["--db", str(store.path), "results", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [dict(method="SFT-weak", seed=0, k=4, env="shop", avg_reward=0.75, success_rate=0.5, n_test=2,
                         n_train_examples=7),
                    dict(method="TreeDPO", seed=0, k=4, env="shop", avg_reward=None, success_rate=None, n_test=0,
                         n_train_examples=0)]
    assert main(["--db", str(store.path), "results"]) == 0
    text = capsys.readouterr().out
    assert "experiment e1" in text and "no data" in text
    assert main(["--db", str(store.path), "results", "--experiment", "nope"]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err
    assert list(result_rows(store.results())["method"]) == ["SFT-weak", "TreeDPO"]
