"""The state merge (core.state_merge) on the real shop: two searches that show the same results
page become one node, so the decision below them (which product) gets a pair; every spliced path
replays to its stored reward; an env without a state key is refused in one line."""

from __future__ import annotations

import pytest

from core import stages
from core.envs.base import StepResult, make_env
from core.errors import UserError
from core.explore import ExploreSpec, explore
from core.pipeline import Scale, training_files
from core.state_merge import SPLICE, StatePaths, replay, unfold
from core.trajectory import Step, Trajectory
from core.work import Reporter

ENV = "tinyshop"


def play(env, task: str, actions: list[str], traj_id: str) -> Trajectory:
    """A stored-like episode of `actions` played in `env`."""
    obs0, instruction = env.reset(task)
    steps, reward = [], 0.0
    for a in actions:
        res = env.step(a)
        steps.append(Step(action=a, observation=res.observation, thought=f"about {a}", reward=res.reward))
        reward = res.reward
    return Trajectory(env=ENV, task_id=task, instruction=instruction, steps=steps, reward=reward,
                      model="weak", meta={"initial_observation": obs0, "sampling": "greedy"}, traj_id=traj_id)


@pytest.fixture(scope="module")
def episodes() -> tuple[list[Trajectory], str, str]:
    """Episode A: the expert's winning plan. Episode B: the same search words in another order
    (the same results page), then another product of that page, bought at once: it fails."""
    env = make_env(ENV)
    task = env.tasks("train")[0].task_id
    plan = [s.action for s in env.expert(task)]
    query = plan[0][len("search["):-1].split()
    other_query = f"search[{' '.join(reversed(query))}]"
    env.reset(task)
    env.step(plan[0])
    pick = plan[1]
    other = next(a for a in env.valid_actions() if a.startswith("click[b0") and a != pick.lower())
    a = play(env, task, plan, "t-a")
    b = play(env, task, [other_query, other, "click[buy now]"], "t-b")
    env.close()
    assert a.reward == 1.0 and b.reward < 1.0
    return [a, b], plan[1], other


def test_shop_state_key_reads_the_page_the_product_and_the_options() -> None:
    env = make_env(ENV)
    task = env.tasks("train")[0].task_id
    plan = [s.action for s in env.expert(task)]
    env.reset(task)
    keys = []
    for a in plan[:-1]:
        env.step(a)
        keys.append(env.state_key())
    assert keys[0].startswith("results|") and keys[1].startswith("item|")
    assert len(set(keys)) == len(keys)  # every step changed the state (an option click too)
    env.step("click[description]")
    assert env.state_key().startswith("detail|")
    env.step("click[< prev]")
    assert env.state_key() == keys[-1]  # back on the item page, the tab read is no part of it
    env.close()


def test_action_tree_pairs_the_two_equivalent_searches(episodes) -> None:
    trajs, _, _ = episodes
    pairs = stages.cut_pairs(stages.grow_trees(trajs), stages.PairSettings("step"))
    assert [len(p.prompt) for p in pairs] == [1]  # cut at the root: two searches, one result page


def test_state_merge_moves_the_pair_to_the_product_choice(episodes) -> None:
    trajs, pick, other = episodes
    unfolded = unfold(trajs)
    assert (unfolded.spliced, unfolded.merged, unfolded.dropped) == (1, 1, 0)
    paths = unfolded.paths
    assert isinstance(paths, StatePaths) and [t.traj_id for t in paths][0] == "t-a"
    spliced = paths[1]
    assert spliced.source == SPLICE and spliced.meta["spliced_from"] == ["t-a", "t-b"]
    assert spliced.actions == [trajs[0].actions[0], other, "click[buy now]"]  # A's search, B's choice
    assert spliced.reward == trajs[1].reward and spliced.meta["initial_observation"] == trajs[0].meta[
        "initial_observation"] and "sampling" not in spliced.meta
    tree = stages.grow_trees(paths, stages.TreeSettings("state"))[0]
    assert tree.merge == "state" and len(tree.children(0)) == 1
    pairs = stages.cut_pairs([tree], stages.PairSettings("step"))
    assert len(pairs) == 1 and len(pairs[0].prompt) == 3  # task message, the search, its results
    assert pick in pairs[0].chosen[0]["content"] and other in pairs[0].rejected[0]["content"]
    # raw episodes give the same tree: grow_trees unfolds them itself
    assert stages.grow_trees(trajs, stages.TreeSettings("state"))[0].n_nodes == tree.n_nodes


def test_every_spliced_path_replays_to_its_reward(episodes) -> None:
    trajs, _, _ = episodes
    env = make_env(ENV)
    for t in unfold(trajs).new:
        assert replay(env, t) is not None  # every stored observation and the reward reproduced
        env.reset(t.task_id)
        assert [env.step(a) for a in t.actions][-1].reward == t.reward
    env.close()


def test_a_spliced_path_that_does_not_replay_is_left_out(episodes) -> None:
    """The shop's key leaves out the results list behind an item page: A opens X from one search,
    goes back and buys Y; B opens X from another search (X's own title) and buys it. Their item
    pages merge; B's search then A's `< Prev` would show B's results, not A's: that path is left
    out, A's search then B's purchase is kept."""
    (a, _), pick, _ = episodes
    env = make_env(ENV)
    task, x = a.task_id, pick.lower()
    env.reset(task)
    env.step(a.actions[0])
    y = next(v for v in env.valid_actions() if v.startswith("click[b0") and v != x)
    first = play(env, task, [a.actions[0], x, "click[< prev]", y, "click[buy now]"], "t-first")
    env.reset(task)
    env.step(a.actions[0])
    title = env.step(x).observation.split(" [SEP] ")[-7]  # the item page: ... title, price, rating, tabs, Buy Now
    second = play(env, task, [f"search[{title.lower()}]", x, "click[buy now]"], "t-second")
    env.close()
    assert first.steps[0].observation != second.steps[0].observation  # two result pages
    unfolded = unfold([first, second])
    assert (unfolded.spliced, unfolded.dropped) == (1, 1)
    assert unfolded.new[0].actions == [a.actions[0], x, "click[buy now]"]
    assert unfolded.new[0].reward == second.reward


def test_an_episode_that_does_not_replay_is_refused(episodes) -> None:
    a, b = episodes[0]
    wrong = Trajectory(**{**b.__dict__, "traj_id": "t-wrong", "steps": list(b.steps)})
    wrong.steps[-1] = Step(action=b.steps[-1].action, observation="Thank you [SEP] 0.99")
    with pytest.raises(UserError, match="t-wrong .*does not replay"):
        unfold([a, wrong])


def test_store_keeps_spliced_paths_once_and_plain_trees_leave_them_out(store, episodes) -> None:
    trajs, _, _ = episodes
    store.add_trajectories(trajs)
    settings = stages.TreeSettings("state")
    for _ in range(2):  # rebuilding stores nothing twice: a spliced path's id is its steps' digest
        assert stages.grow_trees_stored(store, settings)[:3:2] == (1, 2)
    assert [t.traj_id for t in store.trajectories(source=SPLICE)] == [unfold(trajs).new[0].traj_id]
    tree = store.load_trees()[0]
    assert sorted(map(str, tree.traj_ids)) == sorted(["t-a", unfold(trajs).new[0].traj_id])
    n_trees, n_nodes, n_trajs = stages.grow_trees_stored(store, stages.TreeSettings("action"))
    assert n_trajs == 2 and store.load_trees()[0].merge == "action"  # the played episodes only


def test_an_env_without_a_state_key_is_refused_in_one_line() -> None:
    class Keyless:
        def reset(self, task_id):
            return "", ""

        def step(self, action):
            return StepResult("x", 0.0, False, {})

        def same_observation(self, stored, replayed):
            return True

        def state_key(self):
            return None

    t = Trajectory(env="keyless", task_id="t", instruction="", steps=[Step("go", "x")], reward=0.0)
    with pytest.raises(UserError, match="env 'keyless' exposes no state key.*--merge action"):
        replay(Keyless(), t)


def test_exploring_a_state_tree_rebuilds_it_as_all_its_episodes_would(store, episodes) -> None:
    trajs, _, _ = episodes
    store.add_trajectories(trajs)
    stages.grow_trees_stored(store, stages.TreeSettings("state"))
    res = explore(store, ExploreSpec(ENV, trajs[0].task_id, node=1, policy="random", k=3, seed=0, max_steps=3))
    tree = store.load_trees()[0]
    assert tree.merge == "state" and len(res.traj_ids) == 3
    stored = {t.traj_id for t in store.trajectories()}
    assert set(map(str, tree.traj_ids)) <= stored  # every path of the tree is a stored trajectory
    episodes_now = [t for t in store.trajectories() if t.source != SPLICE]
    rebuilt = stages.grow_trees(episodes_now, stages.TreeSettings("state"))[0]
    assert [str(a) for a in rebuilt.action] == [str(a) for a in tree.action]


@pytest.mark.slow
def test_pipeline_state_merge_with_growth_builds_the_trees_of_all_episodes(store, noisy_shop, tmp_path) -> None:
    explored, experts = noisy_shop
    cfg = Scale(name="t", mcts_iterations=50, max_steps=8, grow_budget=8, grow_rule="pair-check", merge="state")
    training_files(store, cfg, explored, experts, 0, tmp_path, Reporter(None), save=True, explorer="noisy-expert")
    grown = store.trajectories(source="explore")
    assert len(grown) == 8
    trees = store.load_trees(env="shop")
    assert {g.merge for g in trees} == {"state"}
    assert {str(t) for g in trees for t in g.traj_ids} <= {t.traj_id for t in store.trajectories()}
    rebuilt = stages.grow_trees(explored + grown, stages.TreeSettings("state"))
    assert sorted(g.n_nodes for g in rebuilt) == sorted(g.n_nodes for g in trees)
