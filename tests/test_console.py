"""What the console and logs show: counted nouns, no library progress bars in a log, and no
defunct child processes left under the dashboard server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from core.console import plural
from core.processes import reap_ended_children

REPO = Path(__file__).resolve().parents[1]


def test_plural():
    assert [plural(1, "turn"), plural(0, "turn"), plural(2, "turn")] == ["1 turn", "0 turns", "2 turns"]
    assert [plural(1, "branch"), plural(3, "branch")] == ["1 branch", "3 branches"]
    assert [plural(1, "trajectory"), plural(2, "trajectory"), plural(2, "day")] == [
        "1 trajectory", "2 trajectories", "2 days"]
    assert [plural(2, "mismatch"), plural(2, "box"), plural(2, "step pair")] == [
        "2 mismatches", "2 boxes", "2 step pairs"]
    assert plural(1.0, "node") == "1 node" and plural(4, "datum", "data") == "4 data"
    assert plural(15136, "row") == "15,136 rows" and plural(0.5, "share") == "0.5 shares"


# Saves a tiny model and loads it back: transformers draws "Writing model shards" and "Loading
# weights" bars on stderr, unless core.cli.main (any verb) ran first with stderr not a terminal.
BARS = """
import sys, tempfile
if sys.argv[1] == "cli":
    from core.cli import main
    main(["--db", tempfile.mkdtemp() + "/s.duckdb", "stats"])
from transformers import LlamaConfig, LlamaForCausalLM
cfg = LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                  num_attention_heads=1, num_key_value_heads=1)
out = tempfile.mkdtemp()
LlamaForCausalLM(cfg).save_pretrained(out)
LlamaForCausalLM.from_pretrained(out)
"""


@pytest.mark.slow  # two interpreters importing transformers: ~20 s on 2 busy cores
def test_library_progress_bars_stay_out_of_a_log():
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    env["PYTHONPATH"] = str(REPO)

    def stderr(mode: str) -> str:
        res = subprocess.run([sys.executable, "-c", textwrap.dedent(BARS), mode], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        return res.stderr

    plain = stderr("plain")  # the libraries' default: the bars reach a pipe too
    assert "Writing model shards" in plain and "Loading weights" in plain
    quiet = stderr("cli")
    assert "Writing model shards" not in quiet and "Loading weights" not in quiet


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return False


def _wait_for_zombie(pid: int) -> None:
    deadline = time.monotonic() + 30
    while not _zombie(pid):
        assert time.monotonic() < deadline, f"process {pid} did not end"
        time.sleep(0.02)


def test_reap_ended_children_leaves_running_ones():
    ended = subprocess.Popen(["true"])
    running = subprocess.Popen(["sleep", "30"])
    try:
        _wait_for_zombie(ended.pid)
        assert reap_ended_children() >= 1
        assert not Path(f"/proc/{ended.pid}").exists()  # collected: no longer "defunct"
        assert running.poll() is None
    finally:
        running.kill()
        running.wait()


# `serve` with the server command replaced by a shell that reports whether this process's ended
# child is still defunct after the exec (the pid stays the same across exec).
SERVE = """
import subprocess, sys, time
from pathlib import Path
import core.cli.app as app
from core.store import Store
child = subprocess.Popen(["true"])
while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
    time.sleep(0.02)
check = f"test -e /proc/{child.pid} && echo defunct || echo reaped"
app.serve_command = lambda port, db=None: ["/bin/sh", "-c", check]
app.serve(8599, Store(sys.argv[1]))
"""


def test_the_dashboard_server_inherits_no_defunct_children(tmp_path):
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(SERVE), str(tmp_path / "s.duckdb")],
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "reaped"
