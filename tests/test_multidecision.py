"""DPO on pairs that keep every decision (`core.train.decision_dpo`), on the tiny one-decision
models: one-decision pairs give exactly TRL's loss, gradient and metrics; a k-decision pair gives
the hand-summed loss; training on continuation pairs moves the weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_train import cfg, fill_store, tiny_models

from core.agents.prompt import DECISION_COLUMNS
from core.train import decision_dpo
from core.train.common import fit_prompts
from core.train.data import build_rows
from core.train.dpo import build_dpo_trainer

METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
           "logps/rejected", "entropy", "mean_token_accuracy", "logits/chosen", "logits/rejected")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    from core.store import Store

    store = Store(tmp_path_factory.mktemp("multidecision") / "filled.duckdb")
    fill_store(store)
    return store


def loss_and_grads(trainer) -> tuple[float, dict[str, torch.Tensor], dict[str, float]]:
    """TRL's loss on one batch of the trainer's whole dataset, its gradient and logged metrics."""
    model = trainer.model.train()
    model.zero_grad()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    trainer._metrics["train"].clear()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    loss = loss.detach()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
    return float(loss), grads, {k: v[-1] for k, v in trainer._metrics["train"].items()}


@pytest.mark.parametrize("head", ["cpu", "trl"])
def test_one_decision_pairs_give_trls_loss_gradient_and_metrics(filled, models, tmp_path, monkeypatch, head):
    """Step pairs forced through the decision path (one decision a side) against plain TRL, with
    the CPU LM head and with TRL's own fused head (the one CUDA runs)."""
    if head == "trl":
        monkeypatch.setattr("core.train.dpo.install_cpu_lm_heads", lambda trainer: None)
    rows = build_rows("pairs:shop:step", filled)[:3]
    # a reference unlike the policy; the unpacked decision path (the tiny preset packs trees)
    conf = cfg("treedpo", models, "x", ref=str(models["weak"]), packing="none")
    plain, _ = build_dpo_trainer(conf, rows, tmp_path / "plain", masked=False)
    monkeypatch.setattr(decision_dpo, "has_decisions", lambda rows: True)
    ours, _ = build_dpo_trainer(conf, rows, tmp_path / "ours")
    assert type(ours) is decision_dpo.DecisionDPOTrainer and len(ours.train_dataset) == len(rows) == 3
    assert ours.train_dataset.column_names == list(decision_dpo.ID_COLUMNS)
    want, got = loss_and_grads(plain), loss_and_grads(ours)
    assert want[0] != pytest.approx(0.6931, abs=1e-3)  # the reference differs: not the log 2 of a copy
    assert got[0] == pytest.approx(want[0], rel=2e-6)
    assert want[1].keys() == got[1].keys() and want[1]
    # equal up to float32 rounding: TRL sums each padded sequence, ours each side's packed tokens, in
    # another order (measured: loss within 4e-7, every gradient within 1e-6 of its largest entry)
    for k, g in want[1].items():
        torch.testing.assert_close(got[1][k], g, rtol=1e-5, atol=3e-6 * float(g.abs().max()))
    for k in METRICS:  # rewards are differences of ~-100 log-probabilities: rounding shows at 1e-6
        assert got[2][k] == pytest.approx(want[2][k], rel=1e-5, abs=1e-5), k


def decision_logp(model, tok, prompt: list[dict], completion: list[dict]) -> torch.Tensor:
    """log pi(completion | prompt) summed over the completion's tokens, from the model's own logits."""
    ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    full = tok.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
    assert full[:len(ids)] == ids
    logits = model(input_ids=torch.tensor([full])).logits[0, :-1].float()
    logp = logits.log_softmax(-1).gather(-1, torch.tensor(full[1:])[:, None]).squeeze(-1)
    return logp[len(ids) - 1:].sum()


def test_k_decision_pairs_give_the_hand_summed_loss(filled, models, tmp_path):
    from core.models.loading import load_model

    conf = cfg("treedpo", models, "x", ref=str(models["weak"]), packing="none")
    raw = build_rows("pairs:shop:continuation", filled)
    policy, tok = load_model(conf.model, device="cpu", dtype=torch.float32)
    ref, _ = load_model(conf.ref, device="cpu", dtype=torch.float32)
    ref.requires_grad_(False)
    picked = [r for r in raw if any(DECISION_COLUMNS[0] in c for c in fit_prompts(policy, [r]))][:3]
    rows = fit_prompts(policy, picked)
    assert len(rows) == 3 and max(len(r[c]) for r in rows for c in DECISION_COLUMNS) >= 2  # k >= 2
    trainer, _ = build_dpo_trainer(conf, picked, tmp_path)
    assert isinstance(trainer, decision_dpo.DecisionDPOTrainer) and len(trainer.train_dataset) == len(rows)

    def log_ratio(decisions: list[dict]) -> torch.Tensor:
        """log pi - log ref of a side: the sum over its decisions, each under its own prompt."""
        return sum(decision_logp(policy, tok, d["prompt"], d["completion"])
                   - decision_logp(ref, tok, d["prompt"], d["completion"]) for d in decisions)

    margins = torch.stack([conf.beta * (log_ratio(r[DECISION_COLUMNS[0]]) - log_ratio(r[DECISION_COLUMNS[1]]))
                           for r in rows])
    with torch.no_grad():
        first_only = torch.stack([conf.beta * (log_ratio(r[DECISION_COLUMNS[0]][:1]) - log_ratio(r[DECISION_COLUMNS[1]][:1]))
                                  for r in rows])
    hand = -F.logsigmoid(margins).mean()
    hand.backward()
    loss, grads, metrics = loss_and_grads(trainer)
    assert loss == pytest.approx(float(hand.detach()), rel=1e-5)
    for k, p in policy.named_parameters():  # and the same gradient
        torch.testing.assert_close(grads[k], p.grad, rtol=1e-4, atol=1e-5 * float(p.grad.abs().max()))
    assert abs(loss - float(-F.logsigmoid(first_only).mean())) > 1e-2  # the later decisions count
    assert metrics["rewards/margins"] == pytest.approx(float(margins.mean()), rel=1e-4, abs=1e-5)
    assert metrics["rewards/accuracies"] == pytest.approx(float((margins > 0).float().mean()))


@pytest.mark.parametrize("extra", [{}, {"lora": True, "lr": 1e-2}, {"micro_batch": 1}])
def test_training_on_continuation_pairs_moves_the_weights(filled, models, tmp_path, extra):
    rows = build_rows("pairs:shop:step", filled)[:1] + build_rows("pairs:shop:continuation", filled)
    trainer, _ = build_dpo_trainer(cfg("treedpo", models, "x", packing="none", **extra), rows, tmp_path)
    sides = trainer.train_dataset["decision_sides"]
    assert len(sides) == len(rows) and [0, 1] in sides and max(map(len, sides)) > 4  # one and k decisions
    want = decision_dpo.SortedDecisionDPOTrainer if extra.get("micro_batch") else decision_dpo.DecisionDPOTrainer
    assert type(trainer) is want
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if v.requires_grad}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    moved = [k for k in before if not torch.equal(before[k], after[k].detach())]
    assert moved and (not extra.get("lora") or all("lora_" in k for k in moved))
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)
