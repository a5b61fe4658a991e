"""How a trained model already ranks the stored pairs: log-probabilities of each side's decisions.

A pair side's log-probability is the sum over its assistant turns (its decisions) of
log π(turn | the conversation before it), each decision prompted exactly as `HFPolicy` prompts
the model at inference (`HFPolicy.view`: the one-decision view for the from-scratch local models,
no one-shot example where the model was trained without it; then its chat template and history
truncation, `HFPolicy.prompt_ids`). The turn's tokens are what the chat template adds for it after
the generation prompt, as TRL's DPO trainer tokenizes a conversational completion.

* ranking accuracy: the share of pairs with logπ(chosen) > logπ(rejected) (ties are not right);
* DPO implicit-reward accuracy at step 0 against a reference model (β-free):
  (logπ_c − logref_c) > (logπ_r − logref_r);
* `hard_pairs`: the pairs a model ranks wrong (`w2stree pairs --hard-for MODEL`, and the data
  spec option `hard_for=MODEL`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.agents.base import Request
from core.agents.hf import HFPolicy
from core.agents.prompt import Message, env_prefix, merge_user_turns
from core.trajectory import Pair, Step

BATCH = 8  # sequences per forward pass


def decisions(prompt: Sequence[Message], side: Sequence[Message]) -> list[tuple[list[Message], Message]]:
    """(the conversation before it, the turn) for every assistant turn of a pair side."""
    return [([*prompt, *side[:i]], m) for i, m in enumerate(side) if m["role"] == "assistant"]


@dataclass
class PairScorer:
    """Scores conversations with one model, prompted as `HFPolicy` prompts it."""

    policy: HFPolicy

    @classmethod
    def load(cls, model: str, store: Any = None, device: str | None = None) -> PairScorer:
        return cls(HFPolicy(model, device=device, store=store))

    def _ids(self, env: str, before: list[Message], turn: Message) -> tuple[list[int], list[int]]:
        """(prompt ids as the policy builds them, the turn's completion ids)."""
        full = [*env_prefix(env), *before]
        steps = sum(m["role"] == "assistant" for m in before[1:])  # the turns after the task message
        req = self.policy.view(Request(env=env, task_id="", instruction="", messages=full,
                                       history=[Step("", "")] * steps))
        tok = self.policy.tokenizer
        bare = list(tok.apply_chat_template(merge_user_turns(req.messages), add_generation_prompt=True,
                                            return_dict=True)["input_ids"])
        whole = list(tok.apply_chat_template(merge_user_turns([*req.messages, turn]),
                                             return_dict=True)["input_ids"])
        if whole[:len(bare)] != bare:
            raise ValueError("the chat template renders a prompt differently with its reply after it")
        return self.policy.prompt_ids(req), whole[len(bare):]

    def decision_log_probs(self, env: str, items: Sequence[tuple[list[Message], Message]]) -> np.ndarray:
        """log π(turn | before) of every (before, turn) item."""
        import torch

        seqs = [self._ids(env, before, turn) for before, turn in items]
        out = np.zeros(len(seqs))
        model, pad = self.policy.model, self.policy.tokenizer.pad_token_id or 0
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]) + len(seqs[i][1]))
        with torch.inference_mode():
            for start in range(0, len(order), BATCH):
                chunk = order[start:start + BATCH]
                width = max(len(seqs[i][0]) + len(seqs[i][1]) for i in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):
                    p, c = seqs[i]
                    ids[row, :len(p) + len(c)] = torch.tensor(p + c)
                    mask[row, :len(p) + len(c)] = 1
                logits = model(input_ids=ids.to(self.policy.device),
                               attention_mask=mask.to(self.policy.device)).logits.float()
                logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None].to(logits.device))[..., 0]
                for row, i in enumerate(chunk):
                    p, c = seqs[i]
                    out[i] = float(logp[row, len(p) - 1:len(p) + len(c) - 1].sum())
        return out

    def pair_log_probs(self, pairs: Sequence[Pair]) -> np.ndarray:
        """(n, 2): the summed decision log-probabilities of each pair's chosen and rejected side."""
        out = np.zeros((len(pairs), 2))
        for env in dict.fromkeys(p.env for p in pairs):
            idx = [i for i, p in enumerate(pairs) if p.env == env]
            items, owner = [], []
            for i in idx:
                for col, side in ((0, pairs[i].chosen), (1, pairs[i].rejected)):
                    for item in decisions(pairs[i].prompt, side):
                        items.append(item)
                        owner.append((i, col))
            for (i, col), lp in zip(owner, self.decision_log_probs(env, items), strict=True):
                out[i, col] += lp
        return out

    def ranked_wrong(self, pairs: Sequence[Pair]) -> list[Pair]:
        """The pairs this model ranks wrong: the chosen side not more likely than the rejected one."""
        if not pairs:
            return []
        lp = self.pair_log_probs(pairs)
        return [p for p, (c, r) in zip(pairs, lp.tolist(), strict=True) if not c > r]

    def close(self) -> None:
        self.policy.close()


def score_pairs(model: str, pairs: Sequence[Pair], store: Any = None, device: str | None = None) -> np.ndarray:
    """`PairScorer.pair_log_probs` of `pairs` under the model called `model` (a path or a
    registered name)."""
    scorer = PairScorer.load(model, store, device)
    try:
        return scorer.pair_log_probs(pairs)
    finally:
        scorer.close()


def ranking_summary(policy_lp: np.ndarray, ref_lp: np.ndarray | None = None) -> dict[str, Any]:
    """Counts and accuracies of `pair_log_probs` outputs: `right` (chosen > rejected), `equal`;
    with a reference, the DPO implicit-reward ones at step 0 (`reward_right`, `reward_equal`)."""
    n = len(policy_lp)
    diff = policy_lp[:, 0] - policy_lp[:, 1] if n else np.zeros(0)
    out: dict[str, Any] = {"pairs": n, "right": int((diff > 0).sum()), "equal": int((diff == 0).sum()),
                           "accuracy": float((diff > 0).mean()) if n else None,
                           "mean_chosen": float(policy_lp[:, 0].mean()) if n else None,
                           "mean_rejected": float(policy_lp[:, 1].mean()) if n else None}
    if ref_lp is not None:
        reward = diff - (ref_lp[:, 0] - ref_lp[:, 1] if n else 0)
        out.update(reward_right=int((reward > 0).sum()), reward_equal=int((reward == 0).sum()),
                   reward_accuracy=float((reward > 0).mean()) if n else None)
    return out


def hard_pairs(pairs: Sequence[Pair], model: str, store: Any = None) -> list[Pair]:
    """The pairs the model called `model` ranks wrong (`PairScorer.ranked_wrong`)."""
    scorer = PairScorer.load(model, store)
    try:
        return scorer.ranked_wrong(pairs)
    finally:
        scorer.close()
