"""True node values by the shop's expert (core.oracle), their storage, and the label report
(core.oracle_report) on hand-built and collected stores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.agents.base import PAPER_SCHEDULE
from core.cli import main
from core.envs.base import make_env
from core.oracle import Oracle, Outcome, expert_outcome, has_oracle, label_stored
from core.oracle_report import judge_pairs, label_table, oracle_report, report_lines
from core.stages import (
    MCTSSettings,
    PairSettings,
    cut_pairs_stored,
    grow_trees_stored,
    run_policy,
    score_trees_stored,
    split_tasks,
)
from core.store import Store
from core.trajectory import Pair, Step, Trajectory
from core.tree import build_trees
from core.tree_data import NO_STEPS

ENV = "shop"


@pytest.fixture
def shop_store(store: Store) -> tuple[Store, list[str]]:
    """Three shop tasks: an expert episode and four random ones (paper schedule) each, as trees
    scored by MCTS, with step pairs of any margin; the oracle has run."""
    tasks = split_tasks(ENV, "train", 3)
    run_policy(store, ENV, "expert", tasks)
    run_policy(store, ENV, "random", tasks, schedule=PAPER_SCHEDULE)
    grow_trees_stored(store)
    ids = store.trees()["tree_id"].tolist()
    score_trees_stored(store, ids, MCTSSettings(iterations=200))
    cut_pairs_stored(store, ids, PairSettings("step", min_margin=0.0))
    summary = label_stored(store, ids)
    assert summary.known == summary.nodes and summary.mismatches == 0
    return store, ids


def test_only_an_expert_that_plans_anywhere_is_an_oracle():
    assert has_oracle("shop") and has_oracle("shop?n_products=200&n_categories=10")
    assert not has_oracle("sciworld") and not has_oracle("alfworld") and not has_oracle("nope")


def test_expert_path_nodes_need_exactly_the_rest_of_the_demonstration(shop_store):
    store, ids = shop_store
    experts = {t.task_id: t for t in store.trajectories(model="expert")}
    for g in store.load_trees(tree_ids=ids):
        demo = experts[g.task_id]
        node = 0
        for d in range(len(demo.steps) + 1):
            assert g.true_value[node] == 1.0
            assert g.true_steps[node] == len(demo.steps) - d  # the re-planned rest is the demonstration's rest
            if d < len(demo.steps):
                node = next(k for k in g.children(node) if g.action[k] == demo.steps[d].action)


def test_node_values_match_a_replay_by_hand(shop_store):
    """Every node: replay its first trajectory's prefix in a fresh env, then play the expert's
    whole plan from there; a node that ends its episode keeps its own reward with 0 steps."""
    store, ids = shop_store
    env = make_env(ENV)
    for g in store.load_trees(tree_ids=ids):
        trajs = {t.traj_id: t for t in store.trajectories(traj_ids=list(g.traj_ids))}
        for node in range(g.n_nodes):
            traj = trajs[g.traj_ids[g.trajs[node][0]]]
            depth = int(g.depth[node])
            env.reset(g.task_id)
            res = None
            for s in traj.steps[:depth]:
                res = env.step(s.action)
            if res is not None and res.done:
                want = (res.reward, 0)
            else:
                plan = env.replan()
                if depth + len(plan) > env.max_steps():
                    want = (0.0, NO_STEPS)
                else:
                    for s in plan:
                        res = env.step(s.action)
                    assert res.done
                    want = (res.reward, len(plan))
            assert (g.true_value[node], g.true_steps[node]) == pytest.approx(want), (g.tree_id, node)


def test_expert_that_runs_out_of_steps_reaches_nothing():
    env = make_env(ENV)
    env.reset("train_0")
    plan = env.replan()
    assert expert_outcome(env, len(plan) - 1) == Outcome(0.0, None)
    env.reset("train_0")
    assert expert_outcome(env, len(plan)) == Outcome(1.0, len(plan))


def test_true_values_survive_reload_mcts_and_growth(shop_store):
    store, ids = shop_store
    before = store.load_tree(ids[0])
    score_trees_stored(store, ids, MCTSSettings(iterations=50))  # rescoring writes only MCTS columns
    after = store.load_tree(ids[0])
    np.testing.assert_array_equal(after.true_value, before.true_value)
    np.testing.assert_array_equal(after.true_steps, before.true_steps)
    numeric = store.load_trees(tree_ids=ids[:1], numeric_only=True)[0]
    np.testing.assert_array_equal(numeric.true_value, before.true_value)
    g = after.to_networkx()
    assert g.nodes[0]["true_value"] == before.true_value[0]
    from core.tree_data import Tree

    back = Tree.from_networkx(g)
    np.testing.assert_array_equal(back.true_steps, before.true_steps)
    # a new trajectory grows the tree: old nodes keep their values, new ones are unknown
    old = after.n_nodes
    env = make_env(ENV)
    env.reset(after.task_id)
    steps = [Step(a, env.step(a).observation) for a in ("search[something else entirely]", "click[back to search]")]
    t = Trajectory(env=ENV, task_id=after.task_id, instruction=after.instruction, reward=0.0, success=False,
                   steps=steps)
    store.add_trajectories([t])
    after.extend([t])
    assert after.n_nodes == old + 2
    np.testing.assert_array_equal(after.true_value[:old], before.true_value)
    assert np.isnan(after.true_value[old:]).all() and (after.true_steps[old:] == NO_STEPS).all()
    store.save_trees([after])
    again = label_stored(store, ids[:1])  # only the two unknown nodes are computed
    assert again.known == old + 2


def test_oracle_cache_replays_each_prefix_once(shop_store):
    store, ids = shop_store
    g = store.load_tree(ids[0])
    trajs = {t.traj_id: t for t in store.trajectories(traj_ids=list(g.traj_ids))}
    oracle = Oracle()
    g.true_value[:] = np.nan
    oracle.label(g, trajs)
    assert len(oracle.cache) == g.n_nodes  # action merge: one prefix per node
    oracle.label(g, trajs, redo=True)
    assert len(oracle.cache) == g.n_nodes
    oracle.close()


# -- the report on a hand-built store ---------------------------------------------------------------

def _traj(task: str, actions: list[str], reward: float) -> Trajectory:
    return Trajectory(env=ENV, task_id=task, instruction="buy it", reward=reward, success=reward >= 1.0,
                      steps=[Step(a, f"after {a}") for a in actions])


def _pair(tree, node: int, chosen: int, rejected: int, cv: float, rv: float, gran: str = "step") -> Pair:
    turn = [{"role": "assistant", "content": "Action: x"}]
    return Pair(env=ENV, task_id=tree.task_id if tree else "t", prompt=[{"role": "user", "content": "buy it"}],
                chosen=turn, rejected=[{"role": "assistant", "content": f"Action: y{chosen}{rejected}"}],
                chosen_value=cv, rejected_value=rv, granularity=gran, value_kind="data",
                tree_id=tree.tree_id if tree else "", node_id=node, chosen_node=chosen, rejected_node=rejected,
                chosen_success=cv >= 1, rejected_success=rv >= 1)


@pytest.fixture
def hand_store(store: Store):
    """One tree: root 0 with children a (1), b (2), c (3), d (4), e (5); oracle values set by hand;
    five step pairs and one ETO trajectory pair (no tree node)."""
    trajs = [_traj("t", [a], r) for a, r in (("a", 1.0), ("b", 0.0), ("c", 1.0), ("d", 0.5), ("e", 0.0))]
    (tree,) = build_trees(trajs)
    assert tree.n_nodes == 6
    tree.true_value[:] = [1.0, 1.0, 0.0, 1.0, 0.5, 1.0]
    tree.true_steps[:] = [5, 4, NO_STEPS, 6, 0, 3]  # node 4: a purchase worth 0.5 ends its episode
    tree.mcts_visits[:] = [10, 4, 0, 3, 2, 1]
    tree.mcts_value_sum[:] = [5.0, 3.0, 0.0, 3.0, 0.0, 0.5]
    store.save_trees([tree])
    pairs = [
        _pair(tree, 0, 1, 2, 1.0, 0.0),   # true 1 vs 0: right; steps 4 vs none: right; margin 1.0
        _pair(tree, 0, 4, 5, 0.7, 0.5),   # true 0.5 vs 1: wrong; its 0 steps reach only 0.5: wrong; margin 0.2
        _pair(tree, 0, 5, 3, 0.55, 0.5),  # 1 vs 1: equal; steps 3 vs 6: right; margin 0.05
        _pair(tree, 0, 3, 5, 0.625, 0.5),  # 1 vs 1: equal; steps 6 vs 3: wrong; margin 0.125
        _pair(tree, 0, 2, 4, 0.3, 0.4),   # 0 vs 0.5: wrong; unfinished vs 0 steps to 0.5: wrong; margin -0.1
        _pair(None, -1, -1, -1, 1.0, 0.0, "trajectory"),  # not from a tree: unknown
    ]
    store.save_pairs(pairs)
    return store, tree


def test_label_table_by_hand(hand_store):
    store, _ = hand_store
    table = label_table(judge_pairs(store.pair_truths(ENV)))
    step = table[(table["granularity"] == "step") & (table["margin"] == "all")].iloc[0]
    assert (step["pairs"], step["right"], step["wrong"], step["equal"], step["unknown"]) == (5, 1, 2, 2, 0)
    assert step["accuracy"] == pytest.approx(1 / 5)
    assert (step["steps_right"], step["steps_wrong"], step["steps_equal"]) == (2, 3, 0)
    assert step["steps_accuracy"] == pytest.approx(2 / 5)
    by_margin = table[(table["granularity"] == "step") & (table["margin"] != "all")].set_index("margin")
    assert by_margin["pairs"].to_dict() == {"< 0": 1, "0 - 0.1": 1, "0.1 - 0.25": 2, ">= 0.5": 1}
    assert by_margin.loc["0.1 - 0.25", "wrong"] == 1 and by_margin.loc["0.1 - 0.25", "equal"] == 1
    traj = table[table["granularity"] == "trajectory"].iloc[0]
    assert (traj["pairs"], traj["unknown"]) == (1, 1) and np.isnan(traj["accuracy"])  # nothing to judge


def test_value_correlations_by_hand(hand_store):
    store, tree = hand_store
    report = oracle_report(store, ENV)
    assert report["nodes"] == {"trees": 1, "nodes": 6, "known": 6, "expert_wins": 4}
    mcts = next(v for v in report["values"] if v["value"] == "mcts")
    # nodes with MCTS visits: 0, 1, 3, 4, 5 with Q 0.5, 0.75, 1, 0, 0.5 and true 1, 1, 1, 0.5, 1
    q, true = np.array([0.5, 0.75, 1.0, 0.0, 0.5]), np.array([1.0, 1.0, 1.0, 0.5, 1.0])
    assert mcts["nodes"] == 5
    assert mcts["pearson"] == pytest.approx(np.corrcoef(q, true)[0, 1])
    # ranks of q: 2.5, 4, 5, 1, 2.5; of true: 3.5, 3.5, 3.5, 1, 3.5
    assert mcts["spearman"] == pytest.approx(np.corrcoef([2.5, 4, 5, 1, 2.5], [3.5, 3.5, 3.5, 1, 3.5])[0, 1])
    data = next(v for v in report["values"] if v["value"] == "data")
    # data means: root 2.5 / 5, then each child its own reward
    x = np.array([0.5, 1.0, 0.0, 1.0, 0.5, 0.0])
    assert data["pearson"] == pytest.approx(np.corrcoef(x, tree.true_value)[0, 1])
    text = "\n".join(report_lines(report))
    assert "6 / 6" in text and "mcts  over 5 nodes" in text


def test_oracle_cli(shop_store, capsys):
    store, ids = shop_store
    db = str(store.path)
    assert main(["--db", db, "oracle", "--env", ENV, "--redo"]) == 0
    out = capsys.readouterr().out
    nodes = sum(g.n_nodes for g in store.load_trees(tree_ids=ids))
    assert f"true values of {nodes} / {nodes} nodes in 3 trees" in out
    assert main(["--db", db, "oracle", "--report", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    judged = judge_pairs(store.pair_truths())
    step = next(r for r in report["labels"] if r["granularity"] == "step" and r["margin"] == "all")
    assert step["pairs"] == len(store.pairs(granularity="step")) == len(judged)
    assert step["right"] == int((judged["by_value"] == "right").sum())
    assert main(["--db", db, "oracle", "--env", "sciworld"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no oracle for env 'sciworld'" in err[0]
    counts = store.counts()
    assert main(["--db", db, "oracle", "--env", ENV, "--task", "nope"]) == 2
    assert store.counts() == counts
