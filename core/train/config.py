"""Training methods and their typed configurations, with the reference defaults.

A method (`METHODS`) is a trainer, the data it learns from and the trainer's typed config:

    sft      SFT trainer on demonstrations: expert:ENV or successes:ENV:MODEL (W2S-SFT)
    mcts     SFT trainer on the MCTS best paths: best-paths:ENV (the strong SFT model as start)
    treedpo  DPO trainer on tree pairs: pairs:ENV:step or pairs:ENV:continuation
    eto-dpo  DPO trainer on whole-trajectory pairs: pairs:ENV:trajectory (the ETO baseline;
             `dpo` is its earlier name, still accepted)

Every method also takes a file of rows in its trainer's shape. The SFT trainer's config is
`SFTTrainConfig`, the DPO trainer's `DPOTrainConfig`. To add a method: add a `Method` to
`METHODS` (and a trainer to `TRAINERS` if it needs a new one, its builder in `core.train.jobs.TRAINER_BUILDERS`).

Presets: `paper` holds the release's values for real 0.5-13 B models: LoRA (r 128, alpha 256) on
the attention projections q/k/v/o, lr 2e-5 (SFT and DPO), a constant schedule after a linear
warm-up, gradient-norm clip 0.5, 3 epochs, effective batch 32, beta 0.1, sigmoid loss. A full
fp32 fine-tune of 7 B would need ~120 GB and write ~28 GB checkpoints; LoRA needs a fraction.
`tiny` holds values for the embedded default's from-scratch models (0.2-20 M parameters, no
pretraining): they need a far larger learning rate and a small batch to learn anything in a few
hundred steps, and LoRA is pointless at that size.

The effective batch is `batch_size x grad_accum` whatever the number of GPUs: on N processes the
accumulation becomes `ceil(grad_accum / N)` (`core.train.common.accumulation_steps`).

Every field carries its help text in `metadata["help"]` (the CLI and the dashboard show it;
`core.fields`, the same convention as the tree and exploration settings of `core.settings`).
`validate_fields` checks values without touching the store or any model, so a bad config is
rejected before a process starts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from core.errors import UserError

DPO_LOSSES = ("sigmoid", "hinge", "ipo")
SCHEDULERS = ("constant_with_warmup", "cosine", "linear")
DEVICES = ("auto", "cuda", "cpu")
PACKINGS = ("none", "pair", "tree")  # core.train.packed_dpo


@dataclass
class TrainConfig:
    """Fields shared by every training method."""

    model: str = field(default="", metadata={
        "help": "model to train: a name under data/models, a local folder or a hub id"})
    data: str = field(default="", metadata={
        "help": "training data SPEC, e.g. expert:shop or pairs:shop:step (grammar below)"})
    output: str = field(default="", metadata={
        "help": "name of the trained model under data/models (default: <method>-<job id>)"})
    preset: str = field(default="paper", metadata={
        "help": "defaults the other fields started from: paper (real models) or tiny (embedded models)"})
    lora: bool = field(default=True, metadata={"help": "train a LoRA adapter instead of all weights"})
    lora_targets: str = field(default="q_proj,k_proj,v_proj,o_proj", metadata={
        "help": "modules LoRA adapts: comma-separated names, or all-linear"})
    lora_r: int = field(default=128, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA alpha (scaling = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA branch"})
    merge_lora: bool = field(default=True, metadata={
        "help": "save the LoRA-merged full model (else only the adapter beside its base)"})
    epochs: float = field(default=3.0, metadata={"help": "passes over the training data"})
    lr: float = field(default=2e-5, metadata={"help": "peak learning rate"})
    batch_size: int = field(default=4, metadata={"help": "examples per device per step"})
    grad_accum: int = field(default=8, metadata={
        "help": "gradient accumulation steps on one device; effective batch = batch_size x grad_accum on any "
                "number of GPUs (N GPUs accumulate grad_accum / N steps each)"})
    micro_batch: int = field(default=0, metadata={
        "help": "run each step's batch as micro-batches of this many rows sorted by length: the same rows "
                "and gradient, less padding (~2x faster steps on CPU for the shop's rows); 0 or >= batch_size: "
                "one batch as drawn"})
    max_length: int = field(default=4096, metadata={
        "help": "token limit per sequence (clamped to the model's context): multi-turn ReAct episodes "
                "with their one-shot prefix are long"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer steps (-1: epochs)"})
    warmup_ratio: float = field(default=0.03, metadata={"help": "share of steps with a rising learning rate"})
    lr_scheduler: str = field(default="constant_with_warmup", metadata={
        "help": "learning-rate schedule after the warm-up: constant_with_warmup, cosine or linear"})
    max_grad_norm: float = field(default=0.5, metadata={"help": "clip the gradient norm to this value"})
    save_steps: int = field(default=50, metadata={"help": "write a resumable checkpoint every N steps"})
    logging_steps: int = field(default=1, metadata={"help": "record metrics every N steps"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    threads: int = field(default=0, metadata={
        "help": "CPU threads for torch (0: 1 on CPU, since other work shares the cores)"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA + bf16 when present), cuda or cpu"})


@dataclass
class SFTTrainConfig(TrainConfig):
    """Supervised fine-tuning, loss on assistant turns only (`sft`, `mcts`)."""


@dataclass
class DPOTrainConfig(TrainConfig):
    """Direct preference optimisation (`treedpo`, `dpo`)."""

    ref: str = field(default="", metadata={
        "help": "reference model: the SFT weak model when it shares the tokenizer (W2S setting); "
                "empty or a tokenizer mismatch: the trained model's own starting weights"})
    beta: float = field(default=0.1, metadata={"help": "DPO beta: strength of the pull to the reference"})
    loss_type: str = field(default="sigmoid", metadata={"help": "DPO loss: sigmoid, hinge or ipo"})
    packing: str = field(default="none", metadata={
        "help": "compute shared prefixes once: none (TRL as is), pair (a pair's prompt once, then chosen, then "
                "rejected) or tree (a micro-batch's pairs in token tries, every shared prefix once); "
                "the same loss and gradient, needs sdpa or eager attention"})
    pack_tokens: int = field(default=0, metadata={
        "help": "with --packing: positions per packed row (0: twice the batch's longest sequence; the mask is "
                "dense, so a longer row costs attention on the positions it masks)"})


# Values that differ from the class defaults, per preset and trainer.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"sft": {}, "dpo": {}},
    "tiny": {
        "sft": {"lr": 1e-3, "epochs": 3.0, "batch_size": 8, "grad_accum": 1, "warmup_ratio": 0.05,
                "save_steps": 25, "lora": False, "lora_r": 8, "lora_alpha": 16, "lora_targets": "all-linear",
                "lr_scheduler": "cosine", "max_grad_norm": 1.0, "micro_batch": 8},
        # packing: measured at the tiny scale (docs/experiments.md, "Tree packing at the tiny scale"):
        # the same dev evaluation as `none` on every task for TreeDPO and ETO-DPO, 1.5-2x the pairs/s
        "dpo": {"lr": 2e-4, "epochs": 2.0, "batch_size": 8, "grad_accum": 1, "warmup_ratio": 0.05,
                "save_steps": 25, "lora": False, "lora_r": 8, "lora_alpha": 16, "lora_targets": "all-linear",
                "lr_scheduler": "cosine", "max_grad_norm": 1.0, "micro_batch": 8, "packing": "tree"},
    },
}


@dataclass(frozen=True)
class Method:
    """A training method: a trainer, the data SPEC forms it learns from, and (by its trainer) its
    typed config class."""

    name: str
    label: str  # how pages name it
    trainer: str  # a key of TRAINERS
    data: tuple[str, ...]  # data SPEC forms (core.train.data); a file of rows is always accepted
    summary: str

    @property
    def help(self) -> str:
        """One line for `--help` and the Train page: what it does and on which data."""
        return f"{self.summary} ({', '.join(self.data)}, or a file)"

    @property
    def config_class(self) -> type[TrainConfig]:
        return TRAINERS[self.trainer]

    @property
    def sources(self) -> tuple[str, ...]:
        """The sources of its data forms, in order (`pairs`, `best-paths`, `expert`, `successes`)."""
        return tuple(dict.fromkeys(form.split(":")[0] for form in self.data))

    @property
    def preference(self) -> bool:
        """Whether it learns from preference pairs (else from demonstrations)."""
        return self.trainer == "dpo"

    def accepts(self, source: str, arg: str = "") -> bool:
        """Whether data of `source` (and for pairs the granularity `arg`) is this method's."""
        if source == "file":
            return True
        return any(form.split(":")[0] == source and (source != "pairs" or form.rsplit(":", 1)[1] == arg)
                   for form in self.data)

    def check_data(self, source: str, arg: str, spec: str) -> None:
        """A one-line UserError when `spec` is not this method's data, naming what is."""
        if not self.accepts(source, arg):
            raise UserError(f"{self.name} trains on {' or '.join(self.data)} (or a file of rows); "
                            f"--data {spec} is another method's data")


TRAINERS: dict[str, type[TrainConfig]] = {"sft": SFTTrainConfig, "dpo": DPOTrainConfig}
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("sft", "SFT", "sft", ("expert:ENV", "successes:ENV:MODEL"),
           "supervised fine-tuning on demonstrations or weak successes"),
    Method("mcts", "MCTS (SFT on best paths)", "sft", ("best-paths:ENV",),
           "SFT of the strong SFT model on the MCTS best paths"),
    Method("treedpo", "TreeDPO", "dpo", ("pairs:ENV:step", "pairs:ENV:continuation"),
           "TreeDPO on tree pairs, --ref = the SFT weak model"),
    Method("eto-dpo", "ETO-DPO", "dpo", ("pairs:ENV:trajectory",),
           "ETO-style DPO on whole-trajectory pairs, --ref = the SFT weak model"),
)}
RENAMED = {"dpo": "eto-dpo"}  # earlier names: jobs recorded under them still resume


def method(name: str) -> Method:
    """The method called `name` (an earlier name resolves to its method); a one-line UserError
    names the methods otherwise."""
    found = METHODS.get(RENAMED.get(name, name))
    if found is None:
        raise UserError(f"unknown training method {name!r}; use one of {', '.join(METHODS)}")
    return found


def config_class(kind: str) -> type[TrainConfig]:
    """The config dataclass of a training method."""
    return method(kind).config_class


def make_config(kind: str, preset: str = "paper", **overrides: Any) -> TrainConfig:
    """A config of method `kind` from `preset`, then `overrides` (unknown names are a UserError)."""
    cls = config_class(kind)
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    values = dict(PRESETS[preset][method(kind).trainer])
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in overrides.items():
        if key not in names:
            raise UserError(f"{kind} config has no field {key!r}; fields: {', '.join(sorted(names))}")
        if value is not None:
            values[key] = value
    return cls(preset=preset, **values)


def config_from_dict(kind: str, values: dict[str, Any]) -> TrainConfig:
    """Rebuild a config saved with `dataclasses.asdict` (fields unknown to this version ignored;
    fields newer than the saved config take its preset's value)."""
    cls = config_class(kind)
    names = {f.name for f in dataclasses.fields(cls)}
    preset = PRESETS.get(values.get("preset", "paper"), {}).get(method(kind).trainer, {})
    return cls(**{**preset, **{k: v for k, v in values.items() if k in names}})


def micro_split(cfg: TrainConfig) -> int:
    """Micro-batches per batch (`micro_batch`): 1 when it is 0 or not below `batch_size`."""
    if cfg.micro_batch < 1 or cfg.micro_batch >= cfg.batch_size:
        return 1
    return cfg.batch_size // cfg.micro_batch


def validate_fields(kind: str, cfg: TrainConfig) -> None:
    """Reject impossible values with a one-line UserError naming the field and the fix."""
    if not isinstance(cfg, config_class(kind)):
        raise UserError(f"{kind} needs a {config_class(kind).__name__}, got {type(cfg).__name__}")
    if not cfg.model:
        raise UserError(f"{kind}: no model given; pass --model NAME (see `w2stree models list`)")
    if not cfg.data:
        raise UserError(f"{kind}: no training data given; pass --data SPEC (see `w2stree train --help`)")

    def need(ok: bool, name: str, fix: str) -> None:
        if not ok:
            raise UserError(f"{kind}: {name}={getattr(cfg, name)!r} is invalid; {fix}")

    need(math.isfinite(cfg.lr) and cfg.lr > 0, "lr", "use a positive learning rate such as 2e-5")
    need(cfg.lr < 1.0, "lr", "a learning rate of 1 or more diverges; use e.g. 2e-5 (tiny models: 1e-3)")
    need(cfg.epochs > 0, "epochs", "use a positive number of epochs")
    need(cfg.batch_size >= 1, "batch_size", "use at least 1")
    need(cfg.grad_accum >= 1, "grad_accum", "use at least 1")
    need(cfg.micro_batch >= 0 and (micro_split(cfg) == 1 or cfg.batch_size % cfg.micro_batch == 0), "micro_batch",
         f"use 0 or a divisor of batch_size={cfg.batch_size}")
    need(cfg.max_length >= 16, "max_length", "use at least 16 tokens")
    need(cfg.max_steps == -1 or cfg.max_steps >= 1, "max_steps", "use -1 (train by epochs) or a positive count")
    need(0 <= cfg.warmup_ratio < 1, "warmup_ratio", "use a value in [0, 1)")
    need(cfg.save_steps >= 1, "save_steps", "use at least 1")
    need(cfg.logging_steps >= 1, "logging_steps", "use at least 1")
    need(cfg.threads >= 0, "threads", "use 0 (automatic) or a positive count")
    need(cfg.device in DEVICES, "device", f"use one of {', '.join(DEVICES)}")
    need(cfg.lr_scheduler in SCHEDULERS, "lr_scheduler", f"use one of {', '.join(SCHEDULERS)}")
    need(math.isfinite(cfg.max_grad_norm) and cfg.max_grad_norm > 0, "max_grad_norm", "use a positive value such as 0.5")
    if cfg.lora:
        need(bool(cfg.lora_targets.strip(" ,")), "lora_targets", "name modules such as q_proj,v_proj, or all-linear")
        need(cfg.lora_r >= 1, "lora_r", "use a positive LoRA rank")
        need(cfg.lora_alpha > 0, "lora_alpha", "use a positive LoRA alpha")
        need(0 <= cfg.lora_dropout < 1, "lora_dropout", "use a value in [0, 1)")
    if cfg.output and ("/" in cfg.output or cfg.output.startswith(".")):
        raise UserError(f"{kind}: output={cfg.output!r} is invalid; give a plain model name like tree-dpo-1")
    if isinstance(cfg, DPOTrainConfig):
        need(math.isfinite(cfg.beta) and cfg.beta > 0, "beta", "use a positive beta such as 0.1")
        need(cfg.loss_type in DPO_LOSSES, "loss_type", f"use one of {', '.join(DPO_LOSSES)}")
        need(cfg.packing in PACKINGS, "packing", f"use one of {', '.join(PACKINGS)}")
        need(cfg.pack_tokens >= 0, "pack_tokens", "use 0 (twice the longest sequence) or a positive count")
