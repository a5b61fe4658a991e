"""TreeDPO pairs on a hand-built tree (which pairs, prompts, continuations, margins, MCTS Q) and
the ETO-style whole-trajectory baseline."""

from __future__ import annotations

import pytest

from core.errors import UserError
from core.mcts import run_mcts
from core.pairs import eto_pairs, tree_pairs
from core.trajectory import Step, Trajectory
from core.tree import build_tree


def traj(steps: list[tuple[str, str, str]], reward: float, task: str = "mug", **kw) -> Trajectory:
    return Trajectory(env="shop", task_id=task, instruction="buy a mug",
                      steps=[Step(thought=t, action=a, observation=o) for t, a, o in steps],
                      reward=reward, meta={"initial_observation": "home page"}, **kw)


SEARCH = ("I need a mug", "search[mug]", "results")
CLICK_A = ("A looks right", "click[mug A]", "item A")
CLICK_B = ("B is cheap", "click[mug B]", "item B")
BUY = ("buy it", "click[buy now]", "bought")


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def asst(step: tuple[str, str, str]) -> dict[str, str]:
    return {"role": "assistant", "content": f"Thought: {step[0]}\nAction: {step[1]}"}


@pytest.fixture
def g():
    """0 root
    |- 1 search[mug]   visits 3, value 1.4 (mean 0.4667), 1 success
    |  |- 2 click[mug A]   2 visits, value 1.0 (mean 0.5), 1 success
    |  |  |- 3 buy now         1.0, success
    |  |  |- 7 back            0.0
    |  |- 4 click[mug B]   1 visit, 0.4
    |     |- 5 buy now         0.4
    |- 6 search[cup]   0.0
    |- 8 go to shop    1.0, success
    """
    return build_tree([
        traj([SEARCH, CLICK_A, BUY], 1.0),
        traj([SEARCH, CLICK_B, ("buy it anyway", "click[buy now]", "bought B")], 0.4),
        traj([("maybe a cup", "search[cup]", "cup results")], 0.0),
        traj([SEARCH, ("A looks right", "click[mug A]", "item A"), ("wrong one", "click[back]", "results")], 0.0),
        traj([("walk in", "go to shop", "a shop")], 1.0),
    ])


def test_default_pairs_split_success_from_failure(g):
    assert g.action.tolist() == [
        "", "search[mug]", "click[mug A]", "click[buy now]", "click[mug B]", "click[buy now]",
        "search[cup]", "click[back]", "go to shop"]
    pairs = tree_pairs(g)
    # Root: (1 vs 6) and (8 vs 6) split success/failure; (1, 8) both hold a success: no pair.
    # Node 1: 2 holds the success, 4 none. Node 2: 3 vs 7.
    assert [(p.node_id, p.chosen_node, p.rejected_node) for p in pairs] == [
        (0, 1, 6), (0, 8, 6), (1, 2, 4), (2, 3, 7)]
    p = pairs[2]
    assert (p.chosen_value, p.rejected_value, p.chosen_success, p.rejected_success) == (0.5, 0.4, True, False)
    assert p.margin == pytest.approx(0.1)
    assert (p.env, p.task_id, p.tree_id, p.granularity, p.value_kind) == ("shop", "mug", "shop/mug", "step", "data")
    assert p.prompt == [user("buy a mug\nObservation: home page"), asst(SEARCH), user("Observation: results")]
    assert p.chosen == [asst(CLICK_A)] and p.rejected == [asst(CLICK_B)]
    assert pairs[3].prompt == p.prompt + [asst(CLICK_A), user("Observation: item A")]
    assert pairs[0].prompt == [user("buy a mug\nObservation: home page")]


def test_margin_pairs_choose_the_higher_value(g):
    # Values: 1 = 1.4/3, 6 = 0.0, 8 = 1.0; 2 = 0.5, 4 = 0.4; 3 = 1.0, 7 = 0.0.
    got = [(p.node_id, p.chosen_node, p.rejected_node) for p in tree_pairs(g, min_margin=0.3)]
    assert got == [(0, 1, 6), (0, 8, 1), (0, 8, 6), (2, 3, 7)]  # 0.5 vs 0.4 is below 0.3
    got = [(p.node_id, p.chosen_node, p.rejected_node) for p in tree_pairs(g, min_margin=0.05)]
    assert (1, 2, 4) in got and len(got) == 5
    assert all(p.margin >= 0.05 for p in tree_pairs(g, min_margin=0.05))


def test_continuations_follow_best_and_worst_trajectories(g):
    pairs = {(p.chosen_node, p.rejected_node): p
             for p in tree_pairs(g, granularity="continuation", min_margin=0.3)}
    # Chosen 1: its best trajectory (reward 1.0) goes 1-2-3. No trailing observation.
    p = pairs[(1, 6)]
    assert p.chosen == [asst(SEARCH), user("Observation: results"), asst(CLICK_A),
                        user("Observation: item A"), asst(BUY)]
    assert p.rejected == [asst(("maybe a cup", "search[cup]", "cup results"))]
    assert p.granularity == "continuation"
    # Rejected 1 (against 8): its worst trajectory (0.0) goes 1-2-7, although child 2 has the
    # higher mean (0.5 against 4's 0.4).
    p = pairs[(8, 1)]
    assert p.chosen == [asst(("walk in", "go to shop", "a shop"))]
    assert p.rejected == [asst(SEARCH), user("Observation: results"), asst(CLICK_A),
                          user("Observation: item A"), asst(("wrong one", "click[back]", "results"))]


def test_continuation_chosen_is_a_path_that_succeeded():
    """The winning child's higher-mean branch never succeeded: the chosen side must still be the
    successful trajectory, and the rejected side the loser's worst trajectory."""
    open_a = ("look at A", "click[mug A]", "item A")
    open_b = ("look at B", "click[mug B]", "item B")
    g = build_tree([
        traj([SEARCH, open_a, ("buy", "click[buy A]", "bought A")], 0.8),
        traj([SEARCH, open_a, ("buy", "click[buy A]", "bought A")], 0.8),
        traj([SEARCH, open_b, ("buy", "click[buy B]", "bought B")], 1.0, success=True),
        traj([SEARCH, open_b, ("back", "click[back]", "results")], 0.0),
        traj([SEARCH, open_b, ("back", "click[back]", "results")], 0.0),
        traj([("cups", "search[cup]", "cups"), ("pick", "click[cup]", "cup")], 0.2),
        traj([("cups", "search[cup]", "cups"), ("pick", "click[cup]", "cup")], 0.2),
        traj([("cups", "search[cup]", "cups"), ("plate", "click[plate]", "plate")], 0.0),
        traj([("cups", "search[cup]", "cups"), ("plate", "click[plate]", "plate")], 0.6),
    ])
    a, b = (n for n in range(g.n_nodes) if g.action[n] in ("click[mug A]", "click[mug B]"))
    assert g.node_value(a) > g.node_value(b) and g.successes[a] == 0
    (p,) = [p for p in tree_pairs(g, granularity="continuation") if p.node_id == 0]
    assert [m["content"].splitlines()[-1] for m in p.chosen if m["role"] == "assistant"] == [
        "Action: search[mug]", "Action: click[mug B]", "Action: click[buy B]"]
    # The loser's worst trajectory (0.0) is under the child of higher mean (0.3 against 0.2).
    assert [m["content"].splitlines()[-1] for m in p.rejected if m["role"] == "assistant"] == [
        "Action: search[cup]", "Action: click[plate]"]


@pytest.mark.parametrize("granularity", ["step", "continuation"])
def test_pairs_whose_sides_read_the_same_are_dropped(granularity):
    # Same thought and action, different observations: two children under --merge observation.
    g = build_tree([traj([("buy it", "click[buy now]", "bought")], 1.0, success=True),
                    traj([("buy it", "click[buy now]", "sold out")], 0.0)], merge="observation")
    assert len(g.children(0)) == 2
    assert tree_pairs(g, granularity=granularity) == []
    assert tree_pairs(g, granularity=granularity, min_margin=0.5) == []


def test_mcts_values(g):
    with pytest.raises(UserError, match="MCTS"):
        tree_pairs(g, value="mcts")
    run_mcts(g, iterations=500)
    pairs = tree_pairs(g, value="mcts", min_margin=0.0)
    assert pairs and all(p.value_kind == "mcts" for p in pairs)
    for p in pairs:
        assert p.chosen_value == g.node_value(p.chosen_node, "mcts") > p.rejected_value
        assert p.rejected_value == g.node_value(p.rejected_node, "mcts")
    # The success rule does not depend on the values: same pairs as with data values.
    assert [(p.node_id, p.chosen_node, p.rejected_node) for p in tree_pairs(g, value="mcts")] == [
        (p.node_id, p.chosen_node, p.rejected_node) for p in tree_pairs(g)]


def test_bad_arguments(g):
    with pytest.raises(UserError, match="granularity"):
        tree_pairs(g, granularity="token")
    with pytest.raises(UserError, match="value"):
        tree_pairs(g, value="reward")
    with pytest.raises(UserError, match="margin"):
        tree_pairs(g, min_margin=-0.1)


def test_no_branching_no_pairs():
    assert tree_pairs(build_tree([traj([SEARCH, BUY], 1.0), traj([SEARCH], 0.0)])) == []


def test_eto_pairs_weak_baseline():
    wins = [traj([SEARCH, CLICK_A, BUY], 1.0, traj_id=f"w{i}") for i in range(2)]
    losses = [traj([SEARCH, CLICK_B], 0.1 * i, traj_id=f"l{i}") for i in range(3)]
    other = [traj([SEARCH], 0.0, task="cup"), traj([BUY], 0.5, task="cup")]  # no success: no pair
    pairs = eto_pairs(wins + losses + other, mode="weak")
    assert len(pairs) == 6
    p = pairs[0]
    assert p.prompt == [user("buy a mug\nObservation: home page")]
    assert p.chosen == [asst(SEARCH), user("Observation: results"), asst(CLICK_A),
                        user("Observation: item A"), asst(BUY)]
    assert p.rejected == [asst(SEARCH), user("Observation: results"), asst(CLICK_B)]
    assert (p.granularity, p.value_kind, p.tree_id, p.node_id) == ("trajectory", "reward", "", -1)
    assert (p.chosen_value, p.rejected_value, p.chosen_success, p.rejected_success) == (1.0, 0.0, True, False)
    assert sorted((q.chosen_value, q.rejected_value) for q in pairs) == sorted(
        (1.0, 0.1 * i) for i in range(3) for _ in range(2))
    capped = eto_pairs(wins + losses, mode="weak", max_pairs_per_task=2)
    # Round-robin: the two kept pairs use different failures.
    assert [q.rejected_value for q in capped] == [0.0, 0.1]
    assert eto_pairs(wins + losses, mode="weak", max_pairs_per_task=0) == []


def test_eto_pairs_expert_baseline_as_released():
    """As the release's construct_preference.py: the expert against every explored trajectory of
    its task; lower reward -> (expert, explored cut at the expert's length + 5 turns), higher
    reward -> (explored, expert), both whole; equal rewards dropped."""
    expert = traj([SEARCH, CLICK_A, BUY], 0.75, model="expert")
    wander = [(f"t{i}", f"click[page {i}]", f"page {i}") for i in range(10)]
    better = [SEARCH, CLICK_B] + wander + [BUY]  # 13 steps, more than the expert's 3 + 5
    explored = [traj([SEARCH, CLICK_A, BUY], 0.75),  # as good as the expert: dropped
                traj(wander, 0.0),
                traj(better, 1.0, success=True),
                traj([SEARCH, CLICK_B], 0.4),
                traj([BUY], 0.0, task="cup")]  # no expert for this task: no pair
    pairs = eto_pairs(explored, [expert])
    assert [(p.chosen_value, p.rejected_value) for p in pairs] == [(0.75, 0.0), (1.0, 0.75), (0.75, 0.4)]
    whole_expert = [asst(SEARCH), user("Observation: results"), asst(CLICK_A), user("Observation: item A"), asst(BUY)]
    # lower: the expert is chosen and the explored side cut after 3 + 5 assistant turns
    assert pairs[0].chosen == whole_expert
    cut = [m for m in pairs[0].rejected if m["role"] == "assistant"]
    assert len(cut) == 3 + 5 and cut[-1] == asst(wander[7]) and pairs[0].rejected[-1] == cut[-1]
    # higher: roles swapped, the explored trajectory chosen whole (13 turns), the expert rejected whole
    assert [m for m in pairs[1].chosen if m["role"] == "assistant"] == [asst(s) for s in better]
    assert pairs[1].rejected == whole_expert
    assert (pairs[1].chosen_success, pairs[1].rejected_success) == (True, False)
    assert pairs[1].prompt == pairs[0].prompt == [user("buy a mug\nObservation: home page")]
    assert pairs[2].chosen == whole_expert
    assert pairs[2].rejected == [asst(SEARCH), user("Observation: results"), asst(CLICK_B)]
    assert [p.rejected_value for p in eto_pairs(explored, [expert], max_pairs_per_task=1)] == [0.0]
    with pytest.raises(UserError, match="expert trajectories"):
        eto_pairs(explored)
    with pytest.raises(UserError, match="expert or weak"):
        eto_pairs(explored, [expert], mode="best")


def test_eto_pairs_never_pair_identical_sides():
    same = [traj([SEARCH], 1.0, success=True), traj([SEARCH], 0.0)]
    assert eto_pairs(same, mode="weak") == []
