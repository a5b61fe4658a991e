"""The W2S experiment: schedules, names, the results table, the dashboard fill, and a quick run."""

from __future__ import annotations

import dataclasses
import re

import pandas as pd
import pytest

from core.agents.base import PAPER_SCHEDULE, Request, Sampling, sampling_schedule
from core.agents.scripted import NoisyExpertPolicy
from core.errors import UserError
from core.pipeline import (
    SCALES,
    eval_label,
    fill_default,
    run_pipeline,
)
from core.results import METHODS, format_table, summarize


def test_sampling_schedule_for_k():
    assert sampling_schedule(1) == (Sampling(0.0, 1.0, "greedy"),)
    assert sampling_schedule(4) == PAPER_SCHEDULE
    six = sampling_schedule(6)
    assert six[:4] == PAPER_SCHEDULE
    assert [(s.temperature, s.top_p) for s in six[4:]] == [(0.7, 0.9), (1.0, 0.8)]
    # the labels the pipeline's earlier runs stored (each K's trajectories are picked by them)
    assert [s.name() for s in six[4:]] == ["t0.7-p0.9-2", "t1-p0.8-2"]
    assert sampling_schedule(8)[7].name() == "t0.7-p0.9-3"
    with pytest.raises(UserError, match="at least 1"):
        sampling_schedule(0)
    # one greedy setting repeated (explore's default, a scripted policy draws by its seed)
    assert [s.name() for s in sampling_schedule(3, (Sampling(),))] == ["greedy", "greedy-2", "greedy-3"]


def test_eval_labels():
    assert eval_label("treedpo", 0, None) == "treedpo"  # what the Compare page shows by default
    assert eval_label("treedpo", 2, None) == "treedpo-s2"
    assert eval_label("mcts", 0, 3) == "mcts-s0-k3"


def test_summary_is_mean_and_std_over_seeds():
    rows = []
    for seed, (weak, tree) in enumerate([(0.2, 0.5), (0.4, 0.7), (0.3, 0.9)]):
        rows += [dict(method="TreeDPO", seed=seed, trajs_per_task=4, avg_reward=tree, success_rate=tree / 2,
                      n_examples=10 + seed),
                 dict(method="SFT-weak", seed=seed, trajs_per_task=4, avg_reward=weak, success_rate=0.0,
                      n_examples=5)]
    s = summarize(pd.DataFrame(rows))
    assert list(s["method"]) == ["SFT-weak", "TreeDPO"]  # table order, not input order
    tree = s[s["method"] == "TreeDPO"].iloc[0]
    assert tree["avg_reward"] == pytest.approx(0.7)
    assert tree["avg_reward_std"] == pytest.approx(0.2)  # sample std of 0.5, 0.7, 0.9
    assert tree["success_rate"] == pytest.approx(0.35)
    assert tree["n_examples"] == pytest.approx(11)
    text = format_table(pd.DataFrame(rows))
    assert "TreeDPO          0.700 ± 0.200" in text and "seeds: 3" in text  # 13 wide: SFT-continued
    untrained = [{**r, "n_examples": 0} if r["method"] == "TreeDPO" else r for r in rows]
    line = next(x for x in format_table(pd.DataFrame(untrained)).splitlines() if x.startswith("TreeDPO"))
    assert "no data" in line and "0.700" not in line  # never another model's numbers


def test_noisy_expert_is_the_expert_when_greedy():
    policy = NoisyExpertPolicy("shop", noise=1.0)
    from core.agents.scripted import ExpertPolicy

    expert = ExpertPolicy("shop")
    greedy = Request(env="shop", task_id="train_0", instruction="x", messages=[], sampling=Sampling())
    hot = Request(env="shop", task_id="train_0", instruction="buy a red lamp", messages=[],
                  valid_actions=["search[...]"], sampling=Sampling(1.0, 1.0), seed=7)
    assert policy.act([greedy]) == expert.act([greedy])
    # noise x temperature = 1: always the random action, and the same one every time
    assert policy.act([hot]) == policy.act([hot]) != expert.act([hot])
    assert "search[" in policy.act([hot])[0]


@pytest.mark.slow
def test_fill_default_gives_trees_with_pairs(store):
    seen = []
    fill_default(store, progress=lambda f, text: seen.append(f), n_tasks=6)
    assert seen[-1] == 1.0 and seen == sorted(seen)
    trees = store.trees(env="shop")
    assert len(trees) == 6
    assert set(store.models()["name"]) >= {"shop-weak", "shop-strong", "shop-tokenizer"}
    explored = store.trajectory_index(model="noisy-expert")
    assert len(explored) == 6 * 4
    assert explored["success"].any() and not explored["success"].all()
    assert len(store.pairs(granularity="step")) > 0 and len(store.pairs(granularity="trajectory")) > 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_pipeline_end_to_end(store):
    said: list[str] = []
    df = run_pipeline("shop", "quick", seeds=(0,), store=store, progress=lambda f, text: said.append(text))
    # the whole run predicted from its first training steps, its ETA and the episode counts in
    # the live line, and the prediction set against the measured time at the end
    assert sum(t.startswith("predicted: the whole run takes about ") for t in said) == 1, said
    assert any(" · run ETA " in t or t.startswith("run ETA ") for t in said), said
    assert any(re.search(r"(explore|eval [\w-]+) \d+/\d+ episodes", t) for t in said), said
    assert re.search(r"done in \d+s; predicted (\d+ s|\d+m\d\ds|\d+h\d\dm) at \d+s, [+-]\d+ % of the measured ", said[-1]), said[-1]
    methods = [m for m, _ in METHODS]
    assert sorted(df["method"]) == sorted(methods)
    assert (df["n_episodes"] == 3).all() and df["avg_reward"].between(0, 1).all()
    # every method had data to train on (the quick scale explores with the noisy expert)
    assert (df["n_examples"] > 0).all()
    exp = df.attrs["experiment_id"]
    stored = store.results(exp)
    assert sorted(stored["method"]) == sorted(methods)
    # `--env shop` at the quick scale plays the tiny scale's world, tinyshop (what `up` fills)
    world = "shop?n_products=200&n_categories=10"
    assert set(stored["env"]) == {world} and set(stored["seed"]) == {0}
    models = set(store.models()["name"])
    for name in ("sft-weak", "sft-strong", "sft-continued", "w2s-sft", "eto-dpo", "treedpo", "mcts"):
        assert f"shop-n_products=200-n_categories=10-{name}-s0" in models
    # the paper's design: the weak model explores the demonstrated tasks, more episodes than demos;
    # the evaluation tasks are in neither
    trajs = store.trajectory_index(source="collect")
    demos, explored = trajs[trajs["model"] == "expert"], trajs[trajs["model"] == "noisy-expert"]
    assert set(explored["task_id"]) <= set(demos["task_id"]) and len(explored) >= len(demos)
    evals = store.trajectory_index(source="eval")
    assert set(evals["task_id"]).isdisjoint(set(demos["task_id"]) | set(explored["task_id"]))
    assert len(store.trees(env=world)) == 4
    assert len(store.pairs(granularity="step")) > 0
    assert set(evals["model"]) == {label for _, label in METHODS}
    # the table's numbers are those of the stored eval episodes
    tree = df[df["method"] == "TreeDPO"].iloc[0]
    assert tree["avg_reward"] == pytest.approx(evals[evals["model"] == "treedpo"]["reward"].mean())
    jobs = store.query("SELECT kind, status FROM jobs")
    assert len(jobs) == 7 and set(jobs["status"]) == {"succeeded"}

    # again with reuse and another DPO learning rate, evaluated on dev: only the three trainings
    # that read the DPO budget (TreeDPO, ETO-DPO, SFT-continued) run again, the exploration does not
    quick = SCALES["quick"]
    changed = dataclasses.replace(quick, dpo={**quick.dpo, "lr": 1e-4})
    runs_before = len(store.runs())
    again = run_pipeline("shop", changed, seeds=(0,), store=store, progress=False, split="dev", reuse=True)
    jobs = store.query("SELECT kind FROM jobs")
    assert sorted(jobs["kind"]) == sorted(["sft"] * 5 + ["mcts"] + ["treedpo", "eto-dpo"] * 2)
    assert len(store.runs()) == runs_before + 7  # the seven evaluations on dev, no new exploration
    counts = store.results(again.attrs["experiment_id"]).set_index("method")["n_examples"]
    assert counts.to_dict() == stored.set_index("method")["n_examples"].to_dict()


def test_the_pool_reaches_the_evaluations_and_a_bad_one_fails_first(store, tmp_path, capsys) -> None:
    """`pipeline --workers W --executor E` hands its pool to every evaluation unit (their runs record
    it); a pool that cannot run is one line before anything starts."""
    import json

    from core.cli import main
    from core.env_slots import Pool
    from core.pipeline import SeedRun
    from core.scales import Scale
    from core.work import Reporter

    run = SeedRun(store=store, env="shop", cfg=Scale(name="t", max_steps=8), seed=0, test_ids=["test_0", "test_1"],
                  folder=tmp_path, rep=Reporter(None), pool=Pool(2, "process"))
    unit = run.eval_unit("SFT-weak", tmp_path / "expert", None, ())
    unit.kwargs["model"] = "expert"  # a scripted policy in place of the trained model
    res = unit.stage(store, **unit.kwargs)
    assert res.n_episodes == 2 and res.avg_reward == 1.0
    assert json.loads(store.run_record(res.run_id)["settings"])["executor"] == "process"
    assert main(["pipeline", "--workers", "2", "--executor", "local"]) == 2
    assert "--executor local runs one env worker" in capsys.readouterr().err
    assert store.runs()["run_id"].tolist() == [res.run_id]  # nothing else ran
