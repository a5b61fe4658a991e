"""Numbers on the command line and Ctrl-C at start-up (issue 21, item 11): an integer outside
what a verb takes (or what the store's 32-bit columns hold) is argparse's one-line error, never a
DuckDB traceback; `--limit 0` and negatives are refused rather than meaning "all"; Ctrl-C while a
verb starts exits 130 with one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.cli import main

REPO = Path(__file__).resolve().parents[1]
HUGE = "99999999999999999999"


@pytest.mark.parametrize("argv", [
    ["mcts", "--iterations", HUGE], ["mcts", "--iterations", "0"], ["replay", "--limit", "-1"],
    ["replay", "--limit", "0"], ["replay", "--limit", "x1"], ["replay", "--limit", "9" * 5000],
    ["collect", "--env", "shop", "--policy", "expert", "--tasks", "0"],
    ["collect", "--env", "shop", "--policy", "expert", "--seed", HUGE],
    ["collect", "--env", "shop", "--policy", "expert", "--workers", "-2"],
    ["explore", "--env", "shop", "--task", "t", "--node", "-1", "--policy", "expert"],
    ["pipeline", "--seeds", "0", HUGE], ["eval", "--model", "m", "--tasks", "0"],
])
def test_out_of_range_integers_are_one_argparse_line(store, capsys, argv) -> None:
    before = store.counts()
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and ": error: argument" in err[-1], err  # the usage, then one error line
    assert sum(": error:" in line for line in err) == 1, err
    assert "Traceback" not in "\n".join(err) and len(err[-1]) < 300, err[-1]
    assert store.counts() == before


def test_ctrl_c_while_a_verb_starts_is_one_line(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "W2STREE_DB": str(tmp_path / "s.duckdb")}
    interrupted = 0
    for delay in (0.15, 0.3, 0.5, 0.8, 1.2, 2.0):
        # a test run started in the background hands its children SIGINT ignored: restore the default
        proc = subprocess.Popen([sys.executable, "-m", "core", "stats"], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert "Traceback" not in err, (delay, err)
        interrupted += proc.returncode != 0
        if proc.returncode != 0:  # it had not finished yet
            assert proc.returncode == 130 and len(err.strip().splitlines()) == 1, (delay, proc.returncode, err)
    assert interrupted >= 3  # most of the delays land in the start-up
