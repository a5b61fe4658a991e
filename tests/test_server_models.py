"""Loading models onto running completions servers (`core.agents.server_models`) and `w2stree serve`'s
load endpoints, with the tiny random-weight weak model of test_hf_policy: a PEFT adapter and a full
model folder loaded into a real `w2stree serve` process give, through the server policy, the greedy
episodes the in-process HFPolicy gives; a missing path is one line naming it; calls go only to the
servers that serve the model; SGLang's route and model naming are followed."""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.request
from contextlib import contextmanager

import pytest
import torch
from servers import w2stree_serve
from test_hf_policy import _requests, weak  # noqa: F401 - `weak` is the module-scoped model fixture
from test_pair_ranking import randomised

from core.agents.base import Sampling
from core.agents.hf import HFPolicy
from core.agents.server import ServerPolicy
from core.agents.server_models import ensure_served, served_ids, serving
from core.collect import collect
from core.errors import UserError
from core.serve import CompletionsHandler, make_server

NEW_TOKENS = 16
GREEDY = (Sampling(0.0, 1.0, "greedy"),)


@pytest.fixture(scope="module")
def adapter(weak, tmp_path_factory):  # noqa: F811 - the imported fixture
    """A LoRA adapter of the weak model with random (not zero) matrices: it changes the replies."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(weak), LoraConfig(
        r=4, lora_alpha=64, target_modules="all-linear", init_lora_weights=False))
    out = tmp_path_factory.mktemp("lora") / "weak-lora"
    model.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def full(weak, tmp_path_factory):  # noqa: F811
    """A full model folder: the weak model with its matrices drawn again (another seed)."""
    return randomised(weak, tmp_path_factory.mktemp("full") / "weak-redrawn", seed=2)


@pytest.fixture(scope="module")
def served(weak, tmp_path_factory):  # noqa: F811
    """`w2stree serve --model weak` in its own process, one call at a time; yields its URL."""
    home = tmp_path_factory.mktemp("serve-home")
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "W2STREE_HOME": str(home),
           "W2STREE_DB": str(home / "w2stree.duckdb"), "W2STREE_MAX_NEW_TOKENS": str(NEW_TOKENS)}
    with w2stree_serve(weak, env, "--batch-size", "8") as url:
        yield url


def _cards(url: str) -> dict[str, dict]:
    return {c["id"]: c for c in json.loads(urllib.request.urlopen(url + "/v1/models", timeout=10).read())["data"]}


def _greedy_episodes(store, policy) -> list[dict]:
    """Greedy episodes of 3 shop tasks (3-step cap), without their run and trajectory ids."""
    res = collect(store, "shop", policy, [r.task_id for r in _requests(3)], GREEDY, max_steps=3, progress=False)
    out = []
    for t in store.trajectories(run_id=res.run_id):
        d = t.to_dict()
        d.pop("run_id"), d.pop("traj_id")
        out.append(d)
    return sorted(out, key=lambda d: d["task_id"])


@pytest.mark.slow
def test_loaded_adapter_and_full_model_play_as_in_process(weak, adapter, full, served, store):  # noqa: F811
    """Each is loaded into the running server (listed with vLLM's root/parent), and its greedy
    episodes through the server equal the in-process HFPolicy's, which differ from the base's."""
    base = _greedy_episodes(store, HFPolicy(weak, device="cpu", max_new_tokens=NEW_TOKENS, batch_size=8))
    for path in (adapter, full):
        name = os.path.basename(path)
        assert ensure_served(served, name, path) == [served]
        card = _cards(served)[name]
        assert (card["root"], card["parent"]) == (path, "weak-random")
        want = _greedy_episodes(store, HFPolicy(path, device="cpu", max_new_tokens=NEW_TOKENS, batch_size=8))
        assert [d["steps"] for d in want] != [d["steps"] for d in base]  # the loaded weights matter
        client = ServerPolicy(path, served, max_new_tokens=NEW_TOKENS)
        got = _greedy_episodes(store, client)
        assert client.run_settings() == {"servers": {served: name}}
        client.close()
        assert got == want
        assert ensure_served(served, name, path) == [served]  # listed now: nothing loaded again
    assert _cards(served)["weak-random"]["parent"] is None


def test_serving_names_a_model_by_its_weights(weak, adapter, tmp_path, store):  # noqa: F811
    """`serving` loads a folder under its name plus a digest of its files, so a model retrained in
    the same folder is loaded again under a new id, never served stale; scripted policies and no
    servers run in process (None)."""
    folder = tmp_path / "weak-lora"
    shutil.copytree(adapter, folder)
    with _threaded(weak) as url:
        (got, first), = serving(url, str(folder), store).items()
        assert got == url and first.startswith("weak-lora-") and serving(url, str(folder), store) == {url: first}
        config = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": 8}))  # "retrained"
        (_, second), = serving(url, str(folder), store).items()
        assert second != first and {first, second} <= set(_cards(url))
    assert serving(None, str(folder), store) is None and serving(url, "noisy-expert", store) is None


def test_a_missing_path_is_one_line_naming_it(weak, tmp_path):  # noqa: F811
    with _threaded(weak) as url:
        gone = str(tmp_path / "no-such-model")
        with pytest.raises(UserError) as err:
            ensure_served(url, "gone", gone)
    msg = str(err.value)
    assert "\n" not in msg and gone in msg and "'gone'" in msg and url in msg and "HTTP 404" in msg
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in msg and "shared disk" in msg


def test_calls_go_only_to_the_servers_that_serve_the_model(weak, adapter):  # noqa: F811
    """Two servers of the base model; the adapter is loaded on B only (A refuses the load): the
    policy of the adapter calls B only, the policy of the base both. Unloaded, B answers 404."""
    calls = {"A": 0, "B": 0}

    def counting(name: str) -> type[CompletionsHandler]:
        class Handler(CompletionsHandler):
            def do_POST(self):  # noqa: N802
                if self.path.endswith("/load_lora_adapter") and name == "A":
                    self._send(404, {"detail": "Not Found"})  # vLLM without runtime LoRA updating
                    return
                if self.path == "/v1/completions":
                    calls[name] += 1
                super().do_POST()
        return Handler

    reqs = [r for r in _requests(4) if not r.history]
    with _threaded(weak, counting("A")) as url_a, _threaded(weak, counting("B")) as url_b:
        assert served_ids(f"{url_a},{url_b}", "weak-lora", adapter) == {url_b: "weak-lora"}
        client = ServerPolicy(adapter, f"{url_a},{url_b}", max_new_tokens=NEW_TOKENS, prompts_per_call=1)
        assert [s.url for s in client.servers] == [url_b]
        client.act(reqs)
        assert calls == {"A": 0, "B": len(reqs)}
        base = ServerPolicy(weak, f"{url_a},{url_b}", max_new_tokens=NEW_TOKENS, prompts_per_call=1)
        assert [s.url for s in base.servers] == [url_a, url_b]
        _post(url_b + "/v1/unload_lora_adapter", {"lora_name": "weak-lora"})
        with pytest.raises(UserError, match="HTTP 404"):
            client.act(reqs)
        for c in (client, base):
            c.close()


def test_sglang_route_and_adapter_naming(weak, adapter):  # noqa: F811
    """A server with SGLang's API: no /v1/load_lora_adapter, `/load_lora_adapter` answering JSON,
    /v1/models listing the base only, an adapter called as `BASE:NAME`."""

    class SGLangLike(CompletionsHandler):
        def do_GET(self):  # noqa: N802
            if self.path == "/v1/models":
                self._send(200, {"object": "list", "data": self.server.app.cards()[:1]})
            else:
                super().do_GET()

        def do_POST(self):  # noqa: N802
            if self.path == "/v1/load_lora_adapter":
                self._send(404, {"detail": "Not Found"})
                return
            if self.path == "/load_lora_adapter":
                self.path = "/v1/load_lora_adapter"
            super().do_POST()

    class App:  # the `model` field `weak-random:NAME` names the adapter NAME
        def __init__(self, app):
            self.app = app

        def __getattr__(self, key):
            return getattr(self.app, key)

        def complete(self, body):
            return self.app.complete({**body, "model": body["model"].split(":", 1)[-1]})

    with _threaded(weak, SGLangLike, wrap=App) as url:
        assert served_ids(url, "weak-lora", adapter) == {url: "weak-random:weak-lora"}
        # loaded already: SGLang says so (it does not list it), and that counts as served
        assert served_ids(url, "weak-lora", adapter) == {url: "weak-random:weak-lora"}
        reqs = _requests(3)
        client = ServerPolicy(adapter, {url: "weak-random:weak-lora"}, max_new_tokens=NEW_TOKENS)
        assert client.act(reqs) == HFPolicy(adapter, device="cpu", max_new_tokens=NEW_TOKENS).act(reqs)
        client.close()


def _post(url: str, body: dict) -> None:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()


@contextmanager
def _threaded(model: str, handler: type[CompletionsHandler] = CompletionsHandler, wrap=None):
    """A `w2stree serve` server of `model` in a thread of this process (`wrap` wraps its app)."""
    server = make_server(HFPolicy(model, device="cpu", max_new_tokens=NEW_TOKENS, batch_size=8), 0,
                         handler=handler, batch_calls=False)
    if wrap is not None:
        server.app = wrap(server.app)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_growth_form_passes_its_model_server_to_the_job(store):
    """The Trees page's growth form: its "Model server" reaches the job's checks (a scripted
    explorer on a server is one line on the page; no job starts)."""
    from test_dashboard_pages import run_page
    from test_explore import TASK, _failed_tree

    _failed_tree(store)
    at = run_page("views/trees.py", tree=f"shop/{TASK}", node="2")
    assert not at.exception, at.exception
    at.selectbox(key="grow_policy").set_value("noisy-expert")
    at.text_input(key="grow_server").set_value("http://127.0.0.1:8000")
    at.button(key="FormSubmitter:grow_form-Grow where the rule says").click().run()
    assert not at.exception, at.exception
    assert any("scripted" in e.value for e in at.error) and "grow_job" not in at.session_state
