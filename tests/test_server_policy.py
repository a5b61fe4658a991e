"""ServerPolicy against real `w2stree serve` servers on 127.0.0.1 (real HTTP, the tiny random-weight
weak model of test_hf_policy): its stored trajectories equal the in-process HFPolicy's field by
field, greedy and with the paper schedule's seeds; episodes advance while other episodes' calls are
held; a 500, a timeout and a server killed mid-run change nothing; an unreachable URL is one line
naming it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest
from servers import free_port
from test_hf_policy import _requests, weak  # noqa: F401 - `weak` is the module-scoped model fixture

from core.agents.base import PAPER_SCHEDULE, Sampling
from core.agents.hf import HFPolicy
from core.agents.server import ServerPolicy
from core.collect import collect
from core.errors import UserError
from core.serve import CompletionsHandler, make_server

NEW_TOKENS = 24


@contextmanager
def serving(model: str, handler: type[CompletionsHandler] = CompletionsHandler):
    """A completions server for `model` on a free port in a thread; yields (url, server)."""
    # one call at a time: which calls share a generate would otherwise depend on the machine's load
    server = make_server(HFPolicy(model, device="cpu", max_new_tokens=NEW_TOKENS, batch_size=8), 0,
                         handler=handler, batch_calls=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def local(weak):  # noqa: F811 - the imported fixture
    return HFPolicy(weak, device="cpu", max_new_tokens=NEW_TOKENS, batch_size=8)


def _client(weak: str, url: str, **kw) -> ServerPolicy:  # noqa: F811
    return ServerPolicy(weak, url, max_new_tokens=NEW_TOKENS, **kw)


def _episodes(store, run_id: str) -> dict[tuple[str, str], dict]:
    """A run's trajectories by (task, sampling), without their run and trajectory ids."""
    out = {}
    for t in store.trajectories(run_id=run_id):
        d = t.to_dict()
        d.pop("run_id"), d.pop("traj_id")
        key = (t.task_id, t.meta["sampling"])
        assert key not in out  # nothing duplicated
        out[key] = d
    return out


def _collect(store, policy, tasks: list[str]) -> dict[tuple[str, str], dict]:
    res = collect(store, "shop", policy, tasks, PAPER_SCHEDULE, max_steps=3, progress=False)
    return _episodes(store, res.run_id)


def _tasks() -> list[str]:
    return [r.task_id for r in _requests(3)]


def test_stored_trajectories_equal_the_in_process_policys(weak, local, store):  # noqa: F811
    """Greedy and the paper schedule's sampled settings; one call per setting group and one
    prompt per call both give the in-process replies."""
    want = _collect(store, local, _tasks())
    assert len(want) == 3 * len(PAPER_SCHEDULE)
    assert len({tuple(s["action"] for s in d["steps"]) for d in want.values()}) > 3  # settings differ
    with serving(weak) as (url, _):
        for per_call in (64, 1):
            client = _client(weak, url, prompts_per_call=per_call)
            assert _collect(store, client, _tasks()) == want
            client.close()


def test_requests_carry_every_decoding_field(weak, local):  # noqa: F811
    with serving(weak) as (url, _):
        client = _client(weak, url)
        greedy, sampled = _requests(2)
        sampled.sampling = Sampling(0.7, 0.9)
        g, s = client.fields(greedy), client.fields(sampled)
        assert g["temperature"] == 0.0 and g["seed"] == 0 and g["top_k"] == -1
        assert (s["temperature"], s["top_p"], s["seed"]) == (0.7, 0.9, local.row_seed(sampled))
        assert g["repetition_penalty"] == 1.0 and g["max_tokens"] == NEW_TOKENS
        assert g["stop_token_ids"] == local.stop_ids and g["stop"] == ["\nObservation:"]
        client.close()


def test_episodes_advance_while_one_settings_calls_are_held(weak, local, store):  # noqa: F811
    """A real server holds every call of one sampled setting (t1-p0.8) until the other nine
    episodes have ended (collect's progress says so; 60 s at most): they were not waiting for the
    held replies, and what is stored still equals the in-process run's."""
    release, by_progress, timed_out = threading.Event(), [], []

    class Holding(CompletionsHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if b'"top_p": 0.8' in body and not release.wait(60):
                timed_out.append(body)  # the others waited for this call: released by the clock
            self.rfile = io.BytesIO(body)
            super().do_POST()

    def progress(done: int, total: int) -> None:
        if done == total - len(_tasks()) and not release.is_set():
            by_progress.append(done)
            release.set()

    want = _collect(store, local, _tasks())
    with serving(weak, Holding) as (url, _):
        client = _client(weak, url)
        res = collect(store, "shop", client, _tasks(), PAPER_SCHEDULE, max_steps=3, progress=progress)
        client.close()
    assert by_progress == [9] and timed_out == []  # the nine others ended while the held calls were outstanding
    assert _episodes(store, res.run_id) == want


def test_a_500_and_a_timeout_are_retried(weak, local):  # noqa: F811
    calls = []

    class Flaky(CompletionsHandler):
        def do_POST(self):  # noqa: N802
            calls.append(self.path)
            if len(calls) == 1:
                self._send(500, {"error": {"message": "boom"}})
            elif len(calls) == 2:
                time.sleep(1.5)  # past the client's timeout
                self.close_connection = True
            else:
                super().do_POST()

    reqs = _requests(4)
    with serving(weak, Flaky) as (url, _):
        client = _client(weak, url, timeout=0.5, retries=3, backoff=0.01)
        assert client.act(reqs) == local.act(reqs)
        client.close()
    assert len(calls) == 3  # the greedy rows share one call: a 500, a timeout, then the answer


def test_a_server_killed_mid_run_moves_its_episodes(weak, local, store):  # noqa: F811
    """Episodes are spread over both servers; A dies without answering its 4th call (and refuses
    connections after); its episodes finish on B: every trajectory once, equal to in-process."""
    prompts = {"A": 0, "B": 0}

    def counting(name: str, die_at: int | None = None) -> type[CompletionsHandler]:
        class Handler(CompletionsHandler):
            calls = 0

            def do_POST(self):  # noqa: N802
                type(self).calls += 1
                if type(self).calls == die_at:
                    srv = self.server
                    threading.Thread(target=lambda: (srv.shutdown(), srv.server_close())).start()
                    self.close_connection = True  # the connection drops unanswered
                    return
                super().do_POST()
                prompts[name] += 1
        return Handler

    want = _collect(store, local, _tasks())
    with serving(weak, counting("A", die_at=4)) as (url_a, _), serving(weak, counting("B")) as (url_b, _):
        client = _client(weak, f"{url_a},{url_b}", timeout=10, retries=2, backoff=0.05)
        got = _collect(store, client, _tasks())
        assert client.servers[0].down is not None and client.servers[1].down is None
        client.close()
    assert got == want
    assert prompts["A"] >= 2 and prompts["B"] >= 2  # both served before A died


def test_new_episodes_go_to_the_least_loaded_server_and_stick(weak):  # noqa: F811
    seen: dict[str, list[str]] = {"A": [], "B": []}

    def recording(name: str) -> type[CompletionsHandler]:
        class Handler(CompletionsHandler):
            def do_POST(self):  # noqa: N802
                seen[name].append(self.path)
                super().do_POST()
        return Handler

    reqs = [r for r in _requests(6) if not r.history]  # four first turns
    with serving(weak, recording("A")) as (url_a, _), serving(weak, recording("B")) as (url_b, _):
        client = _client(weak, f"{url_a},{url_b}", prompts_per_call=1)
        client.act(reqs)
        assert len(seen["A"]) == len(seen["B"]) == len(reqs) // 2
        first = {r.task_id: client._sticky[(r.env, r.task_id, r.seed, r.sampling)].url for r in reqs}
        later = [r for r in _requests(6) if r.history]  # the same kind of episode one step on
        for r in reqs:
            r.history = later[0].history  # a next turn of each episode
        client.act(reqs)
        assert {r.task_id: client._sticky[(r.env, r.task_id, r.seed, r.sampling)].url for r in reqs} == first
        assert len(seen["A"]) == len(seen["B"]) == len(reqs)
        client.close()


def test_explore_through_a_server_stores_what_explore_in_process_stores(weak, tmp_path, store):  # noqa: F811
    """`explore` (ExploreSpec.server) from a node of a stored tree: the K continuations through the
    server equal the in-process ones."""
    from test_explore import TASK, _failed_tree

    from core.explore import ExploreSpec, explore
    from core.store import Store

    runs = []
    with serving(weak) as (url, _):
        for server, db in ((None, store), (url, Store(tmp_path / "b.duckdb"))):
            _failed_tree(db)
            spec = ExploreSpec(env="shop", task_id=TASK, node=1, policy=weak, k=4, schedule="paper", max_steps=2,
                               server=server)
            runs.append(_episodes(db, explore(db, spec).run_id))
    for run in runs:  # the id of the branch explored from is each store's own
        for d in run.values():
            d["meta"]["explore"].pop("from_traj")
    assert len(runs[0]) == 4 and runs[0] == runs[1]


def test_an_unreachable_url_is_one_line_naming_it(weak):  # noqa: F811
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UserError) as err:
        ServerPolicy(weak, f"{url}/v1", max_new_tokens=NEW_TOKENS, timeout=2)
    assert f"{url}/v1" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="not an http"):
        ServerPolicy(weak, "localhost:8000")


@pytest.mark.slow
def test_cli_serve_and_collect_through_it(weak, tmp_path):  # noqa: F811
    """`w2stree serve` in its own process; `w2stree collect --server` stores what `w2stree collect`
    stores in process; an unreachable --server is one line on stderr."""
    from core.store import Store

    env = {**os.environ, "PYTHONPATH": os.getcwd(), "W2STREE_HOME": str(tmp_path),
           "W2STREE_DB": str(tmp_path / "w2stree.duckdb"), "W2STREE_MAX_NEW_TOKENS": "16"}
    port = free_port()
    cli = [sys.executable, "-m", "core"]
    server = subprocess.Popen(cli + ["serve", "--model", weak, "--port", str(port), "--device", "cpu",
                                     "--one-call-at-a-time"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "serving weak-random on" in server.stdout.readline()
        common = ["collect", "--env", "shop", "--policy", weak, "--tasks", "2", "--max-steps", "2",
                  "--schedule", "paper"]
        runs = []
        for extra in ([], ["--server", f"http://127.0.0.1:{port}"]):
            out = subprocess.run(cli + common + extra, env=env, capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stderr
            runs.append(out.stdout.split()[1].rstrip(":"))
        ev = subprocess.run(cli + ["eval", "--model", weak, "--env", "shop", "--tasks", "1", "--max-steps", "2",
                                   "--server", f"http://127.0.0.1:{port}"], env=env, capture_output=True, text=True,
                            timeout=300)
        assert ev.returncode == 0 and "episodes      1 " in ev.stdout, ev.stderr
        bad = subprocess.run(cli + common + ["--server", f"http://127.0.0.1:{free_port()}"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode != 0 and "unreachable" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    finally:
        server.terminate()
        server.wait(timeout=15)
    store = Store(tmp_path / "w2stree.duckdb")
    local_run, server_run = (_episodes(store, r) for r in runs)
    assert len(local_run) == 2 * len(PAPER_SCHEDULE) and local_run == server_run
