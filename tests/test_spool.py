"""Many machines, one store: sharded collectors writing spools, imported into one real store."""

from __future__ import annotations

import json

import pytest

from core.agents.base import PAPER_SCHEDULE, Policy, Request
from core.agents.registry import make_policy
from core.agents.scripted import ExpertPolicy
from core.cli import main
from core.collect import collect, parse_shard, shard_tasks
from core.errors import UserError
from core.formats.importer import import_paths
from core.store import Store

TASKS = [f"train_{i}" for i in range(7)] + ["test_0", "test_1"]  # two splits: the spool keeps them


def _noisy() -> Policy:
    return make_policy("noisy-expert", "shop", seed=3)


def _stored(store: Store) -> list[tuple]:
    """Every stored trajectory as a comparable row: all it holds but its id and run."""
    return sorted((t.env, t.task_id, t.instruction, t.reward, t.success, t.source, t.model, t.temperature,
                   t.top_p, json.dumps(t.meta, sort_keys=True),
                   tuple((s.thought, s.action, s.observation, s.reward, s.score) for s in t.steps))
                  for t in store.trajectories())


@pytest.mark.parametrize("n", [1, 2, 3, 4, 9])
def test_shards_partition_the_tasks(n) -> None:
    shards = [shard_tasks(TASKS, parse_shard(f"{i}/{n}")) for i in range(n)]
    assert sorted(t for s in shards for t in s) == sorted(TASKS)  # union = all, each once
    assert [len(s) for s in shards] == [len(TASKS[i::n]) for i in range(n)]
    assert shards[0][0] == TASKS[0] and (n == 1 or shards[1][0] == TASKS[1])


@pytest.mark.parametrize("text, says", [("3/3", "I must be 0 to 2"), ("-1/3", "I must be 0 to 2"),
                                        ("1", "not I/N"), ("a/b", "not I/N"), ("0/0", "not I/N")])
def test_a_bad_shard_is_one_line_naming_the_flag(text, says) -> None:
    with pytest.raises(UserError, match=says) as err:
        parse_shard(text)
    assert str(err.value).startswith("--shard") and "\n" not in str(err.value)
    with pytest.raises(UserError, match="at most 9 shards"):
        shard_tasks(TASKS, (9, 10))


def test_spools_of_three_shards_equal_one_unsharded_collect(tmp_path, store) -> None:
    whole = Store(tmp_path / "whole.duckdb")
    collect(whole, "shop", _noisy(), TASKS, PAPER_SCHEDULE, batch_size=5, seed=3, progress=False)
    for i in range(3):  # each "machine" has no store: None
        res = collect(None, "shop", _noisy(), TASKS, PAPER_SCHEDULE, batch_size=5, seed=3, progress=False,
                      shard=(i, 3), spool=tmp_path / f"shard{i}.jsonl")
        assert res.n_episodes == len(TASKS[i::3]) * len(PAPER_SCHEDULE)
    summary = import_paths(store, "jsonl", sorted(tmp_path.glob("shard*.jsonl")), progress=False)
    assert (summary.trajectories, summary.already, summary.errors) == (len(TASKS) * 4, 0, [])
    rows = _stored(store)
    assert rows == _stored(whole) and len(rows) == len(TASKS) * 4
    assert {r[3] for r in rows} != {1.0}  # the noisy expert fails some: rewards really compared
    assert store.tasks().sort_values("task_id")[["task_id", "split"]].values.tolist() == \
        whole.tasks().sort_values("task_id")[["task_id", "split"]].values.tolist()
    runs = store.runs().set_index("run_id")
    assert len(runs) == 3 and set(runs["kind"]) == {"collect"} and set(runs["policy"]) == {"noisy-expert"}
    assert sorted(json.loads(s)["shard"] for s in runs["settings"]) == ["0/3", "1/3", "2/3"]


def test_importing_a_spool_twice_adds_nothing(tmp_path, store, capsys) -> None:
    spool = tmp_path / "s.jsonl"
    collect(None, "shop", ExpertPolicy("shop"), TASKS[:4], progress=False, spool=spool)
    assert main(["import", "jsonl", str(spool)]) == 0
    before = store.counts()
    assert main(["import", "jsonl", str(spool)]) == 0
    assert store.counts() == before
    assert capsys.readouterr().out.splitlines()[-1] == "imported 0 trajectories from 1 file; 4 already stored"


def test_a_truncated_last_line_is_skipped_and_the_rest_imported(tmp_path, store, capsys) -> None:
    spool = tmp_path / "killed.jsonl"
    collect(None, "shop", ExpertPolicy("shop"), TASKS[:4], progress=False, spool=spool)
    full = spool.read_bytes()
    spool.write_bytes(full[:-150])  # the collector died while writing its fourth episode
    assert main(["import", "jsonl", str(spool)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "imported 3 trajectories from 1 file"
    assert err.strip() == f"w2stree: {spool}: line 4: skipped a truncated last line (its writer stopped " \
                          "mid-line); the lines before it are read"
    spool.write_bytes(full)  # the whole spool later: only the missing episode is added
    summary = import_paths(store, "jsonl", [spool], progress=False)
    assert (summary.trajectories, summary.already) == (1, 3)
    assert sorted(store.trajectory_index()["task_id"]) == TASKS[:4]
    spool.write_bytes(full[:-150] + b"\n" + full[-150:])  # a bad line that is not the last: an error
    assert import_paths(store, "jsonl", [spool], progress=False).errors


class StoppingExpert(ExpertPolicy):
    """The expert, stopped by Ctrl-C on its `stop_at`-th call."""

    def __init__(self, stop_at: int) -> None:
        super().__init__("shop")
        self.calls, self.stop_at = 0, stop_at

    def act(self, requests: list[Request]) -> list[str]:
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return super().act(requests)


def test_a_killed_spooling_collector_keeps_its_episodes_and_resumes_from_the_spool(tmp_path, store) -> None:
    spool = tmp_path / "s.jsonl"
    with pytest.raises(KeyboardInterrupt):
        collect(None, "shop", StoppingExpert(12), TASKS, batch_size=3, run_id="run-s", progress=False, spool=spool)
    kept = len(spool.read_text().splitlines())
    assert 0 < kept < len(TASKS)
    with spool.open("a") as fh:  # and was killed while writing one more line
        fh.write('{"env": "shop", "task_id": "train_')
    res = collect(None, "shop", StoppingExpert(0), TASKS, run_id="run-s", resume=True, progress=False, spool=spool)
    assert res.n_episodes == len(TASKS) - kept
    summary = import_paths(store, "jsonl", [spool], progress=False)
    assert (summary.errors, summary.notes) == ([], [])  # the resumed collector cut the partial line off
    assert sorted(store.trajectory_index(run_id="run-s")["task_id"]) == sorted(TASKS)  # each exactly once
    with pytest.raises(UserError, match="has no run 'run-t'"):
        collect(None, "shop", ExpertPolicy("shop"), TASKS, run_id="run-t", resume=True, progress=False, spool=spool)


def test_the_cli_collector_opens_no_store_and_a_spool_never_joins_a_collected_run(tmp_path, store, capsys,
                                                                                    monkeypatch) -> None:
    spool, nowhere = tmp_path / "s.jsonl", tmp_path / "nowhere.duckdb"
    monkeypatch.setenv("W2STREE_DB", str(nowhere))
    assert main(["collect", "--env", "shop", "--policy", "expert", "--tasks", "5", "--shard", "1/2",
                 "--spool", str(spool)]) == 0
    assert not nowhere.exists()  # the default store: the spooling collector never opened it
    run_id = json.loads(spool.read_text().splitlines()[0])["run"]
    assert capsys.readouterr().out.startswith(f"run {run_id}: 2 episodes")
    collect(store, "shop", ExpertPolicy("shop"), TASKS[:1], run_id=run_id, progress=False)  # same id, here
    summary = import_paths(store, "jsonl", [spool], progress=False)
    assert summary.trajectories == 0 and "was not collected to a spool" in summary.errors[0]
    assert len(store.trajectory_index(run_id=run_id)) == 1


@pytest.mark.parametrize("text, kept", [("a\nbb\n", "a\nbb\n"), ("a\nbbbbbbbbbbb", "a\n"), ("bbbbbbbbb", ""),
                                        ("aaaaaaaaaa\nbbbbbbbbbbbbb", "aaaaaaaaaa\n")])
def test_a_spool_reopened_loses_only_its_partial_last_line(tmp_path, text, kept) -> None:
    from core.spool import _cut_partial_line

    path = tmp_path / "s.jsonl"
    path.write_text(text)
    _cut_partial_line(path, chunk=4)  # lines longer than the chunks read backwards
    assert path.read_text() == kept
