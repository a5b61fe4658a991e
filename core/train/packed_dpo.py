"""Packed DPO (`--packing pair|tree`): TRL's loss on sequences whose shared prefixes run once.

The layouts are `core.train.packing`'s. How it plugs into TRL 1.16's `DPOTrainer` without
touching the loss: like `core.train.decision_dpo`, the collator (`PackingCollator`) hands TRL a
per-side placeholder batch (`2B` rows: pair b's chosen side b, its rejected side B + b; each
`completion_mask` row holds as many ones as the side scores tokens, after a leading zero column
that TRL drops) plus the packed rows (`PACKED_KEYS`), and `packed_trainer(cls)` adds a
`_compute_loss` that, for that one call, replaces the forward of the policy and of the reference
by one that runs the packed rows through the decoder (4-D mask, depth position ids) and scores
each packed token once from its parent's hidden state (`core.train.common.score_tokens`); every
per-token field TRL reads (log-probabilities, entropy, mean logits, top-1) is gathered into the
sides' rows (`core.train.packing.per_side`). TRL's sums, loss, metrics and backward then run as
they do unpacked; TRL's token count (`num_tokens`) counts the packed positions, the tokens
actually computed.

Both preference row formats pack: TRL's (full-history prompts: prompt + chosen, prompt +
rejected, observation turns masked as `MaskedPreferenceCollator` masks them) and the
one-decision prompt's decision rows (`core.train.decision_dpo`: under `pair` a pair's decisions
share the prefix their prompts share, at least the first decision's prompt; under `tree` every
row of a micro-batch joins the trie). `none` builds none of this: TRL as before.

The 4-D mask needs an attention implementation that takes one: `sdpa` (a boolean mask) or
`eager` (the additive float form); others (flash attention, flex) are refused (`check_model`).
Precomputed reference log-probabilities (a TRL option the DPO config does not set) would bypass
the packing: TRL computes them outside the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from core.errors import UserError
from core.train.common import score_tokens
from core.train.decision_dpo import ID_COLUMNS, DecisionCollator, swapped_forwards
from core.train.packing import Packing, Scored, pack, pair_sequences, parent_states, per_side, scored_targets

#: Attention implementations that take the packed 4-D mask.
ATTENTIONS = ("sdpa", "eager")
#: The packed rows in a batch, taken out before TRL sees it (fields of `Packing`).
PACKED_KEYS = ("input_ids", "position_ids", "attention_mask", "valid", "scored_node", "scored_parent",
               "side_index", "side_mask")


def check_model(model: Any, name: str, mode: str) -> None:
    """A one-line UserError when `model` cannot run packed rows exactly: its attention
    implementation takes no 4-D mask, or its head is not a plain projection of the last state."""
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if impl not in ATTENTIONS:
        raise UserError(f"--packing {mode} needs attention that takes a 4-D mask ({' or '.join(ATTENTIONS)}); "
                        f"model {name} uses {impl}: use --packing none")
    if getattr(model.config, "final_logit_softcapping", None):
        raise UserError(f"--packing {mode} scores tokens with a plain output projection; model {name} caps its "
                        "logits: use --packing none")


@dataclass
class PackingCollator(DecisionCollator):
    """The preference collator of packed training (module docstring): TRL-format rows or decision
    rows in, per-side placeholders and the packed rows (`packed_*` keys) out."""

    mode: str = "pair"
    budget: int = 0  # positions per packed row; 0: twice the batch's longest sequence

    def sequences(self, examples: list[dict[str, Any]]) -> list[Scored]:
        """The batch's sequences, truncated as TRL truncates them, each with its side and pair."""
        n = len(examples)
        if ID_COLUMNS[0] in examples[0]:
            return [Scored(ids=self._cut(list(prompt) + list(completion)),
                           scored=self._cut([0] * len(prompt) + [1] * len(completion)), side=s * n + b, group=b)
                    for s in (0, 1) for b, e in enumerate(examples)
                    for side, prompt, completion in zip(*(e[c] for c in (ID_COLUMNS[2], *ID_COLUMNS[:2])))
                    if side == s]
        return [seq for b, e in enumerate(examples)
                for seq in pair_sequences(e["prompt_ids"], e["chosen_ids"], e["rejected_ids"], b, n,
                                          e.get("chosen_loss_mask"), e.get("rejected_loss_mask"), cut=self._cut)]

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        packing = pack(self.sequences(examples), 2 * len(examples), self.mode, self.budget, self.pad_token_id)
        sides = packing.side_mask.long()
        completion = torch.cat([torch.zeros_like(sides[:, :1]), sides], dim=1)
        return {"input_ids": torch.zeros_like(completion), "completion_mask": completion,
                "attention_mask": packing.valid.long(),  # TRL counts these: the tokens computed
                **{f"packed_{k}": getattr(packing, k) for k in PACKED_KEYS}}


def packed_forward(model: Any, packing: Packing, autocast: Callable[[], Any] = nullcontext) -> Any:
    """A forward for `model` that ignores TRL's per-side placeholders, runs the packed rows and
    returns the fused head's per-token fields as per-side rows (`FusedCausalLMOutput`), under
    `autocast()` (the trainer's mixed precision: the forward it replaces had it)."""
    from trl.trainer.utils import FusedCausalLMOutput

    def forward(*args: Any, fused_lm_head: bool = False, **kwargs: Any) -> Any:
        if not fused_lm_head:
            raise UserError("packed DPO gives no per-row logits (TRL's deprecated return_outputs / compute_metrics); "
                            "use --packing none")
        mask = packing.attention_mask
        dtype = model.get_output_embeddings().weight.dtype
        if getattr(model.config, "_attn_implementation", "eager") != "sdpa":  # eager adds its mask to the scores
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
        with autocast():
            hidden = model.get_decoder()(input_ids=packing.input_ids, attention_mask=mask,
                                         position_ids=packing.position_ids, use_cache=False).last_hidden_state
            fields = score_tokens(model, parent_states(hidden, packing), scored_targets(packing))
        sides = {k: per_side(v, packing) for k, v in fields.items()}
        return FusedCausalLMOutput(loss=None, label_mask=packing.side_mask, **sides)

    return forward


class PackedDPOMixin:
    """`_compute_loss` for batches of `PackingCollator`; others go to the next class (module
    docstring). Put it first: `packed_trainer(cls)`."""

    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        if f"packed_{PACKED_KEYS[0]}" not in inputs:
            return super()._compute_loss(model, inputs, return_outputs)  # type: ignore[misc]
        inputs = dict(inputs)
        packing = Packing(**{k: inputs.pop(f"packed_{k}") for k in PACKED_KEYS})
        autocast = self.accelerator.autocast  # type: ignore[attr-defined]
        with swapped_forwards(self, lambda m, _inner: packed_forward(m, packing, autocast)):
            return super()._compute_loss(model, inputs, return_outputs)  # type: ignore[misc]


def packed_trainer(cls: type) -> type:
    """`cls` (a `MaskedDPOTrainer` or a subclass) training on packed batches."""
    return type(f"Packed{cls.__name__}", (PackedDPOMixin, cls), {"__module__": __name__})
