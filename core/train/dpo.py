"""DPO trainers: TreeDPO on tree pairs (`treedpo`) and the ETO-style whole-trajectory baseline (`eto-dpo`).

Both run TRL's `DPOTrainer` (sigmoid loss, beta 0.1 by default). `step` pairs (one assistant turn
per side) go through TRL unchanged. `continuation` and `trajectory` pairs are multi-turn: their
completions hold `Observation:` user turns written by the environment, not by the policy, and
plain TRL would count those tokens in the sequence log-probabilities. `MaskedDPOTrainer` adds a
per-token loss mask that keeps only the tokens of assistant turns (content and end-of-turn; the
template's `<|im_start|>assistant` header after an observation is also masked, like the first
one, which TRL puts in the prompt) and `MaskedPreferenceCollator` folds it into TRL's
`completion_mask`, which then zeroes those positions for both the policy and the reference.

Models prompted one decision at a time (the from-scratch local ones) see no multi-turn
completion: their `continuation` and `trajectory` pairs keep every decision of each side, each
under its own prompt, and train with `core.train.decision_dpo.DecisionDPOTrainer` (a side's
log-probability is the sum over its decisions).

The assistant spans come from the chat template: its `{% generation %}` spans where it has them
(the local models), else by tokenizing the conversation prefix by prefix (any template;
`core.train.masks`).

Reference model (README, "The method as implemented"): the `--ref` model (the SFT weak model in the
paper's W2S setting) when it has the same vocabulary as the trained model; otherwise the trained
model's starting weights (TRL's copy, or the base under a LoRA adapter).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from core.train.batching import SortedStepTrainer
from core.train.common import (
    check_not_empty,
    context_length,
    fit_prompts,
    install_cpu_lm_heads,
    load_policy,
    lora_config,
    sorted_steps,
    trainer_kwargs,
    use_cuda,
)
from core.train.config import DPOTrainConfig
from core.train.data import to_dataset
from core.train.masks import assistant_mask

log = logging.getLogger(__name__)

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


def same_vocab(tok_a: Any, tok_b: Any) -> bool:
    """Whether two tokenizers map text to the same ids (same vocabulary and specials)."""
    return tok_a.get_vocab() == tok_b.get_vocab()


class SortedDPOTrainer(SortedStepTrainer, MaskedDPOTrainer):
    """`MaskedDPOTrainer` with each step's pairs sorted into micro-batches (`core.train.batching`)."""


def build_dpo_trainer(cfg: DPOTrainConfig, rows: list[dict[str, Any]], out_dir: Path,
                      callbacks: list[Any] | None = None, masked: bool = True) -> tuple[Any, Any]:
    """(trainer, tokenizer) for DPO on preference rows: `MaskedDPOTrainer`, or `DecisionDPOTrainer`
    when the model's one-decision prompt gives pairs with several decisions a side
    (`core.train.decision_dpo`), either on packed rows with `--packing pair|tree`
    (`core.train.packed_dpo`). `masked=False` builds plain TRL's `DPOTrainer` (the benchmark's
    baseline; it trains a multi-decision pair on its first decisions only; no packing)."""
    model, tokenizer = load_policy(cfg.model, cfg)
    rows = fit_prompts(model, rows)
    ref_model = None
    if cfg.ref:
        ref, ref_tok = load_policy(cfg.ref, cfg, frozen=True)
        if same_vocab(tokenizer, ref_tok):
            ref_model = ref.eval()
        else:
            log.warning("reference %s has another tokenizer than %s; using the trained model's starting "
                        "weights as reference", cfg.ref, cfg.model)
    max_length = context_length(model, cfg)
    args = DPOConfig(**trainer_kwargs(cfg, out_dir, DPOConfig, max_length), beta=cfg.beta,
                     loss_type=[cfg.loss_type])
    collator = None
    cls: type = DPOTrainer
    if masked:
        from core.train import decision_dpo

        multi = decision_dpo.has_decisions(rows)  # a one-decision prompt's pairs with several decisions a side
        if multi:
            rows = decision_dpo.with_decisions(rows)
        shape = dict(pad_token_id=tokenizer.pad_token_id, max_length=args.max_length,
                     truncation_mode=args.truncation_mode, pad_to_multiple_of=args.pad_to_multiple_of)
        collator = (decision_dpo.DecisionCollator if multi else MaskedPreferenceCollator)(**shape)
        cls = {(False, False): MaskedDPOTrainer, (False, True): SortedDPOTrainer,
               (True, False): decision_dpo.DecisionDPOTrainer,
               (True, True): decision_dpo.SortedDecisionDPOTrainer}[multi, sorted_steps(cfg)]
        if cfg.packing != "none":
            from core.train import packed_dpo

            packed_dpo.check_model(model, cfg.model, cfg.packing)
            collator = packed_dpo.PackingCollator(**shape, mode=cfg.packing, budget=cfg.pack_tokens)
            cls = packed_dpo.packed_trainer(cls)
    trainer = cls(model=model, ref_model=ref_model, args=args, data_collator=collator,
                  train_dataset=to_dataset(rows), processing_class=tokenizer,
                  peft_config=lora_config(cfg), callbacks=callbacks)
    if not use_cuda(cfg):
        install_cpu_lm_heads(trainer)
    check_not_empty(trainer, len(rows), cfg)
    return trainer, tokenizer
