"""Supervised fine-tuning (`sft`, and `mcts` = SFT of the strong SFT model on MCTS best paths).

TRL's `SFTTrainer` on `{"prompt", "completion"}` conversational rows, loss on the assistant turns
of the completion only (thought, action and end-of-turn), never the fixed env prefix, the task
message or the observations. (The paper's reference code trains on every token, a bug this does
not copy.) With `{% generation %}` markers in the chat template (the local models) TRL's
`assistant_only_loss` does it. Other templates (Qwen2.5-Instruct, Llama-2/3 chat, Mistral: TRL
knows training templates for a few and raises for the rest) get the rows tokenized here, with the
mask from prefix tokenizations (`core.train.masks`), and TRL trains on them as given.
On CPU the LM head scores the completion positions only (`install_cpu_lm_heads`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trl import SFTConfig, SFTTrainer

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
from core.train.config import SFTTrainConfig
from core.train.data import to_dataset
from core.train.masks import has_generation_markers, tokenize_sft_row


class SortedSFTTrainer(SortedStepTrainer, SFTTrainer):
    """TRL's SFT trainer with each step's rows sorted into micro-batches (`core.train.batching`)."""


def build_sft_trainer(cfg: SFTTrainConfig, rows: list[dict[str, Any]], out_dir: Path,
                      callbacks: list[Any] | None = None) -> tuple[Any, Any]:
    """(trainer, tokenizer) for SFT on chat rows."""
    model, tokenizer = load_policy(cfg.model, cfg)
    rows = fit_prompts(model, rows)
    markers = has_generation_markers(tokenizer)
    if not markers:
        rows = [tokenize_sft_row(tokenizer, r) for r in rows]
    args = SFTConfig(**trainer_kwargs(cfg, out_dir, SFTConfig, context_length(model, cfg)),
                     assistant_only_loss=markers)
    cls = SortedSFTTrainer if sorted_steps(cfg) else SFTTrainer
    trainer = cls(model=model, args=args, train_dataset=to_dataset(rows), processing_class=tokenizer,
                         peft_config=lora_config(cfg), callbacks=callbacks)
    if not use_cuda(cfg):
        install_cpu_lm_heads(trainer)
    check_not_empty(trainer, len(rows), cfg)
    return trainer, tokenizer
