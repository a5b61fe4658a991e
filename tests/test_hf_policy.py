"""HFPolicy on the tiny weak preset: batching, per-row sampling, seeding, truncation, exact greedy
decoding despite a model's generation_config, other chat templates, reply length.

Exact-output comparisons run on the CPU in fp32 (`device="cpu"`): bf16 on a GPU changes outputs."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch
from chat_templates import TEMPLATES, with_template

from core.agents.base import PAPER_SCHEDULE, Request, Sampling
from core.agents.hf import HFPolicy
from core.agents.prompt import (
    env_prefix,
    format_assistant,
    format_observation,
    merge_user_turns,
    task_message,
)
from core.envs.base import make_env
from core.errors import UserError
from core.models import build_local_models, load_model
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
        paths = build_local_models("shop", Store(root / "w2stree.duckdb"), out_dir=root / "models", n_tasks=10)
        model, tok = load_model(str(paths["weak"]), device="cpu")
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
    return HFPolicy(weak, device="cpu", max_new_tokens=24, batch_size=4)


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
    assert HFPolicy(weak, device="cpu", max_new_tokens=24, batch_size=2).act(reqs) == first
    other_seed = HFPolicy(weak, device="cpu", max_new_tokens=24, batch_size=4, seed=1).act(reqs)
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
    pol = HFPolicy(weak, device="cpu", max_new_tokens=16)
    tok = pol.tokenizer
    req = Request("shop", task.task_id, instruction, msgs, history)
    full = len(tok.apply_chat_template(merge_user_turns(msgs), add_generation_prompt=True)["input_ids"])
    per_step = (full - len(tok.apply_chat_template(merge_user_turns(prefix))["input_ids"])) / 6
    pol.max_context = int(full - 2.5 * per_step) + pol.max_new_tokens  # room for 3 of the 6 steps
    ids = pol.prompt_ids(req)
    assert len(ids) <= pol.max_context - pol.max_new_tokens < full
    text = tok.decode(ids)
    assert text.startswith(tok.apply_chat_template(merge_user_turns(prefix), tokenize=False))
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
    plain = HFPolicy(weak, device="cpu", max_new_tokens=24, batch_size=4, prefix_cache=False)
    assert plain.act(reqs) == policy.act(reqs)
    sampled = [dataclasses.replace(r, sampling=Sampling(0.7, 0.9)) for r in reqs]
    assert plain.act(sampled) == policy.act(sampled)


# -- decoding exactly as asked ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def penalised(weak, tmp_path_factory):
    """The random weak model with a generation_config that penalises repetition (as Qwen2.5-Instruct's
    does) and forbids repeated tokens outright."""
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("penalised") / "weak-penalised"
    import shutil

    shutil.copytree(weak, out)
    model = AutoModelForCausalLM.from_pretrained(out)
    model.generation_config.repetition_penalty = 5.0
    model.generation_config.no_repeat_ngram_size = 1
    model.generation_config.save_pretrained(out)
    return str(out)


def _argmax_reply(model, prompt: list[int], stop_ids: list[int], n: int) -> list[int]:
    """Greedy decoding by hand: the argmax of the logits at every step, nothing else."""
    ids, out = list(prompt), []
    with torch.no_grad():
        for _ in range(n):
            t = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            if t in stop_ids:
                break
            ids.append(t)
            out.append(t)
    return out


def test_greedy_is_argmax_despite_the_models_generation_config(penalised):
    pol = HFPolicy(penalised, device="cpu", max_new_tokens=24, batch_size=4)
    reqs = [pol.view(r) for r in _requests(3)]
    manual = [_argmax_reply(pol.model, pol.prompt_ids(r), pol.stop_ids, 24) for r in reqs]
    assert pol.act(reqs) == [pol._decode(m) for m in manual]
    # the saved generation_config really changes greedy output: the test above can fail
    from transformers import AutoModelForCausalLM

    raw = AutoModelForCausalLM.from_pretrained(penalised)
    ids = pol.prompt_ids(reqs[0])
    default = raw.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)[0, len(ids):].tolist()
    assert default[: len(manual[0])] != manual[0]


def test_row_sampler_keeps_the_top_p_nucleus_and_its_proportions():
    """Temperature 1, top-p 0.6 over probabilities (0.5, 0.3, 0.2): the nucleus is the first two
    tokens, drawn 5:3; a greedy row beside it is left untouched."""
    from core.agents.hf import _RowSampler

    scores = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]]))
    sampler = _RowSampler([Sampling(1.0, 0.6), None], [123, 0])
    picks = []
    for _ in range(2000):
        out = sampler(torch.zeros((2, 1), dtype=torch.long), scores)
        assert torch.equal(out[1], scores[1])
        assert int((out[0] == 0).sum()) == 1 and torch.isinf(out[0]).sum() == 2
        picks.append(int(out[0].argmax()))
    counts = [picks.count(t) for t in range(3)]
    assert counts[2] == 0
    assert abs(counts[0] / 2000 - 0.625) < 0.04


def test_max_new_tokens_defaults(weak, monkeypatch):
    from transformers import Qwen2Config

    from core.agents.tokenized import MAX_NEW_TOKENS, default_max_new_tokens

    monkeypatch.delenv("W2STREE_MAX_NEW_TOKENS", raising=False)
    assert MAX_NEW_TOKENS >= 256
    assert default_max_new_tokens(Qwen2Config()) == MAX_NEW_TOKENS  # any Hugging Face model
    assert HFPolicy(weak, device="cpu").max_new_tokens == 64  # the from-scratch presets
    monkeypatch.setenv("W2STREE_MAX_NEW_TOKENS", "300")
    assert default_max_new_tokens(Qwen2Config()) == 300
    assert HFPolicy(weak, device="cpu").max_new_tokens == 300
    assert HFPolicy(weak, device="cpu", max_new_tokens=7).max_new_tokens == 7
    monkeypatch.setenv("W2STREE_MAX_NEW_TOKENS", "lots")
    with pytest.raises(UserError, match="W2STREE_MAX_NEW_TOKENS"):
        default_max_new_tokens(Qwen2Config())


# -- other model families' chat templates ----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_llama_and_mistral_chat_templates(weak, tmp_path, family):
    """Llama-3.1, Llama-2-chat and Mistral templates: the full paper prompt (one-shot example whose
    last observation is followed by the task message) renders, the policy answers, batched greedy
    equals one at a time, and the shared-prefix cache still applies and changes nothing."""
    folder = with_template(weak, tmp_path / family, TEMPLATES[family])
    pol = HFPolicy(str(folder), device="cpu", max_new_tokens=12, batch_size=4)
    pol.one_shot = True  # the paper's prompt, with the one-shot example (two user turns in a row)
    reqs = _requests(4)
    with pytest.raises(Exception, match="alternate") if family != "llama3.1" else contextlib.nullcontext():
        pol.tokenizer.apply_chat_template(reqs[0].messages, add_generation_prompt=True)
    text = pol.tokenizer.decode(pol.prompt_ids(reqs[0]))
    users = sum(m["role"] == "user" for m in merge_user_turns(reqs[0].messages))
    assert users < sum(m["role"] == "user" for m in reqs[0].messages)
    assert text.count("[INST]" if family != "llama3.1" else "<|start_header_id|>user") == users
    assert reqs[0].messages[-1]["content"].split("\n")[0].strip() in text
    assert pol._shared_ids(reqs[0])  # the system turn and the example are still shared
    batched = pol.act(reqs)
    assert batched == [pol.act([r])[0] for r in reqs]
    plain = HFPolicy(str(folder), device="cpu", max_new_tokens=12, batch_size=4, prefix_cache=False)
    plain.one_shot = True
    assert plain.act(reqs) == batched
