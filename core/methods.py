"""The experiment's methods: one table that the pipeline, the results, the dashboard and the CLI read.

A method of the weak-to-strong experiment (`w2stree pipeline`) is one row of `METHODS`, in the
results table's order:

    name           label          trainer  data        budget      starts from   ref      compared with
    SFT-weak       sft-weak       sft      expert      sft_weak    weak base     -        -
    SFT-strong     sft-strong     sft      expert      sft_strong  strong base   -        -
    SFT-continued  sft-continued  sft      expert      continued   SFT-strong    -        -
    W2S-SFT        w2s-sft        sft      successes   w2s_sft     SFT-strong    -        -
    ETO-DPO        eto-dpo        eto-dpo  eto_pairs   dpo         SFT-strong    SFT-weak -
    TreeDPO        treedpo        treedpo  tree_pairs  dpo         SFT-strong    SFT-weak SFT-weak, SFT-strong; SFT-continued
    MCTS           mcts           mcts     best_paths  mcts_sft    SFT-strong    -        SFT-weak, SFT-strong; SFT-continued

`name` is the results row's method, `label` the eval label and the model name's part
(`<env>-<label>-s<seed>`), `trainer` the training method of `core.train.config.METHODS` that the
pipeline runs, `data` the pipeline's training file (`<data>.jsonl`, `core.pipeline.training_files`;
`expert`: the demonstrations), `budget` the `core.scales.Scale` field with its training settings
(`continued`: `core.scales.continued_budget`). The strong methods (`strong`) train SFT-strong on the
weak model's exploration; one whose data came out empty gets a "no data" row (`no_data` says what
was missing). `claims` are the comparisons the paper's claim is about, `controls` the
compute-matched control: `w2stree results` reports the claims of every method, then the controls.

To add a method: a row here (and, for a new kind of training, a method in `core/train/config.py`;
for a new kind of data, its file in `core.pipeline.training_files`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExperimentMethod:
    """One method of the experiment (module docstring)."""

    name: str  # the results row's method
    label: str  # eval label and model name part
    trainer: str  # training method (core.train.config.METHODS)
    data: str  # the pipeline's training file: expert, successes, best_paths, tree_pairs, eto_pairs
    spec: str  # the source of that data in the `--data` SPEC grammar (core.train.data)
    budget: str  # the Scale field with its training settings
    start: str  # the model it trains: "weak" / "strong" (the base models) or another method's name
    ref: bool = False  # DPO against the SFT-weak model as reference (the paper's W2S setting)
    no_data: str = ""  # what was missing when its training data came out empty ("": never empty)
    claims: tuple[str, ...] = ()  # baselines of the paper's claim it is compared with
    controls: tuple[str, ...] = ()  # the compute-matched control it is compared with
    order: int = 0  # the pipeline starts strong trainings in this order: longest first

    @property
    def strong(self) -> bool:
        """Whether it trains the strong SFT model on the exploration (else an SFT baseline on the
        expert demonstrations)."""
        return self.data != "expert"


METHODS: tuple[ExperimentMethod, ...] = (
    ExperimentMethod("SFT-weak", "sft-weak", "sft", "expert", "expert", "sft_weak", "weak"),
    ExperimentMethod("SFT-strong", "sft-strong", "sft", "expert", "expert", "sft_strong", "strong"),
    # SFT-strong trained further on its expert rows (at least the DPO stage's steps)
    ExperimentMethod("SFT-continued", "sft-continued", "sft", "expert", "expert", "continued", "SFT-strong"),
    ExperimentMethod("W2S-SFT", "w2s-sft", "sft", "successes", "successes", "w2s_sft", "SFT-strong",
                     no_data="no successes", order=3),
    ExperimentMethod("ETO-DPO", "eto-dpo", "eto-dpo", "eto_pairs", "pairs", "dpo", "SFT-strong", ref=True,
                     no_data="no eto pairs", order=1),
    ExperimentMethod("TreeDPO", "treedpo", "treedpo", "tree_pairs", "pairs", "dpo", "SFT-strong", ref=True,
                     no_data="no tree pairs", claims=("SFT-weak", "SFT-strong"), controls=("SFT-continued",),
                     order=0),
    ExperimentMethod("MCTS", "mcts", "mcts", "best_paths", "best-paths", "mcts_sft", "SFT-strong",
                     no_data="no best paths", claims=("SFT-weak", "SFT-strong"), controls=("SFT-continued",),
                     order=2),
)
BY_NAME: dict[str, ExperimentMethod] = {m.name: m for m in METHODS}
BASELINES: tuple[ExperimentMethod, ...] = tuple(m for m in METHODS if not m.strong)
#: The strong methods in table order (the order of their results rows).
STRONG: tuple[ExperimentMethod, ...] = tuple(m for m in METHODS if m.strong)


def training_order() -> list[ExperimentMethod]:
    """The strong methods in the order the pipeline starts their trainings: longest first, since
    the last unit to start bounds the wall time."""
    return sorted(STRONG, key=lambda m: m.order)


def comparisons() -> tuple[tuple[str, str], ...]:
    """The (method, baseline) pairs the results report: every method's claims, then the controls."""
    return (tuple((m.name, b) for m in METHODS for b in m.claims)
            + tuple((m.name, b) for m in METHODS for b in m.controls))


def figure_methods() -> tuple[ExperimentMethod, ...]:
    """The methods of the paper's Figure 5 (the Compare page's default): those with claims and
    their baselines, in table order."""
    names = {n for m in METHODS if m.claims for n in (m.name, *m.claims)}
    return tuple(m for m in METHODS if m.name in names)


def find(text: str) -> ExperimentMethod | None:
    """The method whose name or label `text` is (any case), else None."""
    key = text.lower()
    return next((m for m in METHODS if key in (m.name.lower(), m.label)), None)


def for_training(trainer: str, spec: str, weak_model: bool) -> ExperimentMethod:
    """The experiment's method that trains as a `trainer` job on data of `spec` source: the one
    whose settings a job of that training starts from (the Train page's defaults). SFT on anything
    but successes is SFT-weak's for a weak model, else SFT-strong's."""
    if trainer == "sft" and spec != "successes":  # demonstrations or a file of rows
        return next(m for m in BASELINES if m.start == ("weak" if weak_model else "strong"))
    return next(m for m in STRONG if m.trainer == trainer)
