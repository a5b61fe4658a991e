"""Scales of the weak-to-strong experiment (`w2stree pipeline --scale`): sizes, budgets and
hyper-parameters of one run (`Scale`, `SCALES`), and the training budget of each method in a scale.

`tiny` is the CPU default on the embedded shop and its from-scratch models, with sizes and budgets
chosen from `bench/learning_curve.py` (docs/experiments.md has the curves and the measured runs);
`quick` is a smoke-test size; `paper` uses real Hugging Face models with LoRA and the reference's
hyper-parameters (by default Qwen2.5-0.5B-Instruct weak and Qwen2.5-7B-Instruct strong) and
the full splits. The tiny scale's models are prompted one decision at a time
(`core.agents.prompt.decision_view`). `core.pipeline` runs a scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.envs.shop import TINY_WORLD
from core.methods import ExperimentMethod
from core.settings import GrowSettings, MCTSSettings, TreeSettings


@dataclass(frozen=True)
class Scale:
    """Sizes and hyper-parameters of one experiment. Training overrides are passed to
    `core.train.make_config(method, train_preset, **overrides)`."""

    name: str
    weak: str = ""  # base weak model: "" = the env's local model <env>-weak
    strong: str = ""  # base strong model: "" = <env>-strong
    train_preset: str = "tiny"
    demo_tasks: int = 100  # the first train tasks, with expert demonstrations (SFT-weak / SFT-strong)
    explore_from: int = 0  # the SFT-weak model explores train tasks [explore_from, +explore_tasks)
    explore_tasks: int = 100  # (0: the demonstrated tasks, as in ETO and the paper)
    test_tasks: int = 50  # test tasks every model is evaluated on
    trajs_per_task: int = 4  # K: trajectories per explored task
    max_steps: int | None = 10  # episode step cap for exploration and evaluation
    eval_split: str = "test"  # where every model is evaluated: "dev" for choices, "test" once, at the end
    pair_granularity: str = "step"  # TreeDPO pairs: step, or continuation (every decision of each side)
    sft_weak: dict[str, Any] = field(default_factory=dict)
    sft_strong: dict[str, Any] = field(default_factory=dict)
    w2s_sft: dict[str, Any] = field(default_factory=dict)
    mcts_sft: dict[str, Any] = field(default_factory=dict)
    dpo: dict[str, Any] = field(default_factory=dict)  # TreeDPO and ETO-style DPO
    # SFT-continued (SFT-strong trained further on its expert rows); None: the DPO stage's steps,
    # learning rate and batch (`continued_budget`), the compute-matched control
    continued: dict[str, Any] | None = None
    mcts_iterations: int = MCTSSettings.iterations  # the default search (core.settings)
    # targeted growth (`core.grow`, off by default: the paper's method): after the exploration, this
    # many more episodes by the explorer from the nodes `grow_rule` picks; they enter the trees
    # (TreeDPO and MCTS), not the ETO pairs nor W2S-SFT's successes, which stay as released
    grow_budget: int = 0
    grow_rule: str = GrowSettings.rule
    # how the trees merge (`core.tree`): "action" is the paper's; "state" merges branches that reach
    # one env state (`core.state_merge`), for TreeDPO and MCTS (the ETO pairs are whole episodes)
    merge: str = TreeSettings.merge
    max_pairs: int | None = None  # random subset of the TreeDPO / ETO pairs (bounds DPO time)
    gen_batch: int = 16  # episodes per generate call
    explorer: str = ""  # "" = the SFT-weak model (the method); else a policy name (core.agents.registry)
    parallel: int = 2  # training jobs at once (one torch thread each)
    # parameters added to a plain env name, per env (`{"shop": "n_products=200"}` runs the shop
    # scale on `shop?n_products=200`): a smaller world for the from-scratch models
    worlds: dict[str, str] = field(default_factory=dict)


SCALES: dict[str, Scale] = {
    # measured (docs/experiments.md): one-decision rows, thousands of free expert demonstrations,
    # and a 200-product shop. The weak model copies product ids only after ~700 steps (600: 4 %
    # success, 800: 35 %); the strong one learns faster per step and keeps gaining (700 steps: 40 %,
    # 1000 steps: 64 % on the 200 test tasks, seed 0)
    "tiny": Scale(
        # the paper's design: SFT-weak explores the demonstrated tasks (the first 750 of the 3,000),
        # K = 4, so explored episodes (3,000) are as many as the expert ones
        name="tiny", demo_tasks=3000, explore_from=0, explore_tasks=750, test_tasks=200, max_steps=10,
        sft_weak=dict(max_steps=800, lr=3e-3, batch_size=32, save_steps=200),
        sft_strong=dict(max_steps=1000, lr=3e-3, batch_size=32, save_steps=200),
        # the four strong trainings nudge SFT-strong: at higher rates they pull it toward the weak
        # model (docs/experiments.md, run 5: DPO at 2e-4 cost 0.06 reward, at 5e-5 nothing)
        w2s_sft=dict(max_steps=80, lr=1e-4, batch_size=16, save_steps=40),
        mcts_sft=dict(max_steps=80, lr=5e-5, batch_size=16, save_steps=40),
        dpo=dict(max_steps=60, lr=5e-5, batch_size=16, beta=0.1, save_steps=30),
        # chosen on dev (run 10): 240 steps beat the compute-matched 60 (0.847 against 0.825), while
        # TreeDPO is best at 60 (240: 0.813); the strong baseline gets the budget that serves it best
        continued=dict(max_steps=240, lr=5e-5, batch_size=16, save_steps=30),
        worlds={"shop": TINY_WORLD},
    ),
    "quick": Scale(
        name="quick", demo_tasks=6, explore_tasks=4, test_tasks=3, trajs_per_task=4, max_steps=6,
        sft_weak=dict(epochs=1.0, lr=3e-3, batch_size=4),
        sft_strong=dict(epochs=1.0, lr=1e-3, batch_size=4),
        w2s_sft=dict(epochs=1.0, lr=3e-4, batch_size=4),
        mcts_sft=dict(epochs=1.0, lr=3e-4, batch_size=4),
        dpo=dict(epochs=1.0, lr=5e-5, batch_size=4),
        mcts_iterations=200, max_pairs=8, gen_batch=16, explorer="noisy-expert",
        worlds={"shop": TINY_WORLD},  # the tiny scale's world: `up --scale quick` fills what `up` does
    ),
    "paper": Scale(
        name="paper", weak="Qwen/Qwen2.5-0.5B-Instruct", strong="Qwen/Qwen2.5-7B-Instruct",
        train_preset="paper", demo_tasks=1000, explore_tasks=1000, test_tasks=200, max_steps=15,
        sft_weak=dict(lora=True), sft_strong=dict(lora=True), w2s_sft=dict(lora=True),
        mcts_sft=dict(lora=True), dpo=dict(lora=True), parallel=1,
    ),
}


def budget(cfg: Scale, method: ExperimentMethod) -> dict[str, Any]:
    """The training settings of `method` in this scale: its `budget` field (`continued`: the
    compute-matched `continued_budget`)."""
    return continued_budget(cfg) if method.budget == "continued" else dict(getattr(cfg, method.budget))


def continued_budget(cfg: Scale) -> dict[str, Any]:
    """SFT-continued's training budget: the scale's `continued`, else the DPO stage's steps (or
    epochs), learning rate, batch and LoRA, so that it sees as many updates of the same size as
    TreeDPO does."""
    if cfg.continued is not None:
        return dict(cfg.continued)
    keys = ("max_steps", "epochs", "lr", "batch_size", "save_steps", "lora")
    return {k: v for k, v in cfg.dpo.items() if k in keys}
