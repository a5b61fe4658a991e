"""Typed settings of the tree stages and of exploration: the one place of their defaults, help
text and checks.

    TreeSettings     how trajectories merge into a tree (`w2stree tree`)
    MCTSSettings     offline MCTS over a tree (`w2stree mcts`)
    PairSettings     which preference pairs to cut (`w2stree pairs`)
    ExploreSettings  K continuations from a node and their sampling (`w2stree explore`)
    GrowSettings     targeted growth: where and how much (`w2stree grow`, `core.grow`)

As the training configs (`core.train.config`), every field carries its help text in
`metadata["help"]`, and what it takes in `metadata["choices"]` or `metadata["min"]`
(`core.fields.setting`): the CLI's flags (`core.cli.fields`) and the dashboard's forms
(`dashboard.settings_form`) are generated from them, and `core.fields.check_fields` rejects a
value outside them with one line naming the flag. Each class's `check()` adds the rules one
field cannot say.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from core.agents.base import Sampling, sampling_schedule
from core.errors import UserError
from core.fields import check_fields, setting
from core.mcts import DEFAULT_RULE, RULES, check_rule
from core.pairs import ETO_MODES, GRANULARITIES, VALUE_KINDS
from core.tree import MERGE_RULES

GROW_RULES = ("deepest-failure", "value-drop", "ucb", "pair-check")  # core.grow's node rankings


@dataclass(frozen=True)
class TreeSettings:
    """How trajectories merge into a tree (`core.tree`)."""

    merge: str = setting("action", "join steps on equal action, action + observation, action + MiniLM "
                         "similarity of observation and thought, or where they reach one env state "
                         "(state: the shop has state keys)", choices=MERGE_RULES, noun="merge rule",
                         label="Merge rule")
    threshold: float = setting(0.9, "cosine threshold of --merge semantic", label="Threshold")

    def check(self) -> None:
        """A one-line UserError for an unknown merge rule."""
        check_fields(self, "tree")

    @classmethod
    def of_tree(cls, merge: str | None, settings: dict[str, Any] | None) -> TreeSettings:
        """The settings a stored tree was built with (its `merge` and `settings` record; the
        defaults where the record has none)."""
        return cls(merge or cls.merge, float((settings or {}).get("threshold", cls.threshold)))


@dataclass(frozen=True)
class MCTSSettings:
    """Offline MCTS over a stored tree (`core.mcts`)."""

    iterations: int = setting(1000, "iterations per tree", min=1, label="Iterations")
    c: float = setting(1.41, "exploration constant", label="c")
    rule: str = setting(DEFAULT_RULE, "uct (the released mcts_demo.py exactly), early-release (an earlier "
                        "version of the released MCTS file: search seeded with the data, root backed up), "
                        "puct, or mean (data means, no search)", metavar="{" + ",".join(RULES) + "}",
                        label="Rule")

    def check(self) -> None:
        """A one-line UserError for an unknown rule or a non-positive iteration count."""
        check_rule(self.rule)  # not `choices`: an earlier rule name gets its own message
        check_fields(self, "MCTS")

    @classmethod
    def of_tree(cls, settings: dict[str, Any] | None) -> MCTSSettings:
        """The search a stored tree was scored with (its `settings["mcts"]`), the defaults where
        it has none (or 0 iterations: the `mean` rule records no search)."""
        mcts = (settings or {}).get("mcts") or {}
        return cls(int(mcts.get("iterations") or cls.iterations), float(mcts.get("c", cls.c)),
                   str(mcts.get("rule", cls.rule)))


@dataclass(frozen=True)
class PairSettings:
    """Which preference pairs to cut (`core.pairs`)."""

    granularity: str = setting("step", "step / continuation (from trees) or trajectory (the ETO baseline over the "
                               "trees' trajectories, see --baseline)", choices=GRANULARITIES)
    value: str = setting("data", "compare children by data mean reward or MCTS Q (needs `w2stree mcts`); tree "
                         "pairs only", choices=VALUE_KINDS)
    min_margin: float | None = setting(None, "least value difference of a pair (default: one side succeeds, "
                                       "the other not)", metavar="X")
    baseline: str = setting("expert", "trajectory only: expert (as the release: the task's expert trajectory vs "
                            "each explored one, the higher reward chosen, ties dropped, a rejected explored one "
                            "cut at the expert's length + 5 turns) or weak (a successful vs a failed explored "
                            "trajectory)", choices=ETO_MODES)

    def check(self) -> None:
        """A one-line UserError for an unknown granularity, value or baseline."""
        check_fields(self, "pair")


@dataclass(kw_only=True)
class ExploreSettings:
    """K continuations from a node: how many, their sampling (`schedule="paper"`, else K samples
    at (temperature, top_p)), a step budget after the node (None: the env's own limit), the seed.
    Keyword-only, so that `core.explore.ExploreSpec` puts its node before them."""

    k: int = setting(4, "continuations", min=1, flags=("-k", "--k"), metavar="K", label="Continuations (K)")
    schedule: str | None = setting(None, "paper: greedy + (T, top-p) = (0.7, 0.9), (1.0, 0.8), (1.0, 0.9), more "
                                   "sampled settings beyond 4; else K samples at --temperature / --top-p",
                                   choices=("paper",))
    temperature: float = setting(0.0, "0 = greedy", label="Temperature")
    top_p: float = setting(1.0, "nucleus sampling mass", label="Top-p")
    max_steps: int | None = setting(None, "at most S steps after the node (default: the env's own limit)", min=1,
                                    metavar="S", label="Max steps after the node")
    seed: int = setting(0, "policy / sampling seed", min=0)

    def samplings(self) -> list[Sampling]:
        """One sampling setting per continuation, with distinct labels
        (`core.agents.base.sampling_schedule`): the paper schedule to K, or K samples of one setting."""
        if self.k < 1:
            raise UserError(f"explore needs K >= 1 continuations, got {self.k}")
        if self.schedule not in (None, "paper"):
            raise UserError(f"unknown schedule {self.schedule!r}; use paper, or a temperature and top-p")
        if self.schedule is None and (self.temperature < 0 or not 0 < self.top_p <= 1):
            raise UserError("need temperature >= 0 and 0 < top-p <= 1")
        if self.schedule == "paper":
            return list(sampling_schedule(self.k))
        return list(sampling_schedule(self.k, (Sampling(self.temperature, self.top_p),)))

    def check(self) -> None:
        """UserError on a bad field, before anything runs."""
        self.samplings()
        check_fields(self, "explore")


@dataclass(frozen=True)
class GrowSettings:
    """How much to grow and where (`core.grow`)."""

    budget: int = setting(help="new episodes in all", min=1, metavar="N", label="Episodes in all")
    rule: str = setting(GROW_RULES[0], "where to grow: deepest-failure (nodes whose subtree only failed, deepest "
                        "first), value-drop (the decisions that lost most value), ucb (MCTS's selection score) or pair-check "
                        "(the failing side of a pair, shallowest first)",
                        choices=GROW_RULES, noun="growth rule", label="Rule")
    k: int = setting(4, "continuations per chosen node, with the paper's schedule (greedy + 3 sampled)", min=1,
                     flags=("-k", "--k"), metavar="K", label="Per node (K)")
    per_tree: int = setting(1, "at most this many chosen nodes per tree", min=1, metavar="M")
    max_steps: int = setting(10, "the episode cap: a continuation gets the steps its node leaves", min=1,
                             metavar="S", label="Episode step cap")
    c: float = setting(1.41, "the ucb rule's exploration constant")
    seed: int = setting(0, "policy / sampling seed", min=0)

    def check(self) -> None:
        """UserError on a bad field, before anything runs."""
        check_fields(self, "growth")
        if not (math.isfinite(self.c) and self.c >= 0):
            raise UserError(f"the ucb constant c must be a number >= 0, got {self.c}")
        if self.budget < self.k:
            raise UserError(f"a growth budget of {self.budget} episodes is less than one node's K = {self.k}")
