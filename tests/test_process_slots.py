"""Env slots in worker processes (`--executor process`, core.env_slots.ProcessSlots): a worker
killed mid-run is replaced and its episodes run again (each stored once, as an undisturbed run
plays them), `eval` on processes stores what it stores in-process, and a worker that dies every
time it starts ends the run with one line naming the env."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap

from slot_runs import TASKS, KillingExpert, played, run_shop, steps

from core.agents.base import PAPER_SCHEDULE
from core.agents.scripted import ExpertPolicy
from core.cli import main
from core.collect import collect
from core.env_slots import MAX_REPLACEMENTS, LocalSlots, Pool, ProcessSlots


def _kill_a_worker(before: set[int]) -> None:
    """SIGKILL one worker process started since `before` (the pids of this process's children then)."""
    new = sorted(p.pid for p in mp.active_children() if p.pid not in before)
    os.kill(new[-1], signal.SIGKILL)


def test_a_killed_worker_process_is_replaced_and_its_episodes_run_again() -> None:
    local = LocalSlots("shop", {})
    try:
        expected = played(run_shop(local, ExpertPolicy("shop"), 10))
    finally:
        local.close()
    slots = ProcessSlots("shop", {}, 2)
    try:
        old = [p.pid for p in slots.procs]
        ended = run_shop(slots, KillingExpert(lambda: os.kill(old[1], signal.SIGKILL), at=3), 10)
        assert slots.replaced == 1 and slots.procs[0].pid == old[0] and slots.procs[1].pid != old[1]
        assert sorted(ep.seq for ep in ended) == list(range(10))  # every episode once, none lost
        assert played(ended) == expected  # the lost ones ran again from their start
    finally:
        slots.close()
    assert mp.active_children() == []


def test_collect_survives_a_killed_worker_and_stores_each_episode_once(store) -> None:
    quiet = collect(store, "shop", ExpertPolicy("shop"), TASKS, PAPER_SCHEDULE, batch_size=6, progress=False)
    before = {p.pid for p in mp.active_children()}
    res = collect(store, "shop", KillingExpert(lambda: _kill_a_worker(before), at=4), TASKS, PAPER_SCHEDULE,
                  batch_size=6, pool=Pool(2, "process"), progress=False)
    assert res.status == "finished" and res.n_episodes == len(TASKS) * len(PAPER_SCHEDULE)
    trajs = store.trajectories(run_id=res.run_id)
    assert len(trajs) == len({(t.task_id, t.meta["sampling"]) for t in trajs}) == res.n_episodes
    assert steps(trajs) == steps(store.trajectories(run_id=quiet.run_id))
    settings = json.loads(store.run_record(res.run_id)["settings"])
    assert (settings["executor"], settings["workers"]) == ("process", 2)


def test_eval_on_worker_processes_stores_what_it_stores_in_process(store, capsys) -> None:
    played_by = {}
    for executor in ("local", "process"):
        workers = "1" if executor == "local" else "2"
        assert main(["eval", "--model", "random", "--env", "shop", "--tasks", "8", "--max-steps", "8",
                     "--batch-size", "4", "--workers", workers, "--executor", executor, "--label", executor]) == 0
        run = store.runs(kind="eval").set_index("model").loc[executor]
        assert json.loads(run["settings"])["executor"] == executor
        played_by[executor] = steps(store.trajectories(run_id=run["run_id"]))
    assert len(played_by["local"]) == 8 and played_by["local"] == played_by["process"]
    assert len({r[4] for r in played_by["local"]}) == 8  # eight different random walks
    capsys.readouterr()


# A user's env, defined in their own script, whose constructor ends the process (as a native env
# that cannot start aborts it): every worker dies as its env starts.
EXITING_ENV = """
import os
import sys

from core.envs.base import register_env
from core.envs.shop import ShopEnv


@register_env("exiting")
class ExitingEnv(ShopEnv):
    def __init__(self, **kwargs):
        os._exit(3)


if __name__ == "__main__":
    from core.cli import main

    sys.exit(main(["collect", "--env", "exiting", "--policy", "random", "--task-ids", "train_0", "train_1",
                      "--workers", "2"]))
"""


def test_a_worker_that_dies_every_time_ends_the_run_with_one_line(store, tmp_path) -> None:
    script = tmp_path / "exiting_env.py"
    script.write_text(textwrap.dedent(EXITING_ENV))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"w2stree: error: env 'exiting': its worker 0 died {MAX_REPLACEMENTS + 1} times (exit code 3); run the "
        "env in this process to see why (--executor local) and fix that")
    assert store.trajectory_index().empty
