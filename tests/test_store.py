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
    back = store.load_tree("shop/7").to_networkx()
    assert list(back.edges) == [(0, 1)]
    assert back.nodes[1]["terminal_rewards"] == [1.0, 0.0]
    assert back.nodes[1]["mcts_value_sum"] == 1.5
    assert back.graph["best_path"] == [0, 1]
    store.save_trees([g])  # rebuilding replaces, never duplicates
    assert len(store.query("SELECT * FROM nodes")) == 2


def test_tree_keeps_initial_observation(store: Store):
    g = nx.DiGraph(tree_id="shop/8", env="shop", task_id="8", instruction="buy",
                   initial_observation="WebShop [SEP] Search")
    g.add_node(0, depth=0, action="", visits=1, value_sum=1.0, successes=1, failures=0)
    store.save_trees([g])
    assert store.load_tree("shop/8").initial_observation == "WebShop [SEP] Search"


def test_migration_over_a_column_that_already_exists(tmp_path):
    """A store that a development build gave a later version's column, under an older version
    number, still migrates (ADD COLUMN IF NOT EXISTS) and keeps its rows."""
    import duckdb

    path = tmp_path / "dev.duckdb"
    Store(path).add_results([dict(experiment_id="e", env="shop", method="SFT-weak", model="m", seed=0,
                                  trajs_per_task=4, avg_reward=0.5, success_rate=0.2, run_id="run-1")])
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")  # run_id is v4's column
    con.close()
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store.results()["run_id"].tolist() == ["run-1"]


def test_migration_from_v1(tmp_path):
    """A store written by schema 1 (no trees.initial_observation) opens, migrates and loads."""
    import duckdb

    from core.store import MIGRATIONS

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(MIGRATIONS[0])
    con.execute("INSERT INTO meta VALUES ('schema_version', '1'), ('changes', '0')")
    con.execute("INSERT INTO trees (tree_id, env, task_id, instruction, merge, settings, n_trajectories, "
                "n_nodes, n_branching, mcts_iterations, mcts_c, best_path) "
                "VALUES ('shop/1', 'shop', '1', 'buy', 'action', '{}', 1, 1, 0, 0, 0, [])")
    con.execute("INSERT INTO nodes (tree_id, node_id, depth, action, visits, value_sum, successes, "
                "failures, mcts_visits, mcts_value_sum) VALUES ('shop/1', 0, 0, '', 1, 1.0, 1, 0, 0, 0)")
    con.close()
    store = Store(path)
    assert store.schema_version() == SCHEMA_VERSION == 6
    assert "run_id" in store.results().columns  # v4: result rows name their eval run
    assert "folder_state" in store.jobs().columns  # v5: job rows keep their folder's state
    g = store.load_tree("shop/1").to_networkx()
    assert g.graph["initial_observation"] == "" and g.nodes[0]["visits"] == 1
    assert g.graph["version"] == 1  # v3: trees written before versions count as version 1
    assert g.nodes[0]["true_value"] is None and g.nodes[0]["true_steps"] is None  # v6: no oracle yet
