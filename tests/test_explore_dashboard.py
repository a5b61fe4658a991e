"""The Trees page's exploration tools: the explore form under AppTest (a real job process grows the
tree, and the page rings the new nodes), play from here (core.play), the growth and MCTS replays
and the leaves comparison (dashboard.growth), and the Compare page opened on leaves."""

from __future__ import annotations

import json
import time

import pytest
from test_dashboard_pages import run_page, texts
from test_explore import TASK, _failed_tree

from core.errors import UserError
from core.jobs import FINISHED, job_status
from core.mcts import run_mcts
from core.play import PlaySession, live_sessions, reap
from dashboard import growth

TREE = f"shop/{TASK}"


def _wait(job: str) -> dict:
    deadline = time.monotonic() + 180
    while job_status(job)["status"] not in FINISHED and time.monotonic() < deadline:
        time.sleep(0.5)
    return job_status(job)


def _submit(at, form: str, job_key: str) -> dict:
    """Submit a form that starts a job, wait for the job, and return its final status."""
    at.button(key=form).click().run()
    assert not at.exception, at.exception
    job = at.session_state[job_key]
    assert job.startswith(job_key.split("_")[0] + "-")
    return _wait(job)


def test_the_explore_form_starts_a_job_and_the_page_rings_the_new_nodes(store) -> None:
    _failed_tree(store)
    old = store.load_tree(TREE).to_networkx()
    at = run_page("views/trees.py", tree=TREE, node="2")
    assert not at.exception, at.exception
    assert at.session_state["trees_node"] == 2
    at.selectbox(key="explore_policy").set_value("expert")
    at.number_input(key="explore_k").set_value(2)
    at.radio(key="explore_sampling").set_value("temperature / top-p")
    status = _submit(at, "FormSubmitter:explore_form-Explore from here", "explore_job")
    assert status["status"] == "succeeded", status
    at.run()  # the live part sees the job end, records its nodes and reruns the page
    at.run()
    assert not at.exception, at.exception
    new = at.session_state["explore_new"][TREE]
    g = store.load_tree(TREE).to_networkx()
    assert new == sorted(set(g) - set(old)) and new
    assert "2 continuations, 2 successful" in "\n".join(s.value for s in at.success)
    assert "Node 2" in texts(at)
    # the figure rings exactly the new nodes
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    ringed = next(t for t in spec["data"] if t.get("name") == "new branch")
    assert ringed["customdata"] and set(ringed["customdata"]) <= set(new)


def test_the_explore_job_reports_why_it_stopped_in_one_line(store) -> None:
    _failed_tree(store)
    g = store.load_tree(TREE).to_networkx()
    leaf = max(g, key=lambda n: g.nodes[n]["depth"])
    at = run_page("views/trees.py", tree=TREE, node=str(leaf))
    at.button(key="FormSubmitter:explore_form-Explore from here").click().run()
    assert not at.exception, at.exception
    status = _wait(at.session_state["explore_job"])  # the job replays the path, then stops
    assert status["status"] == "failed" and "ends its episode" in status["error"]
    at.run()
    assert not at.exception, at.exception
    assert any("ends its episode" in e.value for e in at.error)
    assert store.load_tree(TREE).to_networkx().number_of_nodes() == g.number_of_nodes()


def test_play_from_here_saves_a_human_branch(store) -> None:
    from core.envs import make_env

    _failed_tree(store)
    before = live_sessions()
    session = PlaySession(store, "shop", TASK, 2)
    assert live_sessions() == before + 1 and session.valid and len(session.steps) == 2
    # a person who follows the re-planned expert
    plan_env = make_env("shop")
    plan_env.reset(TASK)
    for s in session.steps:
        plan_env.step(s.action)
    while not session.done:
        action = plan_env.replan()[0].action
        plan_env.step(action)
        session.step(action, "my idea")
    assert session.steps[-1].reward == 1.0
    with pytest.raises(UserError, match="episode is over"):
        session.step("click[buy now]")
    traj_id, new = session.save(store)
    assert session.closed and live_sessions() == before and new
    saved = store.trajectories(source="human")
    assert [t.traj_id for t in saved] == [traj_id] and saved[0].success and saved[0].meta["explore"]["node"] == 2
    # a person's episode: no sampling, no seeds; it ended (bought), so not truncated
    assert "sampling" not in saved[0].meta and "episode_seed" not in saved[0].meta and saved[0].temperature is None
    assert saved[0].meta["truncated"] is False and saved[0].meta["step_limit"] == 10
    g = store.load_tree(TREE).to_networkx()
    assert g.nodes[0]["visits"] == 2 and g.nodes[new[-1]]["terminal_rewards"] == [1.0]


def test_play_discard_and_idle_sessions_store_nothing(store) -> None:
    _failed_tree(store)
    counts = store.counts()
    a = PlaySession(store, "shop", TASK, 1)
    a.step("click[back to search]")
    a.discard()
    with pytest.raises(UserError, match="closed"):
        a.step("search[x]")
    b = PlaySession(store, "shop", TASK, 0)
    b.last_used -= 3600
    assert reap(idle_s=60) == 1 and b.closed
    assert store.counts()["trajectories"] == counts["trajectories"]


@pytest.mark.slow
def test_a_play_session_on_sciworld_leaves_no_jvm(store) -> None:
    import os

    from core.agents.scripted import ExpertPolicy
    from core.collect import collect
    from core.tree import build_trees

    task = "lifespan-longest-lived_1"
    policy = ExpertPolicy("sciworld")
    try:
        collect(store, "sciworld", policy, [task], batch_size=1, max_steps=2, progress=False)
    finally:
        policy.close()
    store.save_trees(build_trees(store.trajectories(env="sciworld")))
    session = PlaySession(store, "sciworld", task, 1)
    assert session.valid  # ScienceWorld lists its valid actions for a person
    pid = session._env.pid
    session.step("look around")
    session.discard()
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_growth_and_mcts_replays(store) -> None:
    from core.explore import ExploreSpec, explore

    _failed_tree(store)
    explore(store, ExploreSpec("shop", TASK, 2, "noisy-expert", k=4, schedule="paper"))
    g = store.load_tree(TREE).to_networkx()
    ids = g.nodes[0]["traj_ids"]
    by_id = {t.traj_id: t for t in store.trajectories(traj_ids=ids)}
    trajs = [by_id[t] for t in ids]
    first = growth.tree_after(g, trajs, 1)
    assert first.number_of_nodes() < g.number_of_nodes()
    for n in first:  # the same node ids as the full tree
        assert first.nodes[n]["action"] == g.nodes[n]["action"]
    assert growth.tree_after(g, trajs, len(trajs)).number_of_nodes() == g.number_of_nodes()
    h = growth.mcts_after(g, 37)
    assert g.graph["settings"]["mcts"]["iterations"] == 200  # the stored tree is left alone
    ref = g.copy()
    ref.graph["settings"] = {}
    run_mcts(ref, iterations=37)
    assert [h.nodes[n]["mcts_visits"] for n in h] == [ref.nodes[n]["mcts_visits"] for n in ref]
    assert h.graph["mcts_iterations"] == 37 and g.graph["mcts_iterations"] == 200
    series = growth.mcts_series(g, 2, 50, 200)
    assert sorted(series["iteration"].unique()) == [0, 50, 100, 150, 200]
    leaves = growth.leaf_options(g)
    picked = growth.leaf_trajectories(g, leaves[:2])
    assert len(picked) == 2 and all(t in ids for t in picked)


def test_the_compare_page_opens_leaves_of_a_tree(store) -> None:
    from core.explore import ExploreSpec, explore

    _failed_tree(store)
    explore(store, ExploreSpec("shop", TASK, 2, "expert", k=1))
    g = store.load_tree(TREE).to_networkx()
    leaves = growth.leaf_options(g)
    trajs = growth.leaf_trajectories(g, leaves)
    at = run_page("views/compare.py", trajs=",".join(trajs), nodes=",".join(map(str, leaves)))
    assert not at.exception, at.exception
    shown = texts(at)
    assert f"leaf {leaves[0]} · collect" in shown and f"leaf {leaves[1]} · explore" in shown
    assert "first diverge at step 3" in shown


def test_the_play_console_steps_and_discards(store) -> None:
    _failed_tree(store)
    before = live_sessions()
    at = run_page("views/trees.py", tree=TREE, node="2")
    at.button(key="play_start").click().run()
    assert not at.exception, at.exception
    assert live_sessions() == before + 1
    assert at.selectbox(key="play_pick").options  # the shop lists its valid actions
    at.text_input(key="play_action").input("click[< prev]")
    at.button(key="FormSubmitter:play_form-Step").click().run()
    assert not at.exception, at.exception
    assert "1 step played after node 2" in texts(at)
    at.button(key="play_discard").click().run()
    assert not at.exception, at.exception
    assert at.session_state["play"] is None and live_sessions() == before
    assert store.trajectories(source="human") == []


def test_the_grow_form_starts_a_growth_job_over_the_envs_trees(store) -> None:
    _failed_tree(store)  # random episodes: failed branches for deepest-failure to choose from
    before = store.load_tree(TREE).n_trajectories
    at = run_page("views/trees.py", tree=TREE, node="0")
    assert not at.exception, at.exception
    at.selectbox(key="grow_policy").set_value("noisy-expert")
    at.number_input(key="grow_budget").set_value(4)
    status = _submit(at, "FormSubmitter:grow_form-Grow where the rule says", "grow_job")
    assert status["status"] == "succeeded", status
    at.run()
    assert not at.exception, at.exception
    assert "grew 1 node by rule deepest" in "\n".join(s.value for s in at.success)
    assert store.load_tree(TREE).n_trajectories == before + 4
    # a rule that finds nothing is one line, no job
    at.number_input(key="grow_budget").set_value(3)
    at.button(key="FormSubmitter:grow_form-Grow where the rule says").click().run()
    assert any("less than one node's K = 4" in e.value for e in at.error)


def test_the_explore_form_refuses_a_model_server_for_a_scripted_policy(store) -> None:
    """The server field beside the policy: a server with a scripted policy is one line, no job."""
    _failed_tree(store)
    at = run_page("views/trees.py", tree=TREE, node="2")
    at.selectbox(key="explore_policy").set_value("expert")
    at.text_input(key="explore_server").set_value("http://127.0.0.1:8000")
    at.button(key="FormSubmitter:explore_form-Explore from here").click().run()
    assert not at.exception, at.exception
    assert "explore_job" not in at.session_state
    assert any("scripted" in e.value for e in at.error)
