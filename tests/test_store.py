"""Store basics: round trips of trajectories and trees, schema version, change counter."""

import networkx as nx

from core.store import SCHEMA_VERSION, Store
from core.trajectory import Step, Trajectory


def test_trajectory_round_trip(store: Store):
    t = Trajectory(env="shop", task_id="7", instruction="buy", reward=0.5,
                   steps=[Step("search[x]", "results", "look", 0.0), Step("click[y]", "item", "", 0.5, 12.0)])
    before = store.changes()
    store.add_trajectories([t])
    assert store.changes() == before + 1
    (back,) = store.trajectories(env="shop")
    assert back.steps == t.steps and back.reward == 0.5 and back.success is False
    assert store.schema_version() == SCHEMA_VERSION


def test_tree_round_trip(store: Store):
    g = nx.DiGraph(tree_id="shop/7", env="shop", task_id="7", best_path=[0, 1])
    g.add_node(0, depth=0, action="", visits=2, value_sum=1.0, successes=1, failures=1)
    g.add_node(1, depth=1, action="a", visits=2, value_sum=1.0, successes=1, failures=1,
               terminal_rewards=[1.0, 0.0], traj_ids=["x", "y"], mcts_visits=3, mcts_value_sum=1.5)
    g.add_edge(0, 1)
    store.save_trees([g])
    back = store.load_tree("shop/7")
    assert list(back.edges) == [(0, 1)]
    assert back.nodes[1]["terminal_rewards"] == [1.0, 0.0]
    assert back.nodes[1]["mcts_value_sum"] == 1.5
    assert back.graph["best_path"] == [0, 1]
    store.save_trees([g])  # rebuilding replaces, never duplicates
    assert len(store.query("SELECT * FROM nodes")) == 2
