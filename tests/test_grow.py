"""Targeted growth (core.grow): each rule's node ranking worked out by hand on one small tree, and
a growth on the real shop storing its continuations where the rule chose."""

from __future__ import annotations

import json
import math

import pytest

from core.agents.base import PAPER_SCHEDULE
from core.agents.scripted import NoisyExpertPolicy
from core.collect import collect
from core.errors import UserError
from core.grow import GrowSettings, choose_nodes, grow, node_scores
from core.mcts import run_mcts
from core.stages import grow_trees
from core.trajectory import Step, Trajectory
from core.tree import build_tree
from core.tree_data import Tree


def traj(actions: list[str], reward: float, task: str = "t") -> Trajectory:
    return Trajectory(env="e", task_id=task, instruction="do it",
                      steps=[Step(action=a, observation=f"saw {a}") for a in actions], reward=reward)


@pytest.fixture
def tree() -> Tree:
    """root -> a -> b -> c [0], a -> b -> d [1], a -> e -> f [0]; root -> x -> y [0].
    Data values: root 1/4, a 1/3, b 1/2, e 0, x 0; c, d, f, y are leaves."""
    return build_tree([traj(["a", "b", "c"], 0.0), traj(["a", "b", "d"], 1.0), traj(["a", "e", "f"], 0.0),
                       traj(["x", "y"], 0.0)])


def ranked(tree: Tree, **kw) -> list[tuple[str, float]]:
    return [(str(tree.action[n]) or "root", round(s, 3)) for s, n in node_scores(tree, GrowSettings(8, **kw))]


def test_deepest_failure_takes_all_failed_subtrees_deepest_first(tree) -> None:
    # root, a and b have a success below them; the leaves have no children to branch from
    assert ranked(tree) == [("e", 2.0), ("x", 1.0)]


def test_value_drop_takes_the_decisions_that_lost_most(tree) -> None:
    # drop = value - the worst failing child's: b 1/2 - c 0, a 1/3 - e 0, root 1/4 - x 0; e and x drop 0
    assert ranked(tree, rule="value-drop") == [("b", 0.5), ("a", 0.333), ("root", 0.25)]


def test_ucb_scores_by_hand(tree) -> None:
    # Q + 1.41 sqrt(ln N(parent) / N), on the data statistics (no MCTS run): N root 4, a 3, b 2, e 1, x 1
    def ucb(q: float, parent: int, n: int) -> float:
        return round(q + 1.41 * math.sqrt(math.log(parent) / n), 3)

    assert ranked(tree, rule="ucb") == sorted(
        [("x", ucb(0, 4, 1)), ("b", ucb(0.5, 3, 2)), ("e", ucb(0, 3, 1)), ("a", ucb(1 / 3, 4, 3)),
         ("root", ucb(0.25, 4, 4))], key=lambda r: -r[1])
    run_mcts(tree, iterations=200)  # with MCTS statistics the rule reads those instead
    n, w = tree.mcts_visits, tree.mcts_value_sum
    x = next(i for i in range(tree.n_nodes) if tree.action[i] == "x")
    scores = dict((node, s) for s, node in node_scores(tree, GrowSettings(8, rule="ucb")))
    root_n = sum(n[c] for c in tree.children(0))  # MCTS never counts the root: its children's sum
    assert scores[x] == pytest.approx(w[x] / n[x] + 1.41 * math.sqrt(math.log(root_n) / n[x]))


def test_pair_check_takes_the_failing_sides_of_pairs_shallowest_first(tree) -> None:
    # x failed beside a (which won), e failed beside b (which won); c and y are leaves
    assert ranked(tree, rule="pair-check") == [("x", -1.0), ("e", -2.0)]


def test_choose_nodes_ranks_all_trees_together_at_most_per_tree_each(tree) -> None:
    other = build_tree([traj(["p", "q", "r", "s"], 0.0, task="u"), traj(["p", "z"], 0.0, task="u")])

    def names(chosen: list[tuple[str, int, float]]) -> list[str]:
        return [f"{tid}:{(tree if tid == tree.tree_id else other).action[node]}" for tid, node, _ in chosen]

    # deepest-failure, one node per tree: u's r (depth 3), then t's e (depth 2); budget 12 / K 4 = 3
    assert names(choose_nodes([tree, other], GrowSettings(budget=12, k=4))) == ["e/u:r", "e/t:e"]
    # two per tree: t's e and u's q tie at depth 2, the tree id decides
    assert names(choose_nodes([tree, other], GrowSettings(budget=12, k=4, per_tree=2))) == \
        ["e/u:r", "e/t:e", "e/u:q"]
    assert names(choose_nodes([tree, other], GrowSettings(budget=7, k=4))) == ["e/u:r"]


@pytest.mark.parametrize("field, value, needle", [
    ("rule", "deepest", "unknown growth rule 'deepest'"),
    ("budget", 0, "budget must be at least 1"),
    ("k", 8, "less than one node's K = 8"),
    ("c", -1.0, "ucb constant"),
])
def test_bad_settings_are_one_line(field, value, needle) -> None:
    with pytest.raises(UserError, match=needle):
        GrowSettings(**{"budget": 4, field: value}).check()


@pytest.mark.slow
def test_growth_on_the_shop_stores_continuations_from_the_chosen_nodes(store) -> None:
    tasks = ["train_0", "train_1", "train_2"]
    run_id = collect(store, "shop", NoisyExpertPolicy("shop", noise=0.6, seed=3), tasks, PAPER_SCHEDULE,
                     max_steps=8, progress=False).run_id
    trees = grow_trees(store.trajectories(run_id=run_id))
    store.save_trees(trees)
    settings = GrowSettings(budget=8, k=4, max_steps=8)
    expected = choose_nodes(store.load_trees(env="shop"), settings)
    assert len(expected) == 2
    before = {t.tree_id: t.n_nodes for t in store.load_trees(env="shop")}
    report = grow(store, "shop", "noisy-expert", settings)
    assert report.nodes == expected and report.episodes == 8
    grown = store.trajectories(source="explore")
    assert len(grown) == 8
    starts = {(t.meta["explore"]["tree_id"], t.meta["explore"]["node"]) for t in grown}
    assert starts == {(tid, node) for tid, node, _ in expected}
    # every continuation stays within the episode cap and its tree grew by the new branches
    assert all(len(t.steps) <= 8 for t in grown)
    after = {t.tree_id: t.n_nodes for t in store.load_trees(env="shop")}
    assert sum(after.values()) >= sum(before.values())
    assert all(after[tid] >= before[tid] for tid in before)


def test_cli_refuses_an_empty_store(store, capsys) -> None:
    from core.cli import main

    assert main(["grow", "--env", "shop", "--policy", "noisy-expert", "--budget", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no stored trees of 'shop'" in err and "w2stree tree --env shop" in err


@pytest.mark.slow
def test_pipeline_growth_adds_to_the_trees_only(store, noisy_shop, tmp_path) -> None:
    from core.env_slots import Pool
    from core.pipeline import training_files
    from core.scales import Scale
    from core.work import Reporter

    explored, experts = noisy_shop
    plain = Scale(name="t", mcts_iterations=50, max_steps=8)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, before = training_files(store, plain, explored, experts, 0, tmp_path / "a", Reporter(None), save=False)
    grown = Scale(name="t", mcts_iterations=50, max_steps=8, grow_budget=8)
    _, after = training_files(store, grown, explored, experts, 0, tmp_path / "b", Reporter(None), save=False,
                              explorer="noisy-expert", pool=Pool(2, "process"))
    assert len(store.trajectories(source="explore")) == 8
    assert {json.loads(r)["executor"] for r in store.runs(kind="explore")["settings"]} == {"process"}
    # the ETO pairs and the weak successes stay as released; the trees hold the grown episodes too
    assert after["eto_pairs"] == before["eto_pairs"] and after["successes"] == before["successes"]
    trees = store.load_trees(env="shop")
    assert sum(g.n_trajectories for g in trees) == len(explored) + 8
    assert after["tree_pairs"] >= before["tree_pairs"]


@pytest.mark.slow
def test_nodes_explored_together_give_the_episodes_they_give_alone(store, tmp_path) -> None:
    from core.explore import ExploreSpec, explore, explore_nodes
    from core.store import Store

    other = Store(tmp_path / "other.duckdb")
    for s in (store, other):  # the same exploration, twice: the same trees
        run_id = collect(s, "shop", NoisyExpertPolicy("shop", noise=0.6, seed=3), ["train_0", "train_1"],
                         PAPER_SCHEDULE, max_steps=8, progress=False).run_id
        s.save_trees(grow_trees(s.trajectories(run_id=run_id)))
    specs = [ExploreSpec("shop", "train_0", 1, "noisy-expert", k=4, schedule="paper", max_steps=5),
             ExploreSpec("shop", "train_1", 0, "noisy-expert", k=4, schedule="paper", max_steps=5)]
    alone = [explore(store, spec) for spec in specs]
    together = explore_nodes(other, specs)

    def episodes(s: Store, results) -> list[list[tuple[list[str], float]]]:
        return [[(t.actions, t.reward) for t in s.trajectories(traj_ids=r.traj_ids)] for r in results]

    assert episodes(store, alone) == episodes(other, together)
    assert [r.n_nodes for r in alone] == [r.n_nodes for r in together]
    assert len(other.runs(kind="explore")) == 2


@pytest.mark.slow
def test_cli_growth_on_worker_processes_grows_what_it_grows_in_process(store, tmp_path, capsys) -> None:
    """`grow --workers 2 --executor process --detach` (a job) on a copy of the same trees: the same
    continuations as `grow` in-process, and the explore runs record their pool."""
    import time

    from core.cli import main
    from core.jobs import FINISHED, job_status
    from core.store import Store

    other = tmp_path / "other.duckdb"
    for s in (store, Store(other)):
        run_id = collect(s, "shop", NoisyExpertPolicy("shop", noise=0.6, seed=3), ["train_0", "train_1"],
                         PAPER_SCHEDULE, max_steps=8, progress=False).run_id
        s.save_trees(grow_trees(s.trajectories(run_id=run_id)))
    grow_args = ["grow", "--env", "shop", "--policy", "noisy-expert", "--budget", "8", "--max-steps", "8"]
    assert main(grow_args) == 0
    assert main(["--db", str(other), *grow_args, "--workers", "2", "--executor", "process", "--detach"]) == 0
    out = capsys.readouterr().out
    job = out.split("started job ")[1].split(";")[0]
    deadline = time.monotonic() + 180
    while job_status(job)["status"] not in FINISHED and time.monotonic() < deadline:
        time.sleep(0.5)
    status = job_status(job)
    assert status["status"] == "succeeded", status
    said = [line for line in out.splitlines() if line.startswith("grew")]
    assert said[0].startswith("grew 2 nodes by rule deepest-failure: 8 ") and status["summary"] == said[0]

    def grown(s: Store) -> list[tuple[str, int, list[str], float]]:
        return sorted((t.meta["explore"]["tree_id"], t.meta["explore"]["node"], t.actions, t.reward)
                      for t in s.trajectories(source="explore"))

    assert grown(store) == grown(Store(other))
    for s, executor in ((store, "local"), (Store(other), "process")):
        assert {json.loads(r)["executor"] for r in s.runs(kind="explore")["settings"]} == {executor}
