"""Pure dashboard functions: tree layout and caps, tree/icicle figures, escaping, data shaping."""

from __future__ import annotations

import json
import math

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from core.trajectory import Step, Trajectory
from core.tree import build_tree
from dashboard import (
    conversations,
    figures,
    layout,
    result_figures,
    result_tables,
    shaping,
    train_defaults,
    train_shaping,
)


def make_tree(parents: dict[int, int], visits: dict[int, int] | None = None,
              values: dict[int, float] | None = None, best: list[int] | None = None) -> nx.DiGraph:
    """A small tree from {child: parent}; visits default 1, value_sum default 0."""
    g = nx.DiGraph(tree_id="shop/x", env="shop", task_id="x", best_path=best or [])
    ids = [0, *parents]
    for n in ids:
        g.add_node(n, depth=0, action=f"a{n}" if n else "", thoughts=[], observations=[],
                   visits=(visits or {}).get(n, 1), value_sum=(values or {}).get(n, 0.0),
                   successes=0, failures=0, terminal_rewards=[], mcts_visits=0, mcts_value_sum=0.0)
    for c, p in parents.items():
        g.add_edge(p, c)
        g.nodes[c]["depth"] = g.nodes[p]["depth"] + 1
    return g


# root 0 -> 1, 2, 3 ; 1 -> 4, 5 ; 3 -> 6 ; 6 -> 7
PARENTS = {1: 0, 2: 0, 3: 0, 4: 1, 5: 1, 6: 3, 7: 6}


def assert_tidy(view: layout.TreeView) -> None:
    """Parents one row above their children; nodes of one row at least 1 apart; children
    left to right in display order."""
    for i, p in enumerate(view.parents):
        if p >= 0:
            assert view.depth[i] == view.depth[p] + 1
    for d in set(view.depth.tolist()):
        xs = np.sort(view.x[view.depth == d])
        assert np.all(np.diff(xs) >= 1 - 1e-9)
    kids: dict[int, list[int]] = {}
    for i, p in enumerate(view.parents):
        kids.setdefault(p, []).append(i)
    for ks in kids.values():
        assert list(view.x[ks]) == sorted(view.x[ks])


def test_layout_is_a_tidy_top_down_tree():
    g = make_tree(PARENTS)
    view = layout.layout_tree(g)
    assert sorted(view.nodes) == list(range(8))
    assert view.depth[view.index(0)] == 0 and view.depth[view.index(7)] == 3
    assert_tidy(view)
    # insertion order: 1 left of 2 left of 3
    assert view.x[view.index(1)] < view.x[view.index(2)] < view.x[view.index(3)]


def test_layout_of_a_real_built_tree_is_tidy():
    trajs = [Trajectory("shop", "t", "buy", [Step(a) for a in acts], reward=r)
             for acts, r in ((["s", "a", "b"], 1.0), (["s", "a", "c"], 0.0), (["s", "d"], 0.5),
                             (["e"], 0.0), (["s", "a", "b", "f"], 0.2))]
    g = build_tree(trajs).to_networkx()
    view = layout.layout_tree(g)
    assert len(view.nodes) == g.number_of_nodes()
    assert_tidy(view)


def test_children_cap_folds_least_visited_and_keeps_best_path():
    visits = {0: 10, 1: 1, 2: 5, 3: 4, 4: 1, 5: 1, 6: 4, 7: 4}
    g = make_tree(PARENTS, visits=visits)
    nodes, parents, hidden, groups = layout.cap_tree(g, max_children=2)
    # node 0 keeps 2 and 3 (most visits), folds 1 with its subtree (1, 4, 5)
    assert groups == {layout.group_id(0): [1]}
    assert 1 not in nodes and 4 not in nodes
    assert hidden[nodes.index(layout.group_id(0))] == 3
    # cap 1 keeps the most visited child (2) plus the path to node 4 (1, then 4); the rest folds
    nodes, _, _, groups = layout.cap_tree(g, max_children=1, keep=[4])
    assert 1 in nodes and 4 in nodes and 2 in nodes
    assert groups[layout.group_id(0)] == [3]
    assert groups[layout.group_id(1)] == [5]


def test_depth_cap_hides_deeper_nodes_and_counts_them():
    g = make_tree(PARENTS)
    nodes, _, hidden, _ = layout.cap_tree(g, max_depth=1)
    assert sorted(nodes) == [0, 1, 2, 3]
    assert hidden[nodes.index(1)] == 2 and hidden[nodes.index(3)] == 2 and hidden[nodes.index(2)] == 0
    nodes, _, hidden, _ = layout.cap_tree(g, max_depth=1, keep=[7])  # the path to 7 goes on
    assert sorted(nodes) == [0, 1, 2, 3, 6, 7]
    assert hidden[nodes.index(3)] == 0


def test_tree_figure_colours_sizes_and_best_path():
    visits = {0: 4, 1: 2, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1}
    values = {0: 2.0, 1: 1.5, 2: 0.0, 3: 0.5, 4: 1.0, 5: 0.5, 6: 0.5, 7: 0.5}
    g = make_tree(PARENTS, visits, values, best=[1, 4])
    g.nodes[4]["terminal_rewards"] = [1.0]
    g.nodes[5]["terminal_rewards"] = [0.5]
    view = layout.layout_tree(g)
    fig = figures.tree_figure(g, view, "data", selected=5)
    nodes = next(t for t in fig.data if t.name == "nodes")
    ids = list(nodes.customdata)
    assert sorted(ids) == list(range(8))
    colors = dict(zip(ids, nodes.marker.color, strict=True))
    assert colors[0] == pytest.approx(0.5) and colors[1] == pytest.approx(0.75) and colors[2] == 0.0
    sizes = dict(zip(ids, nodes.marker.size, strict=True))
    assert sizes[0] > sizes[1] > sizes[2]  # size grows with visits
    scale = [tuple(c) for c in nodes.marker.colorscale]
    assert scale[0][0] == 0 and scale[-1][0] == 1 and nodes.marker.cmin == 0 and nodes.marker.cmax == 1
    assert scale[0][1] == "rgb(165,0,38)" and scale[-1][1] == "rgb(0,104,55)"  # red 0 ... green 1
    assert list(nodes.text)[ids.index(0)] == "4"  # label = visits
    symbols = dict(zip(ids, nodes.marker.symbol, strict=True))
    assert symbols[4] == "star" and symbols[5] == "x" and symbols[1] == "circle"
    best = next(t for t in fig.data if t.name == "MCTS best path")
    segs = {(best.x[i], best.y[i], best.x[i + 1], best.y[i + 1]) for i in range(0, len(best.x), 3)}
    pos = {n: (view.x[view.index(n)], view.depth[view.index(n)]) for n in (0, 1, 4)}
    assert segs == {(*pos[0], *pos[1]), (*pos[1], *pos[4])}
    assert fig.layout.yaxis.autorange == "reversed"  # root on top
    assert any(t.name == "selected" and list(t.customdata) == [5] for t in fig.data)


def test_mcts_kind_colours_by_q_and_greys_unvisited():
    g = make_tree({1: 0, 2: 0})
    g.nodes[1].update(mcts_visits=4, mcts_value_sum=3.0)
    fig = figures.tree_figure(g, layout.layout_tree(g), "mcts")
    nodes = next(t for t in fig.data if t.name == "nodes")
    colors = dict(zip(nodes.customdata, nodes.marker.color, strict=True))
    assert colors[1] == pytest.approx(0.75)
    grey = next(t for t in fig.data if t.name == "no statistics")
    assert sorted(grey.customdata) == [0, 2]
    assert nodes.marker.colorbar.title.text == "MCTS Q"


def test_hover_text_and_icicle_labels_escape_html():
    g = make_tree({1: 0})
    g.nodes[1]["action"] = "click[<script>alert(1)</script> & <b>x</b>]"
    fig = figures.tree_figure(g, layout.layout_tree(g))
    hover = " ".join(next(t for t in fig.data if t.name == "nodes").hovertext)
    assert "<script>" not in hover and "<b>x" not in hover
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;x&lt;/b&gt;" in hover
    ice = figures.icicle_figure(g)
    assert "<script>" not in json.dumps(list(ice.data[0].labels) + list(ice.data[0].hovertext))
    assert list(ice.data[0].values) == [1, 1] and ice.data[0].branchvalues == "total"


def test_escape_flattens_and_shortens():
    assert shaping.escape("a\n  <i>b</i>", 6) == "a &lt;i&gt;…"
    assert shaping.escape(None) == ""


def test_folded_group_sums_members():
    visits = {0: 9, 1: 5, 2: 3, 3: 1}
    values = {0: 4.0, 1: 2.0, 2: 1.5, 3: 0.5}
    g = make_tree({1: 0, 2: 0, 3: 0}, visits, values)
    view = layout.layout_tree(g, max_children=1)
    gid = layout.group_id(0)
    assert view.groups[gid] == [2, 3]
    assert shaping.node_stats(g, gid, view.groups) == (4, pytest.approx(0.5))
    fig = figures.tree_figure(g, view)
    nodes = next(t for t in fig.data if t.name == "nodes")
    assert dict(zip(nodes.customdata, nodes.marker.symbol, strict=True))[gid] == "square"


def test_node_details_and_leaf_outcome():
    trajs = [Trajectory("shop", "t", "buy", [Step("s", "obs1", "think"), Step("a", "won")], reward=1.0),
             Trajectory("shop", "t", "buy", [Step("s", "obs1", "think"), Step("b", "lost")], reward=0.0),
             Trajectory("shop", "t", "buy", [Step("s", "obs2", "other")], reward=0.0)]
    g = build_tree(trajs).to_networkx()
    s = next(iter(g.successors(0)))
    d = shaping.node_details(g, s)
    assert d["action"] == "s" and d["visits"] == 3 and d["value"] == pytest.approx(1 / 3)
    assert d["thoughts"] == ["think", "other"] and d["observations"] == ["obs1", "obs2"]
    assert (d["successes"], d["failures"], d["children"], d["path"]) == (1, 2, 2, ["s"])
    a, b = sorted(g.successors(s))
    assert shaping.leaf_outcome(g, a) == "success" and shaping.leaf_outcome(g, b) == "failure"
    assert shaping.leaf_outcome(g, s) == "failure"  # the third trajectory stopped here
    assert shaping.node_details(g, b)["path"] == ["s", "b"]
    assert math.isnan(shaping.node_details(g, a)["q"])  # no MCTS yet


def test_first_divergence():
    assert conversations.first_divergence([["a", "b"], ["A ", "c"]]) == 1
    assert conversations.first_divergence([["a", "b"], ["a", "b"]]) is None
    assert conversations.first_divergence([["a", "b"], ["a", "b", "c"]]) == 2  # one ended
    assert conversations.first_divergence([["x"], ["a"], ["a"]]) == 0
    assert conversations.first_divergence([["a"]]) is None


def test_pair_view_marks_the_diverging_message():
    row = {"prompt": json.dumps([{"role": "user", "content": "task"}]),
           "chosen": json.dumps([{"role": "assistant", "content": "Action: a"},
                                 {"role": "user", "content": "Observation: o"},
                                 {"role": "assistant", "content": "Action: win"}]),
           "rejected": json.dumps([{"role": "assistant", "content": "Action: a"},
                                   {"role": "user", "content": "Observation: o"},
                                   {"role": "assistant", "content": "Action: lose"}]),
           "chosen_value": 1.0, "rejected_value": 0.0, "chosen_success": True, "rejected_success": False}
    v = conversations.pair_view(row)
    assert v.diverge == 2 and v.prompt[0]["content"] == "task" and v.chosen_success


def test_task_table_sorts():
    trees = pd.DataFrame({"tree_id": ["e/a", "e/b", "e/c"], "env": "e", "task_id": ["a", "b", "c"],
                          "instruction": "", "n_nodes": [5, 9, 7], "n_trajectories": 4,
                          "n_branching": [3, 1, 2]})
    roots = pd.DataFrame({"tree_id": ["e/a", "e/b", "e/c"], "visits": [4, 4, 4], "successes": [1, 0, 4]})
    assert shaping.task_table(trees, roots, "size")["task_id"].tolist() == ["b", "c", "a"]
    assert shaping.task_table(trees, roots, "branching")["task_id"].tolist() == ["a", "c", "b"]
    t = shaping.task_table(trees, roots, "success rate")
    assert t["task_id"].tolist() == ["c", "a", "b"] and t["success_rate"].tolist() == [1.0, 0.25, 0.0]
    # only a (1 success of 4) holds both outcomes: first by default, then the rest by size
    assert shaping.task_table(trees, roots)["task_id"].tolist() == ["a", "b", "c"]
    assert shaping.task_table(trees, roots, "size", both_only=True)["task_id"].tolist() == ["a"]
    assert list(shaping.TASK_SORTS)[0] == "both outcomes first"


def test_method_table():
    res = pd.DataFrame([
        {"experiment_id": "x", "env": "shop", "method": "sft-weak", "model": "w", "seed": 0,
         "trajs_per_task": 4, "avg_reward": 0.2, "success_rate": 0.1},
        {"experiment_id": "x", "env": "shop", "method": "sft-weak", "model": "w", "seed": 1,
         "trajs_per_task": 4, "avg_reward": 0.4, "success_rate": 0.3},
        {"experiment_id": "x", "env": "shop", "method": "treedpo", "model": "t", "seed": 0,
         "trajs_per_task": 2, "avg_reward": 0.5, "success_rate": 0.5},
        {"experiment_id": "x", "env": "shop", "method": "treedpo", "model": "t", "seed": 0,
         "trajs_per_task": 4, "avg_reward": 0.7, "success_rate": 0.6},
    ])
    table = result_figures.method_stat_cells(res)
    assert table.index.tolist() == ["sft-weak", "treedpo"]
    assert table.loc["sft-weak", "shop reward"] == "0.300 ± 0.141"  # sample std of 0.2 and 0.4
    assert table.loc["treedpo", "shop success"] == "0.600 (1 seed)"  # largest setting only, one seed
    assert result_tables.untrained_methods(res) == []


def test_a_method_without_training_data_shows_no_data():
    rows = [{"experiment_id": "x", "env": "shop", "method": m, "model": "s", "seed": 0, "trajs_per_task": k,
             "avg_reward": 0.4, "success_rate": 0.2, "n_examples": n}
            for m, n in (("sft-strong", 50), ("treedpo", 0), ("mcts", None)) for k in (2, 4)]
    res = pd.DataFrame(rows).astype({"n_examples": "Int32"})  # as the store returns it
    assert result_tables.untrained_methods(res) == ["treedpo"]  # NA is "not recorded", not zero
    cells = result_figures.method_stat_cells(res)
    assert cells.loc["treedpo"].tolist() == ["no data", "no data"]
    assert cells.loc["sft-strong"].tolist() == ["0.400 (1 seed)", "0.200 (1 seed)"] == cells.loc["mcts"].tolist()


def test_score_curves_carry_the_last_score_forward():
    steps = pd.DataFrame({"model": ["m", "m", "m", "m", "m"], "traj_id": ["a", "a", "a", "b", "b"],
                          "idx": [0, 1, 2, 0, 1], "score": [10.0, 20.0, 50.0, 0.0, 30.0]})
    c = result_tables.score_curves(steps)
    assert c["step"].tolist() == [1, 2, 3]
    assert c["score"].tolist() == pytest.approx([5.0, 25.0, 40.0])  # b keeps 30 at step 3


def test_default_compare_models_follow_figure_5():
    # a results row names its method by the table's name or label (core.methods.find), any case
    res = pd.DataFrame({"method": ["SFT-weak", "TreeDPO", "mcts", "sft-STRONG"],
                        "model": ["w", "t", "m", "s"], "created_at": pd.Timestamp("2026-01-01")})
    assert conversations.default_compare_models(["m", "s", "t", "w", "z"], res) == ["w", "s", "t", "m"]
    assert conversations.default_compare_models(["a", "b"], res.iloc[:0]) == ["a", "b"]
    # the pipeline's eval labels, results naming the registered models instead
    res = pd.DataFrame({"method": ["SFT-weak", "TreeDPO"], "model": ["shop-sft-weak-s0", "shop-treedpo-s0"],
                        "created_at": pd.Timestamp("2026-01-01")})
    labels = ["eto-dpo", "mcts", "sft-strong", "sft-weak", "treedpo", "w2s-sft"]
    assert conversations.default_compare_models(labels, res) == ["sft-weak", "sft-strong", "treedpo", "mcts"]


def test_default_caps_keep_a_big_tree_small_and_tidy():
    # a complete 5-ary tree of depth 5: 3906 nodes
    parents, frontier, n = {}, [0], 1
    for _ in range(5):
        nxt = []
        for p in frontier:
            for _ in range(5):
                parents[n] = p
                nxt.append(n)
                n += 1
        frontier = nxt
    g = make_tree(parents)
    assert g.number_of_nodes() == 3906 and layout.default_caps(3906) == (8, 3)
    view = layout.layout_tree(g, *layout.default_caps(3906))
    # 3 children kept per node: 1 + 3 + 9 + 27 + 81 + 243 nodes, one group under each inner node
    assert len(view.nodes) == 364 + 121 and len(view.groups) == 121
    assert view.hidden[view.index(layout.group_id(0))] == 2 * 781  # two folded depth-1 subtrees
    assert_tidy(view)
    fig = figures.tree_figure(g, view)
    assert next(t for t in fig.data if t.name == "nodes").text is None  # no labels at this size


def test_training_helpers():
    assert train_shaping.data_spec("pairs", "shop", "step") == "pairs:shop:step"
    assert train_shaping.data_spec("pairs", "shop", "continuation", tasks=50, min_margin=0.25) == \
        "pairs:shop:continuation?tasks=50&min_margin=0.25"
    assert train_shaping.data_spec("successes", "sciworld", "weak-sft") == "successes:sciworld:weak-sft"
    assert train_shaping.data_spec("best-paths", "shop", "ignored", tasks=3) == "best-paths:shop?tasks=3"
    assert train_shaping.duration(3725) == "1h 02m" and train_shaping.duration(185) == "3m 05s"
    assert train_shaping.duration(None) == "–"
    assert train_shaping.progress_text({"status": "running", "step": 5, "max_steps": 20, "eta_s": 75}) == \
        "running · step 5 / 20 · ETA 1m 15s"
    assert train_shaping.progress_text({"status": "stopped", "step": 5, "max_steps": 20}) == "stopped · step 5 / 20"
    assert train_shaping.gpu_memory("1024, 81559\n 30, 81559 \n[N/A], 1\n") == [(1024, 81559), (30, 81559)]
    assert train_shaping.dpo_metric_names(["loss", "rewards/margins", "rewards/accuracies", "rewards/chosen"]) == \
        (["rewards/chosen", "rewards/margins"], ["rewards/accuracies"])


def test_plain_makes_markdown_literal():
    from dashboard.ui import plain

    wj = "\u2060"  # an invisible word joiner: no autolink
    assert plain("m*1* [x](http://e.f) <i> a@b & :red[c] www.x") == \
        rf"m\*1\* \[x\]\(http{wj}\://e\.f\) \<i\> a{wj}\@b \& {wj}\:red\[c\] www{wj}\.x"


def test_source_table_and_exploration_health(store):
    """Rates per source from a real store; evaluation one row per model, never blended."""
    def ep(env: str, n: int, reward: float, invalid: int | None = None, **kw) -> Trajectory:
        meta = {} if invalid is None else {"n_invalid": invalid}
        return Trajectory(env, "t", "do", [Step(f"a{i}", "o") for i in range(n)], reward=reward, meta=meta, **kw)

    store.add_trajectories([
        ep("shop", 6, 1.0, 2, model="weak"), ep("shop", 4, 0.0, 4, model="weak"), ep("shop", 5, 0.5, model="weak"),
        ep("shop", 3, 1.0, model="sft", source="eval"), ep("shop", 3, 0.0, model="sft", source="eval"),
        ep("shop", 2, 1.0, model="dpo", source="eval"), ep("shop", 4, 1.0, model="expert"),
        ep("sci", 4, 0.0, model="weak")])
    by_source = store.source_summary()
    table = shaping.source_table(by_source)
    assert table.columns.tolist() == ["env", "source", "model", "episodes", "success rate", "mean reward",
                                      "mean length"]
    assert table[["env", "source", "model"]].values.tolist() == [
        ["sci", "exploration", ""], ["shop", "expert demonstrations", ""], ["shop", "exploration", ""],
        ["shop", "evaluation", "dpo"], ["shop", "evaluation", "sft"]]
    shop = table[table["env"] == "shop"].set_index(["source", "model"])
    assert shop.loc[("evaluation", "sft"), "success rate"] == 0.5  # not 2/3 over both models
    assert shop.loc[("evaluation", "dpo"), "success rate"] == 1.0
    assert shop.loc[("exploration", ""), "mean reward"] == pytest.approx(0.5)
    assert shop.loc[("exploration", ""), "mean length"] == 5.0
    assert store.source_summary(env="sci")["episodes"].tolist() == [1]
    outcomes = pd.DataFrame({"env": ["shop"], "trees": [5], "both_outcomes": [2]})
    h = shaping.exploration_health(by_source, outcomes, "shop")
    assert h["valid_action_rate"] == pytest.approx(1 - 6 / 10)  # over the steps that were checked
    assert h["mean_length"] == 5.0 and h["success_rate"] == pytest.approx(1 / 3)
    assert (h["both_outcomes"], h["trees"]) == (2, 5)
    sci = shaping.exploration_health(by_source, outcomes, "sci")
    assert math.isnan(sci["valid_action_rate"]) and sci["trees"] == 0  # imported: nothing recorded
    assert shaping.percent(sci["valid_action_rate"]) == "–"


def _tree(q_by_node: dict[int, tuple[int, float]], edges: list[tuple[int, int]], best: list[int]) -> nx.DiGraph:
    """A tree with MCTS (visits, Q) per node and a best path."""
    g = nx.DiGraph(best_path=best)
    for n, (v, q) in q_by_node.items():
        g.add_node(n, depth=0, action=f"a{n}", mcts_visits=v, mcts_value_sum=v * q, visits=1, value_sum=0.0)
    g.add_edges_from(edges)
    return g


def test_best_path_ties_are_named():
    edges = [(0, 1), (0, 2), (1, 3), (1, 4)]
    flat = _tree({0: (8, 0.0), 1: (4, 0.0), 2: (4, 0.0), 3: (2, 0.0), 4: (2, 0.0)}, edges, [0, 1, 3])
    assert shaping.best_path_ties(flat) == (2, 2)
    assert "tie-break" in shaping.tie_note(2, 2) and "every step" in shaping.tie_note(2, 2)
    mixed = _tree({0: (8, 0.5), 1: (4, 0.9), 2: (4, 0.1), 3: (2, 0.5), 4: (2, 0.5)}, edges, [0, 1, 3])
    assert shaping.best_path_ties(mixed) == (1, 2) and shaping.tie_note(1, 2).startswith("1 of")
    clear = _tree({0: (8, 0.5), 1: (4, 0.9), 2: (4, 0.1), 3: (2, 1.0), 4: (0, 0.0)}, edges, [0, 1, 3])
    assert shaping.best_path_ties(clear) == (0, 2) and shaping.tie_note(0, 2) is None  # 4 unvisited


def test_selected_node_from_tree_marker_or_icicle_cell():
    assert shaping.selected_node({"selection": {"points": [{"customdata": [7], "x": 1}]}}) == 7
    assert shaping.selected_node({"selection": {"points": [{"customdata": -3}]}}) == -3  # a folded group
    assert shaping.selected_node({"selection": {"points": [{"id": "12", "label": "click[x]"}]}}) == 12
    assert shaping.selected_node({"selection": {"points": []}}) is None
    assert shaping.selected_node(None) is None


def test_node_picker_of_a_big_tree_holds_the_drawn_nodes_only():
    g = nx.balanced_tree(5, 5, create_using=nx.DiGraph)  # 3906 nodes
    view = layout.layout_tree(g, *layout.default_caps(g.number_of_nodes()))
    deep = max(g.nodes)  # not drawn under the caps
    options = shaping.node_options(g, view.nodes, deep)
    assert len(options) <= 400 < g.number_of_nodes()
    assert set(nx.shortest_path(g, 0, deep)) <= set(options)  # the selection and its path stay
    assert set(options) - set(nx.shortest_path(g, 0, deep)) <= set(view.nodes)
    small = nx.balanced_tree(2, 3, create_using=nx.DiGraph)
    assert shaping.node_options(small, list(small.nodes), 0) == sorted(small.nodes)


def test_tree_legend_is_below_the_plot_clear_of_the_toolbar():
    g = nx.balanced_tree(2, 2, create_using=nx.DiGraph)
    for n in g:
        g.nodes[n].update(depth=0, action=f"a{n}", visits=1, value_sum=0.0)
    fig = figures.tree_figure(g, layout.layout_tree(g))
    assert fig.layout.legend.yanchor == "top" and fig.layout.legend.y <= 0  # the modebar is top-right


def test_true_value_colouring_and_node_details():
    g = make_tree({1: 0, 2: 0, 3: 0}, visits={0: 3, 1: 1, 2: 1, 3: 1})
    assert shaping.stat_kinds(g) == ["data", "mcts"]  # no oracle values: no "true" colouring
    for n, (v, s) in {0: (1.0, 4), 1: (1.0, 3), 2: (0.0, None)}.items():
        g.nodes[n].update(true_value=v, true_steps=s)
    assert shaping.stat_kinds(g) == ["data", "mcts", "true"]
    assert shaping.node_stats(g, 1, kind="true") == (1, 1.0)
    assert math.isnan(shaping.node_stats(g, 3, kind="true")[1])  # unknown
    view = layout.layout_tree(g, max_children=1)
    gid = layout.group_id(0)
    assert view.groups[gid] == [2, 3]
    assert shaping.node_stats(g, gid, view.groups, "true") == (2, 0.0)  # the mean of the known member
    d = shaping.node_details(g, 2)
    assert (d["true_value"], d["true_steps"]) == (0.0, None)
    assert shaping.node_details(g, 0)["true_steps"] == 4
    fig = figures.tree_figure(g, view, kind="true")
    nodes = next(t for t in fig.data if t.name == "nodes")
    colours = dict(zip(nodes.customdata, nodes.marker.color, strict=True))
    assert (colours[0], colours[1], colours[gid]) == (1.0, 1.0, 0.0)
    assert nodes.marker.colorbar.title.text == "true value"
    hover = dict(zip(nodes.customdata, nodes.hovertext, strict=True))
    assert "true value 1.00 · expert 3 steps from here" in hover[1]
    assert "steps from here" not in hover[gid]  # a folded group has no expert of its own
    icicle = figures.icicle_figure(g, kind="true")
    assert list(icicle.data[0].marker.colors) == [1.0, 1.0, 0.0, 0.0]  # unknown drawn as 0


def test_task_label_counts_in_the_singular_and_plural():
    row = {"task_id": "t7", "n_nodes": 1, "n_branching": 1, "success_rate": 0.5, "instruction": "buy a lamp"}
    assert shaping.task_label(row) == "t7 · 1 node · 50% success · 1 branch · buy a lamp"
    assert shaping.task_label({**row, "n_nodes": 12, "n_branching": 3}).startswith("t7 · 12 nodes · 50% success · 3 branches")


def test_tree_pairs_come_first_and_the_caption_counts_the_shared_turns():
    pairs = pd.DataFrame({"pair_id": ["e1", "c1", "s2", "s1"], "env": ["shop"] * 4,
                          "task_id": ["t1", "t1", "t2", "t1"], "node_id": [-1, 2, 0, 3],
                          "granularity": ["trajectory", "continuation", "step", "step"]})
    assert conversations.tree_pairs_first(pairs)["pair_id"].tolist() == ["s1", "s2", "c1", "e1"]
    assert conversations.tree_pairs_first(pairs.iloc[:0]).empty
    assert conversations.pair_scope(-1, 1) == "whole trajectories: they share only the task's opening (1 turn)"
    assert conversations.pair_scope(4, 7) == "cut at node 4: both sides continue the same 7 turns"


def test_train_form_defaults_come_from_the_pipeline_scale_field_of_the_training():
    assert [train_defaults.scale_field(k, s, w) for k, s, w in (
        ("treedpo", "pairs", False), ("eto-dpo", "pairs", True), ("mcts", "best-paths", False),
        ("sft", "successes", False), ("sft", "expert", True), ("sft", "expert", False))] == [
        "dpo", "dpo", "mcts_sft", "w2s_sft", "sft_weak", "sft_strong"]
    models = pd.DataFrame({"name": ["shop-weak", "shop-strong", "sft-weak", "sft-strong"],
                           "role": ["weak", "strong", "sft", "sft"],
                           "base": ["", "", "shop-weak", "shop-strong"]})
    assert train_defaults.weak_models(models) == {"shop-weak", "sft-weak"}
    assert train_defaults.example_caption(1, False, None, "m") == "1 training example (one training row each)"
    assert train_defaults.example_caption(3200, True, 15136, "m").startswith(
        "3,200 training examples → 15,136 training rows as the trainer sees them (m is prompted one decision")
    assert train_defaults.example_caption(5, True, None, "m").endswith("(counted when the job starts)")


def test_the_root_note_explains_its_empty_mcts_statistics():
    g = make_tree({1: 0, 2: 0})
    assert shaping.root_mcts_note(g, 0) is None  # no MCTS yet: nothing to explain
    g.graph["mcts_iterations"] = 50
    assert "backs up every node of an iteration's path except the root" in shaping.root_mcts_note(g, 0)
    assert shaping.root_mcts_note(g, 1) is None
    g.nodes[0]["mcts_visits"] = 50  # a rule that backs the root up (early-release): nothing to explain
    assert shaping.root_mcts_note(g, 0) is None
