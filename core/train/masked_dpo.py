"""The DPO trainer with masked multi-turn completions, under `core.train.dpo`'s builder.

`continuation` and `trajectory` pairs are multi-turn: their completions hold `Observation:` user
turns written by the environment, not by the policy, and plain TRL would count those tokens in
the sequence log-probabilities. `MaskedDPOTrainer` adds a per-token loss mask that keeps only
the tokens of assistant turns (content and end-of-turn; the template's `<|im_start|>assistant`
header after an observation is also masked, like the first one, which TRL puts in the prompt)
and `MaskedPreferenceCollator` folds it into TRL's `completion_mask`, which then zeroes those
positions for both the policy and the reference. Rows whose completions are a single assistant
turn get no mask and train exactly as with plain TRL.

The assistant spans come from the chat template: its `{% generation %}` spans where it has them
(the local models), else by tokenizing the conversation prefix by prefix (any template;
`core.train.masks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from core.train.batching import SortedStepTrainer
from core.train.masks import assistant_mask

MASK_COLUMNS = ("chosen_loss_mask", "rejected_loss_mask")


@dataclass
class MaskedPreferenceCollator(DataCollatorForPreference):
    """TRL's preference collator, with the per-token loss masks (when present) applied to its
    `completion_mask` after the same truncation and padding."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = super().torch_call(examples)
        if MASK_COLUMNS[0] not in examples[0]:
            return out
        masks = [[1] * len(e["prompt_ids"]) + list(e[col]) for col in MASK_COLUMNS for e in examples]
        if self.max_length is not None:
            sl = slice(None, self.max_length) if self.truncation_mode == "keep_start" else slice(-self.max_length, None)
            masks = [m[sl] for m in masks]
        width = out["completion_mask"].shape[1]
        keep = torch.zeros_like(out["completion_mask"])
        for i, m in enumerate(masks):
            keep[i, : len(m)] = torch.tensor(m[:width], dtype=keep.dtype)
        out["completion_mask"] = out["completion_mask"] * keep
        return out


class MaskedDPOTrainer(DPOTrainer):
    """`DPOTrainer` whose sequence log-probabilities count assistant tokens only.

    Rows whose completions are a single assistant turn get no mask column and train exactly as
    with plain TRL."""

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: DPOConfig, dataset_name: str) -> Any:
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        first = dataset[0]
        multi_turn = isinstance(first.get("prompt"), list) and any(
            len(r) > 1 for col in ("chosen", "rejected") for r in dataset[col])
        if not multi_turn:
            return dataset

        def add_masks(example: dict[str, Any]) -> dict[str, list[int]]:
            start = len(example["prompt_ids"])
            return {f"{side}_loss_mask": assistant_mask(processing_class, example["prompt"], example[side],
                                                        start, len(example[f"{side}_ids"]))
                    for side in ("chosen", "rejected")}

        return dataset.map(add_masks, desc=f"Masking observation turns of {dataset_name} dataset")

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        self._signature_columns = [*self._signature_columns, *MASK_COLUMNS]


class SortedDPOTrainer(SortedStepTrainer, MaskedDPOTrainer):
    """`MaskedDPOTrainer` with each step's pairs sorted into micro-batches (`core.train.batching`)."""
