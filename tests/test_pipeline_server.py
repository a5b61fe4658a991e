"""`run_pipeline(server=...)` (`w2stree pipeline --server`) against a real `w2stree serve` process: a
small quick-scale run whose exploration, growth and evaluations go through the server, each
trained model loaded there first, stores what the same run stores in process.

Both runs generate one row at a time (`gen_batch=1`): in-process `generate` over a padded batch
differs from the same row alone in the last bits of the logits, enough to flip a sampled token now
and then (measured: 1 of 8 exploration episodes of the trained tiny SFT-weak model at batch 16),
while the server answers each sampled row alone (one call per seed)."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from servers import free_port, w2stree_serve

from core.errors import UserError
from core.models import build_local_models
from core.pipeline import run_pipeline
from core.scales import SCALES, TINY_WORLD

WORLD = f"shop?{TINY_WORLD}"
# SFT-weak explores (no scripted explorer) 2 tasks x 4 that were not demonstrated (no ETO pairs) and
# grows 4 episodes; it finds no success, so only the 3 baselines train: SFT-weak, SFT-strong, SFT-continued
SCALE = dataclasses.replace(SCALES["quick"], demo_tasks=3, explore_from=3, explore_tasks=2, test_tasks=2,
                            max_steps=3, explorer="", grow_budget=4, gen_batch=1)


def _episodes(store, runs) -> dict[tuple, list]:
    """(kind, model, task, sampling) -> the steps of each episode of `runs`."""
    out = {}
    for run in runs.itertuples():
        for t in store.trajectories(run_id=run.run_id):
            out[(run.kind, t.model, t.task_id, t.meta.get("sampling"), t.meta.get("explore", {}).get("node"))] = \
                [(s.thought, s.action, s.observation, s.reward) for s in t.steps]
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pipeline_through_a_server_stores_what_it_stores_in_process(store):
    weak_base = str(build_local_models(WORLD, store)["weak"])  # the server's first model: unused
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    with w2stree_serve(weak_base, env) as url:
        served = run_pipeline("shop", SCALE, seeds=(0,), store=store, progress=False, server=url)
    served_runs = store.runs()
    jobs = len(store.query("SELECT job_id FROM jobs"))
    # the in-process run takes every training from the served run and runs the rollouts again here
    local = run_pipeline("shop", SCALE, seeds=(0,), store=store, progress=False, reuse=True)
    assert len(store.query("SELECT job_id FROM jobs")) == jobs == 3
    cols = ["method", "model", "avg_reward", "success_rate", "n_examples", "n_episodes"]
    assert served[cols].fillna(-1).to_dict("records") == local[cols].fillna(-1).to_dict("records")
    local_runs = store.runs()
    local_runs = local_runs[~local_runs["run_id"].isin(served_runs["run_id"])]
    served_runs = served_runs[served_runs["model"] != "expert"]
    assert sorted(served_runs["kind"]) == sorted(local_runs["kind"]) == ["collect", "eval", "eval", "eval", "explore"]
    want, got = _episodes(store, local_runs), _episodes(store, served_runs)
    assert len(want) == 2 * 4 + 4 + 3 * 2 and got == want
    # every rollout of a trained model went to the server, under the model's name and weights digest
    for settings in served_runs["settings"]:
        (server, model_id), = json.loads(settings)["servers"].items()
        assert server == url and model_id.rsplit("-", 1)[0].endswith("-s0"), model_id
    assert all("servers" not in json.loads(s) for s in local_runs["settings"])


def test_a_dead_server_fails_the_pipeline_before_any_work(store):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UserError) as err:
        run_pipeline("shop", SCALE, seeds=(0,), store=store, progress=False, server=url)
    assert url in str(err.value) and "unreachable" in str(err.value) and "\n" not in str(err.value)
    assert store.runs().empty and store.models().empty
