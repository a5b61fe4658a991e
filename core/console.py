"""What the console and the logs show: counted nouns, and the libraries' progress bars only on a
terminal.

`plural` is the one way a count is written with its noun ("1 branch", "2 branches"), on the
command line and on the dashboard alike.
"""

from __future__ import annotations

import os
import sys


def plural(n: int | float, noun: str, many: str | None = None) -> str:
    """`n` (thousands separated) and `noun` in the singular for exactly 1, else in the plural
    (`many`, or the English rule: "-y" after a consonant -> "-ies", "-s" / "-x" / "-ch" / "-sh" ->
    "-es", else "-s"): plural(1, "turn") == "1 turn", plural(3200, "branch") == "3,200 branches"."""
    count = f"{int(n):,}" if float(n).is_integer() else f"{n:,}"
    if count == "1":
        return f"{count} {noun}"
    if many is None:
        if noun.endswith("y") and noun[-2:-1] not in "aeiou":
            many = noun[:-1] + "ies"
        elif noun.endswith(("s", "x", "ch", "sh")):
            many = noun + "es"
        else:
            many = noun + "s"
    return f"{count} {many}"


def quiet_library_bars() -> None:
    """When stderr is not a terminal (a log file, a pipe), hide the progress bars that
    transformers and huggingface_hub draw ("Loading weights", "Writing model shards"): in a log
    each redraw is a line of noise. The environment variable reaches the libraries imported
    later and every child process (training jobs); the calls reach those already imported."""
    if sys.stderr is not None and sys.stderr.isatty():
        return
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
