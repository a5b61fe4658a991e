"""The README's tour runs as written on the store `w2stree up` fills (issue 25).

The command lines of README.md's "A tour on the command line" and "Exploring a tree interactively"
blocks are read from the README (so this test follows it) and run in order, each as its own
`python -m core` process, on a store that `w2stree up --scale quick --no-serve` filled."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOUR_SECTIONS = ("## A tour on the command line", "### Exploring a tree interactively")


def tour_commands(readme: Path = REPO / "README.md") -> list[list[str]]:
    """The argv of every command of the tour's ```bash blocks (the first block after each heading),
    comments dropped."""
    text = readme.read_text(encoding="utf-8")
    commands = []
    for heading in TOUR_SECTIONS:
        start = text.index(heading)
        block = text[text.index("```bash\n", start) + len("```bash\n"):]
        for line in block[: block.index("```")].splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                assert argv[0] == "w2stree", f"the tour line {line!r} is not a w2stree command"
                commands.append(argv)
    return commands


def test_the_tour_is_found_in_the_readme():
    commands = tour_commands()
    assert len(commands) >= 15
    verbs = [argv[1] for argv in commands]
    assert {"collect", "train", "tree", "mcts", "pairs", "explore", "eval"} <= set(verbs)
    assert "pipeline" not in verbs and "up" not in verbs  # an hour each: the text names them


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a loaded 2-core machine: the two model-driven lines take minutes
def test_readme_tour_runs_as_written_on_the_up_store(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "W2STREE_HOME": str(home), "W2STREE_DB": str(home / "w2stree.duckdb"),
           "HF_HUB_OFFLINE": "1"}

    def w2stree(argv: list[str]) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "core", *argv], cwd=tmp_path, env=env, text=True,
                              capture_output=True, timeout=900)
        assert done.returncode == 0, f"`{shlex.join(['w2stree', *argv])}` exited {done.returncode}:\n" \
                                     f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    up = w2stree(["up", "--scale", "quick", "--no-serve"])
    assert "tinyshop" in up.stdout and "TreeDPO" in up.stdout
    said = {}
    for argv in tour_commands():
        said[shlex.join(argv)] = w2stree(argv[1:]).stderr
    # the short names found the experiment's models, and said so
    found = "\n".join(said.values())
    assert "sft-weak is shop-n_products=200-n_categories=10-sft-weak-s0 (SFT-weak of experiment exp-" in found
    assert "sft-strong is shop-n_products=200-n_categories=10-sft-strong-s0" in found
    assert "tinyshop-weak is shop-n_products=200-n_categories=10-weak" in found
    from core.store import Store

    store = Store(home / "w2stree.duckdb")
    assert {"my-sft-weak", "my-treedpo"} <= set(store.models()["name"])
    evals = store.trajectory_index(source="eval", model="my-treedpo")
    assert len(evals) == 10 and set(evals["env"]) == {"shop?n_products=200&n_categories=10"}
    assert (tmp_path / "pairs.json").stat().st_size > 0
