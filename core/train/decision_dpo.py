"""DPO on pairs that keep every decision, for models prompted one decision at a time.

Under the one-decision prompt (`core.agents.prompt.DECISION_FLAG`) a `continuation` or `trajectory`
pair is not one sequence: each of its side's decisions (the assistant turns after the divergence
point) has its own prompt, `decision_view` of that side's history. A side's log-probability is
the sum over its decisions of log pi(decision | its own prompt), for the policy and the reference
alike, and the DPO loss takes those sums where TRL takes a sequence's log-probability. The rows
carry the decisions in `chosen_decisions` / `rejected_decisions` (`decision_rows`); a pair with one
decision a side is the same sum of one term, so it trains exactly as TRL's step row.

How it reuses TRL's loss and metrics unchanged: TRL's `_compute_loss` runs the model once over a
batch of `2B` sequences (chosen then rejected), sums each one's per-token log-probabilities and
builds the loss and every metric (rewards, margins, accuracies, entropy, token accuracy) from
those per-token tensors. `DecisionCollator` flattens the batch's decisions into rows (every
decision's prompt + completion, ordered chosen sides first, each side's rows together) and gives
TRL a per-side `completion_mask` of `2B` rows, each holding as many ones as its side has
completion tokens. `DecisionDPOTrainer._compute_loss` then lets TRL run with the forward of the
policy and the reference replaced, for that call, by one that runs the real rows and packs each
side's completion-token outputs, in order, into that side's row (`pack_sides`): TRL's row sum is
then the scatter-add of the side's decision log-probabilities, and its token-level metrics count
the same tokens. The replaced forward wraps whatever forward is there (TRL's fused head, or the
CPU head of `install_cpu_lm_heads`).

The full-history prompt needs none of this: its multi-turn completions are one sequence with the
observation turns masked (`MaskedDPOTrainer`). Precomputed reference log-probabilities are refused
(TRL computes them outside the loss).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from trl import DPOConfig
from trl.trainer.utils import pad

from core.agents.prompt import DECISION_COLUMNS
from core.errors import UserError
from core.train.masked_dpo import MaskedDPOTrainer, MaskedPreferenceCollator, SortedDPOTrainer

log = logging.getLogger(__name__)

#: The tokenized columns of a pair: its decisions' prompt and completion ids and side (0 chosen, 1 rejected).
ID_COLUMNS = ("decision_prompt_ids", "decision_completion_ids", "decision_sides")
#: The batch tensors of the flattened rows, taken out before TRL sees the batch.
ROW_KEYS = ("decision_input_ids", "decision_labels", "decision_side")


def has_decisions(rows: list[dict[str, Any]]) -> bool:
    """Whether some preference row holds more than one decision on a side (`decision_rows`)."""
    return any(DECISION_COLUMNS[0] in r for r in rows)


def with_decisions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every row with its decision columns (a dataset needs the same columns in every row): a
    one-decision row gets its own prompt and sides as its single decisions."""
    return [r if DECISION_COLUMNS[0] in r else
            {**r, **{col: [{"prompt": r["prompt"], "completion": r[side]}]
                     for col, side in zip(DECISION_COLUMNS, ("chosen", "rejected"))}} for r in rows]


@dataclass
class DecisionCollator(MaskedPreferenceCollator):
    """The preference collator for pairs with decision columns (see the module docstring); other
    batches go to `MaskedPreferenceCollator`.

    Output: `decision_input_ids` / `attention_mask` / `decision_labels` (-100 outside completions)
    of the rows, `decision_side` (each row's side: pair b's chosen side is b, its rejected side
    B + b), the per-side `completion_mask` (`2B` rows, a leading zero column: TRL drops the first
    position) and `input_ids`, a zero placeholder of its shape (TRL derives its labels from it)."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if ID_COLUMNS[0] not in examples[0]:
            return super().torch_call(examples)
        ids, masks, sides = [], [], []
        for s in (0, 1):
            for b, e in enumerate(examples):
                for side, prompt, completion in zip(e["decision_sides"], e["decision_prompt_ids"],
                                                    e["decision_completion_ids"]):
                    if side == s:
                        ids.append(self._cut(list(prompt) + list(completion)))
                        masks.append(self._cut([0] * len(prompt) + [1] * len(completion)))
                        sides.append(s * len(examples) + b)
        counts = torch.zeros(2 * len(examples), dtype=torch.long)
        # a row's first token is never scored (nothing predicts it), as in TRL's shifted sequences
        counts.index_add_(0, torch.tensor(sides), torch.tensor([sum(m[1:]) for m in masks]))
        width = int(counts.max()) + 1
        per_side = (torch.arange(width)[None, :] >= 1) & (torch.arange(width)[None, :] <= counts[:, None])
        input_ids = pad([torch.tensor(x) for x in ids], padding_value=self.pad_token_id, padding_side="right",
                        pad_to_multiple_of=self.pad_to_multiple_of)
        completion = pad([torch.tensor(m) for m in masks], padding_value=0, padding_side="right",
                         pad_to_multiple_of=self.pad_to_multiple_of)
        attention = pad([torch.ones(len(x), dtype=torch.long) for x in ids], padding_value=0, padding_side="right",
                        pad_to_multiple_of=self.pad_to_multiple_of)
        return {"input_ids": torch.zeros(per_side.shape, dtype=torch.long), "attention_mask": attention,
                "completion_mask": per_side.long(), "decision_input_ids": input_ids,
                "decision_labels": input_ids.masked_fill(completion == 0, -100), "decision_side": torch.tensor(sides)}

    def _cut(self, seq: list[int]) -> list[int]:
        """A row truncated as TRL truncates a sequence (`max_length`, `truncation_mode`)."""
        if self.max_length is None:
            return seq
        return seq[:self.max_length] if self.truncation_mode == "keep_start" else seq[-self.max_length:]


def pack_sides(out: Any, labels: torch.Tensor, side: torch.Tensor, n_sides: int, width: int) -> Any:
    """A fused-head output of the rows (per-token fields, zero where the label is -100) as one of
    `n_sides` rows of `width` positions: each side's completion-token values in row order, then
    zeros. Rows of a side must be consecutive and sides ascending (`DecisionCollator`)."""
    mask = labels[:, 1:] != -100
    token_side = side[:, None].expand_as(mask)[mask]
    counts = torch.bincount(token_side, minlength=n_sides)
    position = torch.arange(token_side.numel(), device=mask.device) - (counts.cumsum(0) - counts)[token_side]
    packed = {}
    for key, value in out.items():
        if torch.is_tensor(value) and value.dim() == 2 and value.shape[0] == mask.shape[0]:
            value = value[:, -mask.shape[1]:]  # prompt-learning PEFT prepends virtual positions
            packed[key] = value.new_zeros((n_sides, width)).index_put((token_side, position), value[mask])
    return type(out)(**{**out, **packed})


class DecisionDPOTrainer(MaskedDPOTrainer):
    """`MaskedDPOTrainer` for pairs with decision columns: a side's log-probability is the sum over
    its decisions, each under its own prompt (module docstring). Use it with `DecisionCollator`."""

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: DPOConfig, dataset_name: str) -> Any:
        if DECISION_COLUMNS[0] not in dataset.column_names:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if args.precompute_ref_log_probs:
            raise UserError("precompute_ref_log_probs does not apply to multi-decision pairs (their reference "
                            "log-probabilities are sums over decisions); leave it off")
        from datasets import Dataset

        # each decision tokenized exactly as TRL tokenizes a pair's prompt and completion: as a pair
        # whose two sides are that decision
        flat = [{"prompt": d["prompt"], "chosen": d["completion"], "rejected": d["completion"], "pair": i,
                 "side": s} for i, row in enumerate(dataset) for s, col in enumerate(DECISION_COLUMNS) for d in row[col]]
        tokens = super()._prepare_dataset(Dataset.from_list(flat), processing_class, args, dataset_name)
        pairs: dict[int, dict[str, list[Any]]] = {}
        for i, s, prompt, completion in zip(tokens["pair"], tokens["side"], tokens["prompt_ids"], tokens["chosen_ids"]):
            for col, value in zip(ID_COLUMNS, (prompt, completion, s)):
                pairs.setdefault(i, {c: [] for c in ID_COLUMNS})[col].append(value)
        wanted = [sum(len(row[col]) for col in DECISION_COLUMNS) for row in dataset]
        kept = [pairs[i] for i in sorted(pairs) if len(pairs[i][ID_COLUMNS[2]]) == wanted[i]]
        if len(kept) < len(wanted):  # TRL drops a decision whose prompt fills max_length; the pair goes with it
            log.warning("%d of %d pairs dropped: a decision's prompt fills max_length=%s", len(wanted) - len(kept),
                        len(wanted), args.max_length)
        return Dataset.from_dict({c: [p[c] for p in kept] for c in ID_COLUMNS})

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        self._signature_columns = [*self._signature_columns, *ID_COLUMNS]

    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        if ROW_KEYS[0] not in inputs:
            return super()._compute_loss(model, inputs, return_outputs)
        inputs = dict(inputs)
        rows = {k: inputs.pop(k) for k in ROW_KEYS}
        n_sides, width = inputs["completion_mask"].shape
        with swapped_forwards(self, lambda m, inner: _row_forward(inner, rows, n_sides, width - 1)):
            return super()._compute_loss(model, inputs, return_outputs)


@contextmanager
def swapped_forwards(trainer: Any, wrap: Callable[[Any, Any], Any]) -> Iterator[None]:
    """For the block, the forward of the policy (its base under PEFT) and of the reference replaced
    by `wrap(model, its current forward)`; restored after."""
    policy = trainer.accelerator.unwrap_model(trainer.model)
    models = [policy.get_base_model() if hasattr(policy, "get_base_model") else policy]
    if trainer.ref_model is not None:
        models.append(trainer.accelerator.unwrap_model(trainer.ref_model))
    models = list({id(m): m for m in models}.values())
    saved = [m.__dict__.get("forward") for m in models]
    for m in models:
        m.forward = wrap(m, m.forward)
    try:
        yield
    finally:
        for m, forward in zip(models, saved):
            if forward is None:
                del m.forward
            else:
                m.forward = forward


def _row_forward(inner: Any, rows: dict[str, torch.Tensor], n_sides: int, width: int) -> Any:
    """A forward that ignores TRL's per-side placeholders (`input_ids`, `labels`) and runs the rows."""

    def forward(*args: Any, input_ids: Any = None, labels: Any = None, fused_lm_head: bool = False,
                **kwargs: Any) -> Any:
        if not fused_lm_head:  # the per-row logits (TRL's deprecated `return_outputs` path)
            return inner(input_ids=rows["decision_input_ids"], **kwargs)
        out = inner(input_ids=rows["decision_input_ids"], labels=rows["decision_labels"], fused_lm_head=True,
                    **kwargs)
        return pack_sides(out, rows["decision_labels"], rows["decision_side"], n_sides, width)

    return forward


class SortedDecisionDPOTrainer(SortedDPOTrainer, DecisionDPOTrainer):
    """`DecisionDPOTrainer` with each step's pairs sorted into micro-batches (`core.train.batching`)."""
