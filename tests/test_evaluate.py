"""Evaluation: episodes stored as an eval run under the label, averages equal to the stored ones."""

from __future__ import annotations

import pytest

from core.errors import UserError
from core.evaluate import evaluate


def test_expert_eval_is_stored_under_its_label(store):
    res = evaluate(store, "expert", "shop", tasks=3, label="gold")
    runs = store.runs(kind="eval")
    assert list(runs["run_id"]) == [res.run_id]
    head = store.trajectory_index(run_id=res.run_id)
    assert len(head) == res.n_episodes == 3
    assert set(head["source"]) == {"eval"}
    assert set(head["model"]) == {"gold"}
    assert sorted(head["task_id"]) == ["test_0", "test_1", "test_2"]
    # the expert solves every shop task: reward 1 everywhere
    assert res.avg_reward == pytest.approx(1.0)
    assert res.success_rate == pytest.approx(1.0)
    assert res.label == "gold" and res.model == "expert"


def test_random_eval_averages_equal_the_stored_rewards(store):
    res = evaluate(store, "random", "shop", task_ids=["test_3", "test_1", "test_4", "test_0"], max_steps=4)
    assert res.label == "random"
    trajs = store.trajectories(source="eval", model="random")
    assert sorted(t.task_id for t in trajs) == ["test_0", "test_1", "test_3", "test_4"]
    assert all(len(t.steps) <= 4 for t in trajs)
    # recomputed here from the steps: a trajectory's reward is its last step's reward
    rewards = [t.steps[-1].reward for t in trajs]
    assert res.avg_reward == pytest.approx(sum(rewards) / len(rewards))
    assert res.success_rate == pytest.approx(sum(r >= 1.0 for r in rewards) / len(rewards))
    assert res.avg_reward < 1.0  # random clicking within 4 steps does not solve everything


def test_bad_tasks_are_rejected(store):
    with pytest.raises(UserError, match="not in the 'test' split"):
        evaluate(store, "expert", "shop", task_ids=["train_0"])
    with pytest.raises(UserError, match="not in the 'test' split"):  # held-out ids, but not one split
        evaluate(store, "expert", "shop", task_ids=["test_0", "dev_0"])
    with pytest.raises(UserError, match="at least 1"):
        evaluate(store, "expert", "shop", tasks=0)
    assert store.runs().empty  # nothing started


def test_dev_task_ids_are_evaluated_as_the_dev_split(store):
    # the pipeline passes the task ids of its evaluation split (dev for choices) without naming it
    res = evaluate(store, "expert", "shop", task_ids=["dev_1", "dev_0"], label="gold-dev")
    assert (res.split, res.n_episodes, res.avg_reward) == ("dev", 2, 1.0)
    assert sorted(store.trajectory_index(run_id=res.run_id)["task_id"]) == ["dev_0", "dev_1"]
    assert evaluate(store, "expert", "shop", "dev", tasks=1).task_ids == ["dev_0"]


def test_eval_cli_prints_the_averages(store, capsys):
    from core.cli import main

    assert main(["eval", "--model", "expert", "--env", "shop", "--tasks", "2", "--label", "gold"]) == 0
    out = capsys.readouterr().out
    assert "avg reward    1.0000" in out and "success rate  1.0000" in out
    assert set(store.trajectory_index(source="eval")["model"]) == {"gold"}
    assert main(["eval", "--model", "expert", "--env", "shop", "--split", "dev", "--tasks", "2", "--label", "dev"]) == 0
    assert "(shop/dev, run" in capsys.readouterr().out
    dev = store.trajectory_index(source="eval", model="dev")
    assert sorted(dev["task_id"]) == ["dev_0", "dev_1"]
    assert main(["collect", "--env", "shop", "--policy", "expert", "--split", "dev", "--tasks", "1"]) == 0
    assert "dev_0" in set(store.trajectory_index(model="expert")["task_id"])


@pytest.mark.slow
def test_hf_model_eval_is_greedy_and_stored(store):
    """A (tiny, untrained) local model through HFPolicy: greedy, so two runs give the same
    episodes; every episode stored under the model's registered name."""
    from core.models import build_local_models

    build_local_models("shop", store, n_tasks=20)
    a = evaluate(store, "shop-weak", "shop", tasks=2, max_steps=2, batch_size=2)
    b = evaluate(store, "shop-weak", "shop", tasks=2, max_steps=2, batch_size=2, label="again")
    assert a.label == "shop-weak" and a.n_episodes == 2
    ta = sorted(store.trajectories(run_id=a.run_id), key=lambda t: t.task_id)
    tb = sorted(store.trajectories(run_id=b.run_id), key=lambda t: t.task_id)
    assert [t.actions for t in ta] == [t.actions for t in tb]
    assert a.avg_reward == pytest.approx(sum(t.reward for t in ta) / 2)
