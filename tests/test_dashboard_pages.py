"""Every dashboard page under streamlit.testing.v1.AppTest, on an empty store and on a store
filled here through the Store API (synthetic shop trajectories merged by core.tree, MCTS and
pairs, evaluation episodes of four models, ScienceWorld-style scored episodes, results)."""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.jobs import job_status
from core.mcts import run_mcts
from core.pairs import tree_pairs
from core.scales import SCALES
from core.store import Store
from core.trajectory import Run, Step, Task, Trajectory
from core.tree import build_trees
from core.tree_data import NO_STEPS

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
PAGES = ("views/overview.py", "views/trees.py", "views/pairs.py", "views/train.py",
         "views/compare.py", "views/results.py")
XSS = "<script>alert('x')</script>"

# (actions, final reward) per task: shared prefixes make branching trees.
EPISODES = {
    "t1": [(["search[red shoes]", "click[item a]", "click[buy now]"], 1.0),
           (["search[red shoes]", "click[item b]", "click[buy now]"], 0.4),
           (["search[red shoes]", "click[item a]", "click[back]", "click[buy now]"], 0.0),
           (["search[blue shoes]", "click[item c]", "click[buy now]"], 0.2)],
    "t2": [(["search[lamp]", "click[item d]", "click[buy now]"], 1.0),
           (["search[lamp]", "click[item e]"], 0.0)],
}


def episode(task: str, actions: list[str], reward: float, **kw) -> Trajectory:
    steps = [Step(action=a, thought=f"I think {a} helps", observation=f"page after {a} {XSS}",
                  reward=reward if i == len(actions) - 1 else 0.0)
             for i, a in enumerate(actions)]
    return Trajectory("shop", task, f"buy something for {task}", steps, reward=reward, **kw)


def fill_store(store: Store) -> None:
    """A small but complete store: every page has something to show."""
    store.upsert_tasks([Task("shop", t, "train", f"buy something for {t}") for t in EPISODES]
                       + [Task("sciworld", "boil-0", "test", "boil water")])
    store.add_run(Run("run-collect", "collect", "shop", "weak", "weak-sft"), status="finished")
    trajs = [episode(t, a, r, model="weak-sft", run_id="run-collect")
             for t, eps in EPISODES.items() for a, r in eps]
    store.add_trajectories(trajs)
    trees = build_trees(trajs)
    for g in trees:
        run_mcts(g, iterations=50)
    store.save_trees(trees)
    pairs = [p for g in trees for gran in ("step", "continuation") for p in tree_pairs(g, gran)]
    store.save_pairs(pairs)
    models = {"sft-weak": "weak-sft", "sft-strong": "strong-sft", "treedpo": "strong-treedpo",
              "mcts": "strong-mcts"}
    evals = [episode("t1", a, r, model=m, source="eval") for (a, r), m in
             zip(EPISODES["t1"], models.values(), strict=True)]
    sci = [Trajectory("sciworld", "boil-0", "boil water",
                      [Step(f"act {i}", "obs", score=s) for i, s in enumerate(scores)],
                      reward=scores[-1] / 100, source="eval", model=m)
           for m, scores in (("weak-sft", [0, 10, 10]), ("strong-treedpo", [10, 40, 70, 100]))]
    other = episode("t2", *EPISODES["t2"][0], model="strong-w2s", source="eval")  # on t2 only
    store.add_trajectories([*evals, *sci, other])
    for name in models.values():
        store.register_model(name, f"/models/{name}", role="strong" if "strong" in name else "weak")
    store.add_results([
        {"experiment_id": "exp-1", "env": "shop", "method": meth, "model": mod, "seed": 0,
         "trajs_per_task": n, "avg_reward": 0.2 + 0.1 * i + 0.05 * n, "success_rate": 0.1 * i}
        for i, (meth, mod) in enumerate(models.items()) for n in (2, 4)
    ] + [  # no training data: the pipeline stores the unchanged starting model's numbers
        {"experiment_id": "exp-1", "env": "shop", "method": "eto-dpo", "model": "strong-sft", "seed": 0,
         "trajs_per_task": n, "avg_reward": 0.3 + 0.05 * n, "success_rate": 0.1, "n_examples": 0}
        for n in (2, 4)
    ])


@pytest.fixture
def filled(store):
    fill_store(store)
    return store


def run_page(page: str, **query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    if page != "views/overview.py":
        at.switch_page(page)
    for k, v in query.items():
        at.query_params[k] = v
    return at.run()


def shown(markdown: str) -> str:
    """What Markdown source displays as text: escapes (`\\-`, `&#58;`) and word joiners undone
    (how `ui.plain` makes stored names literal)."""
    return html.unescape(re.sub(r"\\([^\w\s])", r"\1", markdown)).replace("\u2060", "")


def tree_picker(at: AppTest):
    """The Trees page's task picker (its key changes with its lines; the choice is "trees_tree")."""
    return next(s for s in at.selectbox if s.key.startswith("trees_pick_"))


def texts(at: AppTest) -> str:
    """Everything the page shows as text, code, markdown, captions and metrics."""
    parts = [e.value for kind in ("text", "code") for e in getattr(at, kind)]
    parts += [shown(e.value) for kind in ("markdown", "caption", "title", "subheader", "info", "error", "warning")
              for e in getattr(at, kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_explains_an_empty_store(store, page):
    at = run_page(page)
    assert not at.exception, at.exception
    assert at.info, f"{page} shows no explanation on an empty store"


def test_overview_gives_success_rates_per_source_and_exploration_health(store):
    """Expert demonstrations, exploration and evaluation each have their own success rate;
    exploration health reads the invalid actions the collector recorded."""
    fill_store(store)
    store.add_trajectories([episode("t1", ["search[red shoes]", "click[item a]", "click[buy now]"], 1.0,
                                    model="expert", meta={"n_invalid": 0})])
    store.add_trajectories([episode("t2", ["search[lamp]", "click[oops]", "click[item e]", "click[x]"], 0.0,
                                    model="weak-sft", meta={"n_invalid": 3})])  # 3 of 4 actions invalid
    at = run_page("views/overview.py")
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert "Success rate" not in metrics  # no figure mixing the sources
    table = at.dataframe[1].value
    shop = table[table["env"] == "shop"].set_index(["source", "model"])["success rate"]
    assert shop[("expert demonstrations", "")] == 1.0
    assert shop[("exploration", "")] == pytest.approx(2 / 7)
    evaluation = table[(table["env"] == "shop") & (table["source"] == "evaluation")]
    assert evaluation["episodes"].tolist() == [1] * 5  # one row per model: 5 episodes of 5 models
    assert shop[("evaluation", "strong-w2s")] == 1.0 and shop[("evaluation", "strong-treedpo")] == 0
    assert metrics["Valid-action rate"] == "25%"  # only the episode that recorded it counts
    assert metrics["Explorer success rate"] == "29%"
    assert metrics["Mean episode length"] == f"{(3 + 3 + 4 + 3 + 3 + 2 + 4) / 7:.1f}"
    assert metrics["Trees with both outcomes"] == "2 / 2"


@pytest.mark.slow
def test_overview_button_fills_the_embedded_default(store):
    at = run_page("views/overview.py")
    assert "store is empty" in at.info[0].value
    assert [b.label for b in at.button] == ["Fill the embedded default"]
    at.button[0].click().run()  # starts the real fill as a job: models, demos, exploration, trees, pairs
    assert not at.exception, at.exception
    job = at.session_state["fill_job"]
    assert job_status(job)["kind"] == "fill" and at.get("progress")  # followed, not run in the page
    deadline = time.monotonic() + 600
    while not at.metric and time.monotonic() < deadline:  # a rerun per poll, as the fragment's timer
        time.sleep(2)
        at.run()
    assert not at.exception, at.exception
    assert job_status(job)["status"] == "succeeded"
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Trees"]) == 20 and int(metrics["Pairs"]) > 0
    assert not at.button  # the button is only offered on an empty store


def test_overview_summarizes_the_store(filled):
    at = run_page("views/overview.py")
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Trajectories"] == "6" and metrics["Trees"] == "2" and metrics["Pairs"] == "8"
    assert metrics["Environments"] == "2" and metrics["Models"] == "4"
    assert "experiment exp-1" in texts(at) and any("exp\\-1" in c.value for c in at.caption)  # literal in markdown


def test_trees_page_draws_the_tree_and_shows_the_selected_node(filled):
    at = run_page("views/trees.py")
    assert not at.exception, at.exception
    assert tree_picker(at).value == "shop/t1"  # biggest tree first
    assert at.get("plotly_chart"), "no tree figure"
    body = texts(at)
    assert "Node 0" in body and "(root: the task starts here)" in body
    g = filled.load_tree("shop/t1").to_networkx()
    target = next(n for n in g if g.nodes[n]["action"] == "click[item b]")
    at.selectbox(key="trees_node").set_value(target).run()
    assert not at.exception
    body = texts(at)
    assert f"Node {target}" in body and "click[item b]" in [c.value for c in at.code]
    assert f"page after click[item b] {XSS}" in [c.value for c in at.code]  # shown as text
    assert at.query_params["node"] == str(target)


def test_trees_page_opens_on_a_tree_with_both_outcomes_and_reselects_on_sort(filled):
    fails = [episode("t3", ["search[x]", f"click[item {i}]", "click[buy now]"], 0.0, model="weak-sft")
             for i in range(6)]  # the biggest tree, all red
    filled.add_trajectories(fails)
    filled.save_trees(build_trees(fails))
    at = run_page("views/trees.py")
    assert not at.exception, at.exception
    assert at.selectbox(key="trees_sort").value == "both outcomes first"
    assert tree_picker(at).value == "shop/t1"  # the biggest with a success and a failure
    at.selectbox(key="trees_sort").set_value("size").run()
    assert tree_picker(at).value == "shop/t3"  # a new order opens on its first task
    at.selectbox(key="trees_sort").set_value("task id").run()
    assert tree_picker(at).value == "shop/t1"
    at.toggle(key="trees_both").set_value(True).run()
    assert tree_picker(at).options == [
        o for o in tree_picker(at).options if not o.startswith("t3 ")]
    assert len(tree_picker(at).options) == 2
    # the root after MCTS: no visits and no Q, and the panel says why
    assert {m.label: m.value for m in at.metric}["MCTS visits"] == "0"
    assert "backs up every node of an iteration's path except the root" in texts(at)


def test_trees_page_says_when_the_best_path_is_a_tie_break(filled):
    at = run_page("views/trees.py")
    assert not any("tie-break" in i.value for i in at.info)  # t1's Q values differ along its best path
    fails = [episode("t3", a, 0.0, model="weak-sft") for a in (["search[x]", "click[a]"], ["search[x]", "click[b]"],
                                                               ["search[y]"])]
    filled.add_trajectories(fails)
    (g,) = build_trees(fails)
    run_mcts(g, iterations=30)  # every reward is 0: Q is 0 everywhere
    filled.save_trees([g])
    at = run_page("views/trees.py", tree="shop/t3")
    assert not at.exception, at.exception
    assert any("best path is a tie-break" in i.value for i in at.info)


def test_trees_page_toggles_mcts_and_follows_a_deep_link(filled):
    g = filled.load_tree("shop/t2").to_networkx()
    at = run_page("views/trees.py", tree="shop/t2", node="2")
    assert not at.exception
    assert tree_picker(at).value == "shop/t2"
    assert at.selectbox(key="trees_node").value == 2
    assert g.nodes[2]["action"] in [c.value for c in at.code]
    # a later link (e.g. from the Pairs page) to another tree opens that tree at its node
    at.query_params.update(tree="shop/t1", node="3")
    at.run()
    assert (tree_picker(at).value, at.selectbox(key="trees_node").value) == ("shop/t1", 3)
    at.query_params.update(tree="shop/t2", node="2")
    at.run()
    at.segmented_control(key="trees_kind").set_value("mcts").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["MCTS visits"] == str(g.nodes[2]["mcts_visits"])


def test_trees_page_colours_by_true_value_where_the_tree_has_it(filled):
    at = run_page("views/trees.py", tree="shop/t1")
    assert at.segmented_control(key="trees_kind").options == ["Data (visits, mean reward)", "MCTS (visits, Q)"]
    g = filled.load_tree("shop/t1")
    g.true_value[:] = 1.0
    g.true_steps[:] = np.arange(g.n_nodes)[::-1]
    g.true_value[2], g.true_steps[2] = 0.0, NO_STEPS
    filled.save_true_values([g])
    at = run_page("views/trees.py", tree="shop/t1", node="1")
    assert not at.exception, at.exception
    control = at.segmented_control(key="trees_kind")
    assert control.options[-1] == "True value (the expert from here)"
    control.set_value("true").run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["True value"] == "1.00" and metrics["Expert steps"] == str(g.true_steps[1])
    at.selectbox(key="trees_node").set_value(2).run()
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["True value"], metrics["Expert steps"]) == ("0.00", "does not finish")
    # another tree without oracle values falls back to the data colouring
    at.query_params.update(tree="shop/t2", node="0")
    at.run()
    assert not at.exception and at.segmented_control(key="trees_kind").value == "data"
    assert "True value" not in {m.label for m in at.metric}


def test_pairs_page_shows_prefix_and_both_continuations(filled):
    at = run_page("views/pairs.py")
    assert not at.exception, at.exception
    assert "8 of 8 pairs match" in texts(at)
    frame = filled.pairs_frame(tree_id="shop/t1", granularity="continuation")
    pick = frame[frame["node_id"] == 1]["pair_id"].iloc[0]
    at.selectbox(key="pairs_pick").set_value(pick).run()
    body = texts(at)
    # the shared prefix (with its untrusted observation, shown as text), then both sides
    assert f"Observation: page after search[red shoes] {XSS}" in body
    assert "Thought: I think click[item a] helps\nAction: click[item a]" in body
    assert "Thought: I think click[item b] helps\nAction: click[item b]" in body
    assert sum("diverges here" in m.value for m in at.markdown) == 2  # one mark per side
    assert {m.label: m.value for m in at.metric}["Margin"] == "0.100"
    at.slider(key="pairs_margin").set_value(0.5).run()
    assert "4 of 8 pairs match" in texts(at)
    at.slider(key="pairs_margin").set_value(1.0).run()
    assert "4 of 8 pairs match" in texts(at)


def test_pairs_page_opens_on_a_tree_pair_and_says_what_each_pair_shares(filled):
    from core.pairs import eto_pairs

    filled.save_pairs(eto_pairs(filled.trajectories(env="shop", source="collect"), mode="weak"))
    eto = filled.pairs_frame(granularity="trajectory")
    assert len(eto) and eto["env"].iloc[0] == "shop"  # ETO pairs sort first in the store (node -1)
    at = run_page("views/pairs.py")
    assert not at.exception, at.exception
    assert at.slider(key="pairs_margin").value == 0.0
    shown = filled.pairs_frame().set_index("pair_id").loc[at.selectbox(key="pairs_pick").value]
    assert shown["granularity"] == "step" and shown["node_id"] >= 0
    at.selectbox(key="pairs_pick").set_value(eto["pair_id"].iloc[0]).run()
    turns = len(json.loads(eto["prompt"].iloc[0]))
    shared = f"{turns} turn" + ("s" if turns != 1 else "")
    assert f"Shared prefix ({shared})" in texts(at)
    assert f"whole trajectories: they share only the task's opening ({shared})" in texts(at)


def test_pairs_page_deep_link_filters_to_a_node(filled):
    at = run_page("views/pairs.py", tree="shop/t2", node="1")
    assert not at.exception
    assert at.selectbox(key="pairs_task").value == "t2"
    assert at.selectbox(key="pairs_node").value == 1
    assert "2 of 8 pairs match" in texts(at)


def test_compare_page_aligns_four_models_and_marks_divergence(filled):
    at = run_page("views/compare.py")
    assert not at.exception, at.exception
    assert at.multiselect(key="compare_models").value == ["weak-sft", "strong-sft", "strong-treedpo",
                                                          "strong-mcts"]
    shown = [t.value for t in at.text]
    assert shown[1:5] == ["weak-sft", "strong-sft", "strong-treedpo", "strong-mcts"]  # after the instruction
    assert [m.value for m in at.metric] == ["1.00", "0.40", "0.00", "0.20"]
    assert "first diverge at step 1" in texts(at)
    at.multiselect(key="compare_models").set_value(["weak-sft", "strong-treedpo"]).run()
    assert "first diverge at step 3" in texts(at)
    # every evaluated model of the environment is offered, also one not evaluated on this task
    assert "strong-w2s (not on this task)" in at.multiselect(key="compare_models").options
    at.multiselect(key="compare_models").set_value(["weak-sft", "strong-w2s"]).run()
    assert not at.exception and "No episode of strong-w2s on this task" in texts(at)
    assert [m.value for m in at.metric] == ["1.00"]  # only weak-sft's episode, nobody else's numbers
    assert "eto-dpo: no data in experiment exp-1" in texts(at)


def test_results_page_shows_table_and_both_curves(filled):
    at = run_page("views/results.py")
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert table.index.tolist() == ["sft-weak", "sft-strong", "treedpo", "mcts", "eto-dpo"]
    assert table.loc["treedpo", "shop reward"] == "0.600 (1 seed)"  # never "± 0.000"
    assert table.loc["eto-dpo"].tolist() == ["no data", "no data"]  # not sft-strong's numbers
    assert "eto-dpo: no data" in texts(at)
    assert "(no eto pairs)" in texts(at)  # what was missing, as the method table says (core.methods)
    assert at.selectbox(key="results_env").value == "sciworld"
    assert len(at.get("plotly_chart")) == 2  # score per step + trajectories per task


def test_results_page_explains_what_an_up_experiment_lacks_and_offers_its_commands(store):
    """After `w2stree up`: one seed, one K, shop episodes without per-step scores. Each section says
    so and shows the command that fills it (issue 25 item 4)."""
    exp, world = "exp-shop-n_products=200-n_categories=10-tiny-test-20261206-120000-ab12", \
        "shop?n_products=200&n_categories=10"
    store.add_trajectories([Trajectory(world, f"test_{i}", "buy", [Step("click[buy now]", "done", reward=r)],
                                       reward=r, source="eval", model=label, run_id=f"run-{label}")
                            for label in ("sft-weak", "treedpo") for i, r in enumerate((0.0, 1.0))])
    store.add_results([dict(experiment_id=exp, env=world, method=method, model=f"m-{label}", seed=0,
                            trajs_per_task=4, avg_reward=0.5, success_rate=0.5, n_examples=10, n_episodes=2,
                            run_id=f"run-{label}") for method, label in (("SFT-weak", "sft-weak"),
                                                                         ("TreeDPO", "treedpo"))])
    at = run_page("views/results.py")
    assert not at.exception, at.exception
    assert at.dataframe[0].value.loc["TreeDPO", f"{world} reward"] == "0.500 (1 seed)"
    shown_text, commands = texts(at), [c.value for c in at.code if c.value.startswith("w2stree")]
    assert "One seed" in shown_text and "one number of trajectories per task (K = 4)" in shown_text
    assert "carry no per-step scores" in shown_text
    assert commands == ["w2stree pipeline --env tinyshop --scale tiny --split test --seeds 0 1 2",
                        "w2stree pipeline --env tinyshop --scale tiny --split test --trajs-per-task 1 2 4 6",
                        "w2stree eval --model expert --env sciworld --tasks 10"]
    cells = next(d.value for d in at.dataframe if "comparison" in d.value.columns)  # the comparisons exist
    row = cells[(cells["comparison"] == "TreeDPO − SFT-weak") & (cells["metric"] == "reward")].iloc[0]
    assert row["diff"] == "+0.000" and row.iloc[5] == "1 seed"


def test_results_page_shows_comparisons_with_both_intervals_and_figure_4(filled):
    rewards = {"SFT-weak": (0.0, 0.5, 1.0), "SFT-strong": (0.5, 0.5, 1.0), "TreeDPO": (1.0, 0.5, 1.0)}
    rows = []
    for seed in (0, 1):
        for k in (1, 4):
            for method, rs in rewards.items():
                run = f"run-{method}-{seed}-{k}"
                rs = tuple(min(1.0, r + 0.25 * seed) for r in rs) if method == "TreeDPO" else rs
                filled.add_trajectories([episode(f"test_{i}", ["click[buy now]"], r, model=method.lower(),
                                                 source="eval", run_id=run) for i, r in enumerate(rs)])
                rows.append(dict(experiment_id="exp-2", env="shop", method=method, model=method.lower(), seed=seed,
                                 trajs_per_task=k, avg_reward=sum(rs) / 3, success_rate=rs.count(1.0) / 3,
                                 n_examples=10, n_episodes=3, run_id=run))
    filled.add_results(rows)
    at = run_page("views/results.py")
    assert not at.exception, at.exception
    assert at.selectbox(key="results_exp").value == "exp-2"
    cells = next(d.value for d in at.dataframe if "comparison" in d.value.columns)
    row = cells[(cells["comparison"] == "TreeDPO − SFT-weak") & (cells["metric"] == "reward")].iloc[0]
    # seed 0: per-task differences 1, 0, 0; seed 1: 1, 0.25, 0 -> mean 0.375 over 2 seeds x 3 tasks
    assert row["diff"] == "+0.375" and row["seeds x tasks"] == "2 x 3" and row["K"] == 1
    assert row.iloc[4].startswith("[") and row.iloc[5].startswith("[")  # both intervals
    assert "resamples seeds, then tasks" in texts(at)
    assert len(at.get("plotly_chart")) == 3  # comparisons, trajectories per task, score per step
    at.radio(key="results_metric").set_value("success").run()
    assert not at.exception, at.exception


def test_train_page_rejects_a_bad_config_before_anything_starts(filled):
    at = run_page("views/train.py")
    assert not at.exception, at.exception
    assert at.selectbox(key="train_env").value == "shop"
    commands = [c.value for c in at.code if c.value.startswith("w2stree train")]
    dpo = SCALES["tiny"].dpo  # the defaults are the pipeline's tiny-scale DPO settings
    assert commands == ["w2stree train treedpo --preset tiny --model strong-sft --data pairs:shop:step "
                        f"--lr {dpo['lr']} --batch-size {dpo['batch_size']} --max-steps {dpo['max_steps']} "
                        f"--save-steps {dpo['save_steps']} --ref weak-sft"]
    assert next(w for w in at.number_input if w.key.startswith("train_lr_")).value == dpo["lr"]
    at.segmented_control(key="train_kind").set_value("mcts").run()
    assert next(w for w in at.number_input if w.key.startswith("train_lr_")).value == SCALES["tiny"].mcts_sft["lr"]
    at.segmented_control(key="train_kind").set_value("treedpo").run()
    at.text_input(key="train_output").input("../escape").run()  # invalid output name
    assert "output='../escape' is invalid" in shown(at.error[0].value)
    assert not any(b.key == "train_start" for b in at.button)
    at.text_input(key="train_output").input("").run()
    at.button(key="train_start").click().run()  # registered, but its folder does not exist
    assert at.error and "strong-sft" in shown(at.error[0].value)
    assert filled.query("SELECT count(*) AS n FROM jobs")["n"][0] == 0


@pytest.mark.slow
def test_train_form_counts_rows_as_the_trainer_sees_them(filled, tmp_path_factory):
    """The local models are prompted one decision at a time: an SFT example of n steps is n rows.
    SFT defaults follow the model trained (the pipeline's SFT-weak or SFT-strong settings)."""
    from test_train import tiny_models

    paths = tiny_models(tmp_path_factory.getbasetemp())
    for role in ("weak", "strong"):
        filled.register_model(f"shop-{role}", str(paths[role]), role=role, params=1000)
    filled.add_trajectories([episode("t1", ["search[x]", "click[item a]", "click[buy now]"], 1.0, model="expert"),
                             episode("t2", ["search[lamp]", "click[buy now]"], 1.0, model="expert")])
    at = run_page("views/train.py")
    at.segmented_control(key="train_kind").set_value("sft").run()
    at.selectbox(key="train_model_sft").set_value("shop-strong").run()
    assert not at.exception, at.exception
    assert ("2 training examples → 5 training rows as the trainer sees them (shop-strong is prompted one "
            "decision at a time") in texts(at)
    steps = lambda: next(w for w in at.number_input if w.key.startswith("train_steps_")).value  # noqa: E731
    assert steps() == SCALES["tiny"].sft_strong["max_steps"]
    at.selectbox(key="train_model_sft").set_value("shop-weak").run()
    assert steps() == SCALES["tiny"].sft_weak["max_steps"]
    at.selectbox(key="train_model_sft").set_value("strong-sft").run()  # registered, folder gone: not read
    assert "2 training examples (one training row each)" in texts(at)


@pytest.mark.slow
def test_train_page_disables_start_on_empty_data_and_says_why(filled):
    at = run_page("views/train.py")
    assert not at.button(key="train_start").disabled and "8 training examples" not in texts(at)
    assert "4 training examples" in texts(at)  # the store's step pairs
    assert at.selectbox(key="train_gran_treedpo").options == ["step", "continuation"]  # tree pairs only
    at.segmented_control(key="train_kind").set_value("eto-dpo").run()  # trajectory pairs: none stored
    assert at.selectbox(key="train_gran_eto-dpo").options == ["trajectory"]
    assert any(c.value.startswith("w2stree train eto-dpo ") for c in at.code)  # its own method, not treedpo
    start = at.button(key="train_start")
    assert start.disabled and "0 examples" in start.help
    warning = at.warning[0].value
    assert "no trajectory pairs of shop are stored" in warning
    assert "run `w2stree pairs`" not in warning or "trees" in warning  # a reason, not only a command
    at.segmented_control(key="train_kind").set_value("treedpo").run()
    assert not at.button(key="train_start").disabled and not at.warning


def test_train_page_starts_and_stops_a_job(filled, tmp_path_factory):
    import json
    import os

    from test_train import tiny_models

    paths = tiny_models(tmp_path_factory.getbasetemp())
    for role in ("weak", "strong"):
        filled.register_model(f"shop-{role}", str(paths[role]), role=role, params=1000)
    at = run_page("views/train.py")
    at.selectbox(key="train_model_treedpo").set_value("shop-strong")
    at.selectbox(key="train_ref").set_value("shop-weak").run()
    steps = next(w for w in at.number_input if w.key.startswith("train_steps_"))
    steps.set_value(100_000).run()
    assert "--max-steps 100000" in " ".join(c.value for c in at.code)
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    jobs = filled.query("SELECT job_id, status, max_steps FROM jobs")
    assert len(jobs) == 1 and jobs["status"][0] in ("queued", "running")
    assert jobs["max_steps"][0] == 100_000  # as configured, before the trainer reports it
    job_id = jobs["job_id"][0]
    assert at.selectbox(key="train_job").value == job_id
    pid = json.loads((Path(job_status(job_id)["job_dir"]) / "launch.json").read_text())["pid"]
    os.kill(pid, 0)  # the job process runs
    # a new session (reload / second tab) finds the running job by itself
    other = run_page("views/train.py")
    assert other.selectbox(key="train_job").value == job_id
    other.button(key="train_stop").click().run()
    assert not other.exception, other.exception
    assert job_status(job_id)["status"] == "stopped"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"job process {pid} still runs after Stop")
    assert filled.query("SELECT status FROM jobs")["status"][0] == "stopped"


def test_cli_up_prints_the_results_then_serves_without_refilling(filled, capsys, monkeypatch):
    from core.cli import app, main
    from core.cli.app import serve_command

    before = len(filled.results())
    served = []
    monkeypatch.setattr(app.os, "execve", lambda *a: served.append(a[1]))  # stand in for the server
    assert main(["up", "--db", str(filled.path)]) == 0
    out = capsys.readouterr().out
    assert "already has results" in out and len(filled.results()) == before
    table = out.index("results of experiment exp-1")
    assert table < out.index("w2stree dashboard: http://127.0.0.1")  # the table comes first
    for method in ("sft-weak", "sft-strong", "treedpo", "mcts"):
        assert method in out[table:]
    assert served and served[0][4] == APP.replace("app.py", "server.py")  # app.py behind its guard
    assert served[0][-3:] == ["--", "--db", str(filled.path)]  # the server gets the store as an argument
    cmd = serve_command(8765)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4] == APP.replace("app.py", "server.py")
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8765"
