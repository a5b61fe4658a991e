"""What every trainer shares: device and threads, model loading, LoRA, TRL arguments, saving.

Version notes: TRL 1.16 turns bf16 and activation checkpointing on by
default; on CPU both must be off. transformers 5.24 names the checkpointing field
`activation_checkpointing` (`gradient_checkpointing` is a deprecated alias) while 5.17, on the GPU
image, only has `gradient_checkpointing`; the warm-up ratio moved from `warmup_ratio` into a float
`warmup_steps`. The field is picked by what the installed version has.

On CUDA, activation (gradient) checkpointing is on: 7 B LoRA SFT on 2-4 k-token episodes needs
60-130 GB of activations without it, DPO twice that.

Several processes (`accelerate launch`): each rank loads its copy onto its own GPU (`LOCAL_RANK`),
not GPU 0; under FSDP / DeepSpeed the copy is loaded on the CPU and the trainer shards it. The
effective batch stays `batch_size x grad_accum` whatever `WORLD_SIZE` is (`accumulation_steps`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from core.agents.prompt import DECISION_FLAG, ONE_SHOT_FLAG, decision_rows, merge_user_turns, strip_one_shot
from core.errors import UserError
from core.models.loading import load_model, quiet_checkpointing_deprecation
from core.train.config import TrainConfig, micro_split
from core.train.tensorboard import report_to

log = logging.getLogger(__name__)


def use_cuda(cfg: TrainConfig) -> bool:
    """Whether this run trains on CUDA."""
    return cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())


def setup_threads(cfg: TrainConfig) -> None:
    """Torch CPU threads: the configured count, else 1 on CPU (other work shares the cores; two
    contending threads measured 4-30x slower than one)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif not use_cuda(cfg):
        torch.set_num_threads(1)


def world_size() -> int:
    """The number of training processes (`WORLD_SIZE`, set by `accelerate launch`; 1 otherwise)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def sorted_steps(cfg: TrainConfig) -> bool:
    """Whether the trainer sorts each step's rows into micro-batches (`core.train.batching`):
    when `micro_batch` splits the batch and one process trains (several use their own sampler)."""
    return micro_split(cfg) > 1 and world_size() == 1


def sharded_launch() -> bool:
    """Whether accelerate launched this process with FSDP or DeepSpeed (which shard the model)."""
    return any(os.environ.get(f"ACCELERATE_USE_{k}", "").lower() in ("1", "true") for k in ("FSDP", "DEEPSPEED"))


def training_device(cfg: TrainConfig) -> str:
    """Where this process loads the model it trains: its own GPU (`cuda:LOCAL_RANK`) on CUDA, the
    CPU under FSDP / DeepSpeed (the trainer shards and places it) or without CUDA."""
    if not use_cuda(cfg) or sharded_launch():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0') or 0)}"


def _bf16(cuda: bool) -> bool:
    return cuda and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def accumulation_steps(cfg: TrainConfig, n_processes: int | None = None) -> int:
    """Gradient accumulation per process so that the effective batch is `batch_size x grad_accum`
    on any number of processes (rounded up where they do not divide it, with a warning)."""
    n = n_processes or world_size()
    steps = max(1, math.ceil(cfg.grad_accum / n))
    if steps * n != cfg.grad_accum:
        log.warning("effective batch %d x %d is not divisible over %d processes; using %d", cfg.batch_size,
                    cfg.grad_accum, n, cfg.batch_size * steps * n)
    return steps


def load_policy(name: str, cfg: TrainConfig, frozen: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) for training. Weights stay fp32 for full fine-tuning (bf16 autocast does
    the compute on CUDA; bf16 weights would round away updates at lr 5e-6); a frozen model (the
    DPO reference) and the frozen base under LoRA are loaded in bf16 on CUDA."""
    dtype = torch.bfloat16 if (cfg.lora or frozen) and _bf16(use_cuda(cfg)) else torch.float32
    model, tokenizer = load_model(name, device=training_device(cfg), dtype=dtype)
    model.train()
    return model, tokenizer


def fit_prompts(model: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in the prompt format `model` is used with, as `HFPolicy` renders it at inference: one
    row per decision when its config says so (`core.agents.prompt.DECISION_FLAG`; the from-scratch
    local models), else without the one-shot example when its config says so (`ONE_SHOT_FLAG`), and with
    consecutive user turns merged (`merge_user_turns`: alternating templates such as Llama-2-chat
    and Mistral reject two in a row)."""
    history = getattr(model.config, DECISION_FLAG, None)
    if history is not None:
        return decision_rows(rows, int(history))
    one_shot = getattr(model.config, ONE_SHOT_FLAG, True)
    keys = ("prompt", "messages", "completion", "chosen", "rejected")
    return [{k: merge_user_turns(v if one_shot or k not in ("prompt", "messages") else strip_one_shot(v))
             if k in keys else v for k, v in r.items()} for r in rows]


def install_cpu_lm_head(model: Any) -> None:
    """Replace TRL's fused LM head on `model` (after the trainer patched it) by one that scores the
    labelled positions only, in one plain matmul. Used on CPU.

    TRL's head (`fused_lm_head=True` forward) returns per-token log-probabilities without the full
    logits; without Triton it scores every position in torch tiles. For the from-scratch local models the
    vocabulary projection is most of the compute and ~85 % of the tokens are prompt, so that made a
    training step ~5x slower (measured: 8 s against 1.5 s for 32 one-decision rows, 0.36 M model).
    The contract (fields of `FusedCausalLMOutput`, zero where the label is -100) stays the same."""
    from trl.trainer.utils import FusedCausalLMOutput

    patched = model.forward

    def forward(*args: Any, fused_lm_head: bool = False, labels: Any = None, shift_labels: Any = None,
                num_items_in_batch: Any = None, **kwargs: Any) -> Any:
        if not fused_lm_head:
            return patched(*args, labels=labels, shift_labels=shift_labels, num_items_in_batch=num_items_in_batch,
                           **kwargs)
        kwargs.pop("output_router_logits", None)
        kwargs["use_cache"] = False
        hidden = model.get_decoder()(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden, labels = hidden[:, :-1], labels[:, 1:]
        else:
            labels = shift_labels
        mask = labels != -100
        fields = {k: torch.zeros(mask.shape, dtype=v.dtype, device=v.device).masked_scatter(mask, v)
                  for k, v in score_tokens(model, hidden[mask], labels[mask]).items()}
        n = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-fields["log_probs"].sum() / n, label_mask=mask, **fields)

    model.forward = forward


def score_tokens(model: Any, hidden: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """The fused head's per-token fields for tokens `target` (T,) predicted by hidden states
    `hidden` (T, H): `log_probs` (with gradient), `entropy`, `mean_logits`, `is_top1` (without),
    from one plain matmul with the model's output embeddings, in fp32."""
    logits = model.get_output_embeddings()(hidden).float()
    logp = logits.log_softmax(-1)
    out = {"log_probs": logp.gather(-1, target[:, None]).squeeze(-1)}
    with torch.no_grad():
        out.update(entropy=-(logp.exp() * logp).sum(-1), mean_logits=logits.mean(-1),
                   is_top1=logits.argmax(-1) == target)
    return out


def install_cpu_lm_heads(trainer: Any) -> None:
    """`install_cpu_lm_head` on every model a TRL trainer patched: the trained one (its base under
    PEFT) and the DPO reference when there is one."""
    model = trainer.model
    install_cpu_lm_head(model.get_base_model() if hasattr(model, "get_base_model") else model)
    if getattr(trainer, "ref_model", None) is not None:
        install_cpu_lm_head(trainer.ref_model)


def lora_config(cfg: TrainConfig) -> Any:
    """The PEFT LoRA config (`lora_targets`: module names or all-linear), or None without --lora."""
    if not cfg.lora:
        return None
    from peft import LoraConfig

    targets = cfg.lora_targets.strip()
    modules: str | list[str] = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=modules, task_type="CAUSAL_LM")


def trainer_kwargs(cfg: TrainConfig, out_dir: Path, arg_cls: type, max_length: int) -> dict[str, Any]:
    """Keyword arguments for a TRL config class (`SFTConfig`, `DPOConfig`) from our config. Every
    trainer is built through here: it also installs `quiet_checkpointing_deprecation`."""
    quiet_checkpointing_deprecation()
    names = {f.name for f in dataclasses.fields(arg_cls)}
    cuda = use_cuda(cfg)
    split = micro_split(cfg)  # micro-batches per batch: accumulated into the same step
    kw: dict[str, Any] = dict(
        output_dir=str(out_dir), num_train_epochs=float(cfg.epochs), learning_rate=float(cfg.lr),
        per_device_train_batch_size=cfg.batch_size // split, gradient_accumulation_steps=accumulation_steps(cfg) * split,
        max_steps=cfg.max_steps, lr_scheduler_type=cfg.lr_scheduler, max_grad_norm=float(cfg.max_grad_norm),
        logging_steps=cfg.logging_steps, logging_first_step=True, save_strategy="steps",
        save_steps=cfg.save_steps, save_total_limit=2, seed=cfg.seed, report_to=report_to(), disable_tqdm=True,
        dataloader_num_workers=0, bf16=_bf16(cuda), use_cpu=not cuda, max_length=max_length,
    )
    if world_size() > 1:  # DDP: every parameter that trains gets a gradient; skip the unused scan
        kw["ddp_find_unused_parameters"] = False
    if "warmup_ratio" in names:
        kw["warmup_ratio"] = cfg.warmup_ratio
    else:
        kw["warmup_steps"] = float(cfg.warmup_ratio)
    for name in ("activation_checkpointing", "gradient_checkpointing"):
        if name in names:  # the first one the installed version has; never both
            kw[name] = cuda  # memory for compute on a GPU; pointless (and slower) on CPU
            break
    return kw


def context_length(model: Any, cfg: TrainConfig) -> int:
    """The token limit: the configured one, clamped to the model's context."""
    limit = getattr(model.config, "max_position_embeddings", None) or cfg.max_length
    return min(cfg.max_length, int(limit))


def check_not_empty(trainer: Any, n_rows: int, cfg: TrainConfig) -> None:
    """A UserError when the trainer dropped every row (each longer than the token limit)."""
    if len(trainer.train_dataset) == 0:
        raise UserError(f"all {n_rows} training examples were dropped: none fits max_length={cfg.max_length} "
                        "tokens (or the model's context) with its answer; raise --max-length or use shorter data")


def save_model(trainer: Any, tokenizer: Any, out: Path, merge_lora: bool, sharded: bool | None = None) -> Path:
    """Save the trained model with its tokenizer to `out`: LoRA merged into the weights unless
    `merge_lora` is False (then the adapter alone, which `load_model` applies to its base).
    Called on every rank: TRL's `save_model` gathers FSDP / DeepSpeed shards.

    A sharded model (FSDP / DeepSpeed; `sharded=None` asks the trainer) cannot be merged in place:
    its adapter is saved through the gathering `save_model`, then rank 0 merges it into a fresh
    CPU copy of the base."""
    out.mkdir(parents=True, exist_ok=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    main = trainer.accelerator.is_main_process
    if sharded is None:
        sharded = bool(getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False))
    if merge_lora and hasattr(model, "merge_and_unload"):
        if sharded:
            _merge_gathered(trainer, model, out)
        elif main:
            model.merge_and_unload().save_pretrained(out)
    else:
        trainer.save_model(str(out))
    if main:
        tokenizer.save_pretrained(out)
    trainer.accelerator.wait_for_everyone()
    return out


def _merge_gathered(trainer: Any, model: Any, out: Path) -> None:
    """Merge a sharded run's LoRA adapter into its base on rank 0, from the gathered adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter_dir = out.with_name(f".{out.name}.adapter")
    trainer.save_model(str(adapter_dir))  # collective: every rank takes part in the gather
    if trainer.accelerator.is_main_process:
        base_path = model.peft_config[model.active_adapter].base_model_name_or_path
        dtype = getattr(model.get_base_model().config, "dtype", None) or "auto"
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
        PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload().save_pretrained(out)
        shutil.rmtree(adapter_dir, ignore_errors=True)


def is_main_process() -> bool:
    """False in the non-zero ranks of a multi-process (accelerate) launch."""
    return os.environ.get("RANK", "0") == "0"
