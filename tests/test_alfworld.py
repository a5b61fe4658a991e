"""ALFWorld on the real package and real games (the few bundled in core/data/alfworld_mini, and
the paper's splits from a folder of the full archives where one is given). Loading a game takes ~3 s, so the
episode tests are few and marked slow; the data, split and error tests load no game."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import stages
from core.cli import main
from core.envs import alfworld_data as data
from core.envs.base import UnknownEnvError, make_env, select_tasks
from core.errors import UserError
from core.state_merge import SPLICE, unfold
from core.state_merge import replay as replay_keys
from core.trajectory import Step, Trajectory

pytest.importorskip("textworld")
pytest.importorskip("alfworld")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundled(tmp_path_factory) -> Path:
    """The bundled games unpacked once for the module (the test sets ALFWORLD_DATA to it)."""
    return data.unpack("bundled", tmp_path_factory.mktemp("alfworld") / "data")


@pytest.fixture
def alf(bundled, monkeypatch) -> Path:
    monkeypatch.setenv("ALFWORLD_DATA", str(bundled))
    return bundled


# --------------------------------------------------------------------------- data, splits, errors


def test_data_command_unpacks_bundled_games(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    monkeypatch.setenv("W2STREE_HOME", str(tmp_path / "home"))
    assert main(["data", "alfworld", "--from", "bundled"]) == 0  # default: <home>/alfworld
    root = tmp_path / "home" / "alfworld"
    assert (root / "logic" / "alfred.pddl").is_file()
    assert "eto-unseen 3 games of 134" in capsys.readouterr().out
    env = make_env("alfworld")  # found there without ALFWORLD_DATA
    unseen = [t.task_id for t in env.tasks("eto-unseen")]
    order = [g for g in data.eto_unseen_order() if g in set(unseen)]
    assert unseen == order and len(unseen) == 3  # ETO's order, not sorted
    assert unseen != sorted(unseen)
    assert all(t.startswith("valid_unseen/") for t in unseen)
    assert len(env.tasks("eto-seen")) == 2 and len(env.tasks("train")) == 3
    assert sorted(t.task_id for t in env.tasks("test")) == sorted(unseen)
    # dev is the seen set: disjoint from train and test, usable wherever a split is
    dev = select_tasks(env, "dev")
    assert dev == [t.task_id for t in env.tasks("eto-seen")] and all(t.startswith("valid_seen/") for t in dev)
    assert not set(dev) & {t.task_id for s in ("train", "test") for t in env.tasks(s)}
    with pytest.raises(UserError, match="unknown alfworld split"):
        env.tasks("valid_seen")
    # a broken source folder: one line naming what is missing
    (tmp_path / "empty").mkdir()
    assert main(["data", "alfworld", "--from", str(tmp_path / "empty")]) == 2
    assert "logic/alfred.pddl is missing" in capsys.readouterr().err


def test_missing_data_is_one_line_naming_path_and_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    monkeypatch.setenv("W2STREE_HOME", str(tmp_path))
    with pytest.raises(UserError, match=rf"{tmp_path / 'alfworld' / 'json_2.1.1'} does not exist.*w2stree data alfworld --from"):
        make_env("alfworld")
    assert main(["collect", "--env", "alfworld", "--policy", "random", "--tasks", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "w2stree data alfworld" in err and "Traceback" not in err


def test_missing_game_file_and_bad_task_ids(alf, tmp_path, monkeypatch):
    env = make_env("alfworld")
    for bad in ("train/nope", "../x/y/z", "valid_seen/a/b/c"):
        with pytest.raises(UnknownEnvError):
            env.reset(bad)
    # a copy of the data with one game's traj_data.json gone: the error names that file
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(alf, root)
    task = data.split_games("eto-seen", root)[0]
    (root / "json_2.1.1" / task / "traj_data.json").unlink()
    monkeypatch.setenv("ALFWORLD_DATA", str(root))
    with pytest.raises(UserError, match=rf"{root / 'json_2.1.1' / task / 'traj_data.json'} does not exist"):
        make_env("alfworld").reset(task)


def test_task_ids_game_paths_and_unsolvable_games(alf, tmp_path):
    tid = data.split_games("eto-seen", alf)[0]
    assert data.relative_game(tid) == f"json_2.1.1/{tid}/game.tw-pddl"
    assert (alf / data.relative_game(tid)).is_file()
    # ETO / ALFWorld write game paths in several forms; all map back to the task id
    for form in (f"json_2.1.1/{tid}/game.tw-pddl", f"/root/data/json_2.1.1/{tid}/game.tw-pddl",
                 f"{tid}/game.tw-pddl"):
        assert data.task_id_of_game(form) == tid
    assert data.task_id_of_game("valid_seen/x/traj_data.json") is None
    # like ALFWorld's loader: "solvable": false games and movable/Sliced variants are left out
    root = tmp_path / "d"
    src = alf / "json_2.1.1" / tid
    for name, solvable in (("pick_and_place_simple-A-None-B-1", False), ("pick_and_place_with_movable_recep-A-B-C-1", True),
                           ("pick_and_place_simple-C-None-D-2", True)):
        d = root / "json_2.1.1" / "train" / name / "trial_1"
        d.mkdir(parents=True)
        game = json.loads((src / "game.tw-pddl").read_text())
        game["solvable"] = solvable
        (d / "game.tw-pddl").write_text(json.dumps(game))
        (d / "traj_data.json").write_text("{}")
    assert data.split_games("train", root) == ["train/pick_and_place_simple-C-None-D-2/trial_1"]


@pytest.mark.slow
def test_paper_split_sizes(tmp_path):
    """The full test sets from a folder of ALFWorld archives (`$W2STREE_ALFWORLD_ARCHIVES`, as
    `w2stree data alfworld --from DIR` takes it): 140 seen, 134 unseen in ETO's order."""
    src = Path(os.environ.get("W2STREE_ALFWORLD_ARCHIVES", "/nonexistent"))
    if not (src / "valid_unseen.tar.xz").is_file():
        pytest.skip("the full ALFWorld archives are optional data: set W2STREE_ALFWORLD_ARCHIVES to their folder")
    work = tmp_path / "src"
    (work / "logic").mkdir(parents=True)
    for name in ("valid_seen.tar.xz", "valid_unseen.tar.xz"):
        (work / name).symlink_to(src / name)
    for f in (src / "logic").iterdir():
        (work / "logic" / f.name).symlink_to(f)
    root = data.unpack(work, tmp_path / "data")
    assert len(data.split_games("eto-seen", root)) == 140
    assert data.split_games("eto-unseen", root) == list(data.eto_unseen_order())
    assert len(data.eto_unseen_order()) == 134
    assert sorted(data.split_games("test", root)) == sorted(data.eto_unseen_order())
    assert (src / "eto_unseen_games.txt").read_text().split() == [
        g.removeprefix("valid_unseen/") for g in data.eto_unseen_order()]


# --------------------------------------------------------------------------- episodes on real games


@pytest.mark.slow
@pytest.mark.timeout(2400)  # each game load costs ~5 s of CPU: minutes on a busy machine
def test_expert_wins_and_invalid_action_is_a_counted_noop(alf):
    env = make_env("alfworld")
    try:
        task = env.tasks("eto-seen")[0].task_id
        plan = env.expert(task)
        assert plan and all(s.thought for s in plan)
        obs, instruction = env.reset(task)
        assert instruction.startswith("Your task is to: ") and obs.startswith("You are in the middle of a room")
        assert "Welcome" not in obs and instruction not in obs
        valid = env.valid_actions()
        assert "look" in valid and plan[0].action in valid
        r = env.step("dance with the fridge")
        assert (r.observation, r.reward, r.done, r.info["invalid"]) == ("Nothing happens.", 0.0, False, True)
        assert env.valid_actions() == valid  # nothing changed
        assert env.step("").info["invalid"]
        results = [env.step(s.action) for s in plan]
        assert not any(x.info["invalid"] for x in results)
        assert [x.reward for x in results[:-1]] == [0.0] * (len(plan) - 1)
        assert results[-1].reward == 1.0 and results[-1].done and results[-1].info["success"]
        assert env.step("look").observation.startswith("The episode has ended")
        # a reset of the loaded game gives the same start
        assert env.reset(task) == (obs, instruction)
    finally:
        env.close()


@pytest.mark.slow
@pytest.mark.timeout(2400)  # each game load costs ~5 s of CPU: minutes on a busy machine
def test_collect_replay_tree_and_eto_round_trip(alf, store, tmp_path, capsys):
    """Expert and random collection on real games, replay, tree/MCTS/pairs, and ETO import/export
    of records built from those episodes."""
    from core.agents.scripted import ExpertPolicy, RandomPolicy
    from core.collect import collect
    from core.formats.importer import import_paths
    from core.replay import replay

    # one game: each load costs ~3 s of CPU (replay re-uses the game loaded for the same task)
    tasks = [t.task_id for t in make_env("alfworld").tasks("eto-seen")][:1]
    expert = ExpertPolicy("alfworld")
    try:
        res = collect(store, "alfworld", expert, tasks, progress=False)
    finally:
        expert.close()
    assert res.n_episodes == 1 and res.success_rate == 1.0
    res = collect(store, "alfworld", RandomPolicy(seed=1), tasks, max_steps=6, progress=False)
    assert res.success_rate == 0.0
    trajs = store.trajectories(env="alfworld")
    assert len(trajs) == 2
    for t in trajs:
        assert t.meta["game"] == f"json_2.1.1/{t.task_id}/game.tw-pddl"
        assert t.instruction.startswith("Your task is to: ")
    rnd = next(t for t in trajs if t.model == "random")
    assert len(rnd.steps) == 6 and not rnd.success and rnd.meta["truncated"]
    report = replay(store, env="alfworld")
    assert report.checked == 2 and report.ok

    assert main(["tree", "--env", "alfworld"]) == 0
    assert main(["mcts", "--env", "alfworld", "--iterations", "50"]) == 0
    assert main(["pairs", "--env", "alfworld"]) == 0
    out = tmp_path / "best.json"
    assert main(["export", "best-paths", str(out), "--format", "eto"]) == 0
    capsys.readouterr()

    # ETO SFT file (exported best paths) and an ETO explore file built from a real episode: both
    # name their game, import under the env's task ids, and replay to their rewards
    best = json.loads(out.read_text())
    assert {r["game_file"] for r in best} == {data.relative_game(t) for t in tasks}
    won = next(t for t in trajs if t.model == "expert")
    from core.agents.prompt import env_prefix, step_messages, task_message
    from core.formats.export import to_eto_turns

    conv = to_eto_turns([*env_prefix("alfworld"), {"role": "user", "content": task_message(
        won.instruction, won.meta["initial_observation"])}, *step_messages(won.steps)])
    explore = tmp_path / "eto" / "llama" / "explore"
    explore.mkdir(parents=True)
    (explore / "7.json").write_text(json.dumps({
        "meta": {"steps": len(won.steps), "reward": 1.0, "success": True, "game_file": won.meta["game"]},
        "conversations": conv}))
    assert import_paths(store, "eto-sft", [out], env="alfworld", progress=False).errors == []
    assert import_paths(store, "eto-explore", [tmp_path / "eto"], env="alfworld", progress=False).errors == []
    imported = [t for t in store.trajectories(env="alfworld") if t.source == "import"]
    assert len(imported) == 2
    assert {t.task_id for t in imported} == set(tasks)
    ex = next(t for t in imported if t.model == "llama")
    assert ex.task_id == won.task_id and ex.meta["eto_task_id"] == "7" and ex.actions == won.actions
    assert ex.instruction == won.instruction
    report = replay(store, env="alfworld")
    assert report.checked == 4 and report.ok, report.mismatches


@pytest.mark.slow
@pytest.mark.timeout(2400)  # each game load costs ~5 s of CPU: minutes on a busy machine
def test_state_key_and_state_merge_on_a_real_game(alf):
    """`look` and `inventory` change nothing, so after either one an episode is in the start
    state: two episodes that open with them share one node, and the pair moves below the expert's
    first move, where one episode wins and the other idles. The path no episode played (A's
    `look`, then B's idling) is spliced and replays to B's reward."""
    env = make_env("alfworld")
    try:
        task = env.tasks("eto-seen")[0].task_id
        plan = [s.action for s in env.expert(task)]
        env.reset(task)
        env.step("look")
        look = env.state_key()  # the first ask restarts the game with its facts and plays `look` again
        env.reset(task)
        env.step("inventory")
        assert env.state_key() == look
        env.step(plan[0])
        assert env.state_key() not in (look, None)

        def play(actions: list[str], traj_id: str) -> Trajectory:
            obs0, instruction = env.reset(task)
            results = [env.step(a) for a in actions]
            return Trajectory(env="alfworld", task_id=task, instruction=instruction,
                              steps=[Step(a, r.observation, reward=r.reward) for a, r in zip(actions, results)],
                              reward=results[-1].reward, meta={"initial_observation": obs0}, traj_id=traj_id)

        a = play(["look", *plan], "t-a")
        b = play(["inventory", plan[0], "look", "look"], "t-b")
        assert (a.reward, b.reward) == (1.0, 0.0)
        keys = replay_keys(env, a)
        assert keys is not None and keys[0] == look and len(set(keys)) == len(keys)
    finally:
        env.close()
    unfolded = unfold([a, b])
    assert (unfolded.spliced, unfolded.merged, unfolded.dropped) == (1, 1, 0)
    spliced = unfolded.new[0]
    assert spliced.source == SPLICE and spliced.meta["spliced_from"] == ["t-a", "t-b"]
    assert spliced.actions == ["look", plan[0], "look", "look"] and spliced.reward == 0.0
    action_pairs = stages.cut_pairs(stages.grow_trees([a, b]), stages.PairSettings("step"))
    assert [len(p.prompt) for p in action_pairs] == [1]  # the plain tree cuts at the root
    pairs = stages.cut_pairs(stages.grow_trees(unfolded.paths, stages.TreeSettings("state")),
                             stages.PairSettings("step"))
    assert len(pairs) == 1 and len(pairs[0].prompt) == 5  # task, look, its answer, the move, its answer
    assert plan[1] in pairs[0].chosen[0]["content"] and "look" in pairs[0].rejected[0]["content"]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # already gone
        return b""


@pytest.mark.slow
@pytest.mark.timeout(2400)  # each game load costs ~5 s of CPU: minutes on a busy machine
def test_workers_run_in_parallel_and_ctrl_c_leaves_nothing(alf, store, tmp_path):
    """`collect --workers 2` runs in two worker processes; Ctrl-C mid-run ends them all, keeps
    the finished episodes, and leaves no temporary files."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "collect", "--env", "alfworld", "--policy", "random", "--split", "train",
         "--workers", "2", "--batch-size", "2", "--max-steps", "40", "--samples", "20", "--temperature", "1"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
        # a test run started in the background (`pytest &`) hands its children SIGINT ignored, and
        # Python then installs no KeyboardInterrupt handler: give the child a terminal's default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 600  # generous: shared CI machines can be slow to spawn
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2 and proc.poll() is None:
            time.sleep(1)
            workers = [p for p in _children(proc.pid) if b"spawn_main" in _cmdline(p)]
        assert len(workers) == 2, f"two env worker processes; collect said: {proc.stderr.read() if proc.poll() is not None else ''}"
        time.sleep(8)  # games load in the workers
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole process group
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    time.sleep(1)
    left = subprocess.run(["ps", "-o", "pid=,stat=,args=", "-s", str(proc.pid)], capture_output=True, text=True).stdout
    # an exited orphan (multiprocessing's resource tracker) stays a zombie where PID 1 does not reap
    running = [ln for ln in left.splitlines() if ln.split()[1:2] and not ln.split()[1].startswith("Z")]
    assert running == [], f"processes left running in the session: {left}"
    assert list(tmp.iterdir()) == []
    # the run row is written once the task list is known; a Ctrl-C before that leaves none
    assert set(store.query("SELECT status FROM runs")["status"]) <= {"interrupted"}
