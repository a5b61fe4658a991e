"""HFPolicy on the tiny weak preset: batching, per-row sampling, seeding, truncation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from core.agents.base import PAPER_SCHEDULE, Request, Sampling
from core.agents.hf import HFPolicy
from core.agents.prompt import env_prefix, format_assistant, format_observation, task_message
from core.envs.base import make_env
from core.models import build_presets, load_model
from core.store import Store
from core.trajectory import Step


@pytest.fixture(scope="module")
def weak(tmp_path_factory):
    """The weak preset with its matrices re-drawn at std 0.3: an untrained preset (std 0.02) only
    repeats newlines, which would make every comparison below trivially true; these weights give
    long replies that depend on every prompt token."""
    root = tmp_path_factory.mktemp("hf")
    with pytest.MonkeyPatch.context() as mp:  # the default store lives here, not in the checkout
        mp.setenv("W2STREE_HOME", str(root))
        mp.setenv("W2STREE_DB", str(root / "w2stree.duckdb"))
        paths = build_presets("shop", Store(root / "w2stree.duckdb"), out_dir=root / "models", n_tasks=10)
        model, tok = load_model(str(paths["weak"]))
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        model.save_pretrained(root / "weak-random")
        tok.save_pretrained(root / "weak-random")
        yield str(root / "weak-random")


@pytest.fixture(scope="module")
def policy(weak) -> HFPolicy:
    return HFPolicy(weak, max_new_tokens=24, batch_size=4)


def _requests(n: int = 6) -> list[Request]:
    """First-turn requests of n train tasks; two of them carry one more step, so lengths differ."""
    env = make_env("shop")
    prefix = env_prefix("shop")
    out = []
    for k, t in enumerate(env.tasks("train")[10:10 + n]):
        obs, instruction = env.reset(t.task_id)
        msgs = prefix + [{"role": "user", "content": task_message(instruction, obs)}]
        history = []
        if k % 3 == 1:
            action = env.expert(t.task_id)[0].action
            step = Step(action=action, observation=env.step(action).observation, thought="Let me search.")
            history.append(step)
            msgs = msgs + [{"role": "assistant", "content": format_assistant(step.thought, action)},
                           {"role": "user", "content": format_observation(step.observation)}]
        out.append(Request(env="shop", task_id=t.task_id, instruction=instruction, messages=msgs,
                           history=history, seed=k))
    return out


def test_batched_greedy_equals_one_at_a_time(policy):
    reqs = _requests()
    assert len({len(policy.prompt_ids(r)) for r in reqs}) > 1  # left padding really happens
    batched = policy.act(reqs)
    single = [policy.act([r])[0] for r in reqs]
    assert batched == single
    assert all(reply.strip() for reply in batched)  # real text, not an empty/degenerate reply
    assert policy.name == "weak-random"


def test_sampling_is_seeded_and_differs_from_greedy(policy, weak):
    reqs = [dataclasses.replace(r, sampling=Sampling(1.0, 0.9)) for r in _requests()]
    first = policy.act(reqs)
    assert policy.act(reqs) == first
    # a fresh policy with the same seed, other batch size: same samples, per episode
    assert HFPolicy(weak, max_new_tokens=24, batch_size=2).act(reqs) == first
    other_seed = HFPolicy(weak, max_new_tokens=24, batch_size=4, seed=1).act(reqs)
    assert other_seed != first
    assert first != policy.act(_requests())


def test_mixed_batch_keeps_greedy_rows_exactly_greedy(policy):
    reqs = _requests()
    greedy = policy.act(reqs)
    schedule = [PAPER_SCHEDULE[k % len(PAPER_SCHEDULE)] for k in range(len(reqs))]
    mixed_reqs = [dataclasses.replace(r, sampling=s) for r, s in zip(reqs, schedule)]
    mixed = policy.act(mixed_reqs)
    for k, s in enumerate(schedule):
        if s.greedy:
            assert mixed[k] == greedy[k]
    # sampled rows equal the same rows sampled alone
    sampled = [k for k, s in enumerate(schedule) if not s.greedy]
    assert [policy.act([mixed_reqs[k]])[0] for k in sampled] == [mixed[k] for k in sampled]
    assert any(mixed[k] != greedy[k] for k in sampled)


def test_truncation_drops_oldest_steps_and_keeps_the_prefix(weak):
    env = make_env("shop")
    task = env.tasks("train")[20]
    obs, instruction = env.reset(task.task_id)
    prefix = env_prefix("shop") + [{"role": "user", "content": task_message(instruction, obs)}]
    history, msgs = [], list(prefix)
    for n in range(6):  # six searches, each with a long results page
        action = f"search[marker{n} shirt]"
        env.reset(task.task_id)
        step = Step(action=action, observation=env.step(action).observation, thought=f"step {n}")
        history.append(step)
        msgs += [{"role": "assistant", "content": format_assistant(step.thought, action)},
                 {"role": "user", "content": format_observation(step.observation)}]
    pol = HFPolicy(weak, max_new_tokens=16)
    tok = pol.tokenizer
    req = Request("shop", task.task_id, instruction, msgs, history)
    full = len(tok.apply_chat_template(msgs, add_generation_prompt=True)["input_ids"])
    per_step = (full - len(tok.apply_chat_template(prefix)["input_ids"])) / 6
    pol.max_context = int(full - 2.5 * per_step) + pol.max_new_tokens  # room for 3 of the 6 steps
    ids = pol.prompt_ids(req)
    assert len(ids) <= pol.max_context - pol.max_new_tokens < full
    text = tok.decode(ids)
    assert text.startswith(tok.apply_chat_template(prefix, tokenize=False))
    assert [n for n in range(6) if f"marker{n}" in text] == [3, 4, 5]
    assert text.endswith(format_observation(history[-1].observation) + "<|im_end|>\n<|im_start|>assistant\n")
    assert isinstance(pol.act([req])[0], str)
    # when not even the prefix and the newest step fit, the newest tokens are kept
    pol.max_context = 300
    ids = pol.prompt_ids(req)
    assert len(ids) == 300 - pol.max_new_tokens
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")


def test_shared_prefix_cache_changes_nothing(policy, weak):
    reqs = _requests()
    assert len({policy._shared_ids(r) for r in reqs}) == 1  # one env prefix, computed once
    plain = HFPolicy(weak, max_new_tokens=24, batch_size=4, prefix_cache=False)
    assert plain.act(reqs) == policy.act(reqs)
    sampled = [dataclasses.replace(r, sampling=Sampling(0.7, 0.9)) for r in reqs]
    assert plain.act(sampled) == policy.act(sampled)
