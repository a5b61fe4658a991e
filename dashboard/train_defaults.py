"""The Train form's starting values and its line on the data. No Streamlit here.

At the tiny preset a job started from the form trains as `w2stree up` does: its defaults are the
pipeline's tiny-scale settings of the same training, read from `core.scales.SCALES["tiny"]`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from core.console import plural
from core.methods import for_training
from core.scales import SCALES
from core.train.config import TrainConfig, make_config


def scale_field(kind: str, source: str, weak_model: bool) -> str:
    """The field of a pipeline `Scale` (core.scales) holding the settings of this training: the
    budget of the experiment's method that trains so (`core.methods.for_training`): DPO for both
    preference methods, `mcts_sft`, `w2s_sft` for SFT on a model's successes, else `sft_weak` /
    `sft_strong` by the model trained. The Train form's tiny defaults come from it."""
    return for_training(kind, source, weak_model).budget


def weak_models(models: pd.DataFrame) -> set[str]:
    """Names of the weak models: role `weak`, and models trained from one (their `base`)."""
    weak = set(models.loc[models["role"] == "weak", "name"])
    return weak | set(models.loc[models["base"].isin(weak), "name"])


def example_caption(n_examples: int, decisions: bool, n_rows: int | None, model: str) -> str:
    """The Train form's line on the data: the examples the spec names and, for a model prompted
    one decision at a time (`decisions`), the rows the trainer will see: one per decision
    (`n_rows`, or None where it is counted only when the job starts)."""
    examples = plural(n_examples, "training example")
    if not decisions:
        return f"{examples} (one training row each)"
    why = f"{model} is prompted one decision at a time: a training row per decision"
    if n_rows is None:
        return f"{examples}; {why} (counted when the job starts)"
    return f"{examples} → {plural(n_rows, 'training row')} as the trainer sees them ({why})"


def form_defaults(kind: str, preset: str, source: str, weak_model: bool) -> tuple[TrainConfig, str, dict[str, Any]]:
    """(the form's starting config, the `Scale` field it comes from or "", that field's settings):
    at the tiny preset the pipeline's tiny-scale settings of the same training (`scale_field`);
    else the preset's defaults."""
    if preset != "tiny":
        return make_config(kind, preset), "", {}
    field = scale_field(kind, source, weak_model)
    settings = dict(getattr(SCALES["tiny"], field))
    return make_config(kind, preset, **settings), field, settings
