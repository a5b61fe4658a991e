"""DPO trainers: TreeDPO on tree pairs (`treedpo`) and the ETO-style whole-trajectory baseline (`eto-dpo`).

Both run TRL's `DPOTrainer` (sigmoid loss, beta 0.1 by default). `step` pairs (one assistant turn
per side) go through TRL unchanged. `continuation` and `trajectory` pairs are multi-turn: their
completions hold `Observation:` user turns written by the environment, and `MaskedDPOTrainer`
(`core.train.masked_dpo`) counts only the assistant tokens.

Models prompted one decision at a time (the from-scratch local ones) see no multi-turn
completion: their `continuation` and `trajectory` pairs keep every decision of each side, each
under its own prompt, and train with `core.train.decision_dpo.DecisionDPOTrainer` (a side's
log-probability is the sum over its decisions).

Reference model (README, "The method as implemented"): the `--ref` model (the SFT weak model in the
paper's W2S setting) when it has the same vocabulary as the trained model; otherwise the trained
model's starting weights (TRL's copy, or the base under a LoRA adapter).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from trl import DPOConfig, DPOTrainer

from core.train import decision_dpo, packed_dpo
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
from core.train.masked_dpo import MaskedDPOTrainer, MaskedPreferenceCollator
from core.train.masked_dpo import SortedDPOTrainer as SortedDPOTrainer  # noqa: F401 -- importers read it here

log = logging.getLogger(__name__)

def same_vocab(tok_a: Any, tok_b: Any) -> bool:
    """Whether two tokenizers map text to the same ids (same vocabulary and specials)."""
    return tok_a.get_vocab() == tok_b.get_vocab()


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
