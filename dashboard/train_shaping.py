"""The Train page's words and numbers: the data SPEC its form makes and why that data is empty,
a job's progress line and durations, GPU memory from nvidia-smi and the DPO metrics' charts.
Plain functions, no Streamlit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from core.names import env_option


def data_spec(source: str, env: str, arg: str = "", tasks: int = 0, min_margin: float = 0.0) -> str:
    """A training data SPEC (core.train.data grammar) from the form's choices: `pairs` takes the
    granularity as `arg`, `successes` the model; options tasks=N and min_margin=X when set."""
    head = f"{source}:{env}" + (f":{arg}" if source in ("pairs", "successes") else "")
    opts = []
    if tasks:
        opts.append(f"tasks={int(tasks)}")
    if source == "pairs" and min_margin:
        opts.append(f"min_margin={min_margin:g}")
    # options after the env's own parameters (`shop?n_products=200`) join them with "&"
    return head + (("&" if "?" in head else "?") + "&".join(opts) if opts else "")


EMPTY_DATA = {
    "expert": "no expert demonstrations of {env} are stored (`w2stree collect {env_option} --policy expert`)",
    "successes": "{arg} has no successful trajectory in {env}",
    "best-paths": "no tree of {env} has an MCTS best path (`w2stree mcts`)",
    "pairs": "no {arg} pairs of {env} are stored",
}


def empty_data_reason(source: str, env: str, arg: str, count: int, why: str = "") -> str | None:
    """Why the Train page's Start is disabled when the chosen data holds no example (one
    sentence naming the data and, when known, why it is empty); None when there is data."""
    if count:
        return None

    what = EMPTY_DATA.get(source, "the data holds no example").format(env=env, arg=arg, env_option=env_option(env))
    return f"Start is disabled: the chosen data is empty (0 examples): {what}" + (f"; {why}" if why else "") + "."


def duration(seconds: float | None) -> str:
    """1h 02m / 3m 05s / 12s; a dash when unknown."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "–"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def progress_text(status: Mapping[str, Any]) -> str:
    """The progress bar's line: status, step / max steps, ETA."""
    step, top = int(status.get("step") or 0), status.get("max_steps")
    text = f"{status.get('status', '?')} · step {step}" + (f" / {int(top)}" if top else "")
    if status.get("status") == "running":
        text += f" · ETA {duration(status.get('eta_s'))}"
    return text


def gpu_memory(nvidia_smi_csv: str) -> list[tuple[int, int]]:
    """(used MiB, total MiB) per GPU from
    `nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader,nounits`."""
    out = []
    for line in nvidia_smi_csv.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            out.append((int(parts[0]), int(parts[1])))
    return out


LOSS_METRICS = ["loss", "eval_loss"]


def dpo_metric_names(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(reward curves, accuracy curves) among logged metric names: rewards/chosen, rejected,
    margins on one chart; rewards/accuracies (in [0, 1]) on another."""
    rewards = [n for n in names if n.startswith("rewards/") and "accurac" not in n]
    acc = [n for n in names if n.startswith("rewards/") and "accurac" in n]
    return sorted(rewards), sorted(acc)
