"""`w2stree serve`: a small OpenAI-compatible completions server around the in-process `HFPolicy`,
for users without vLLM/SGLang and for the tests of `core.agents.server.ServerPolicy`.

* `GET /v1/models` lists the served models in vLLM's shape: the model it was started with (`root`
  its folder, `parent` null) and every model loaded since (`root` the folder it was loaded from,
  `parent` the first model); `GET /health` answers `ok`.
* `POST /v1/load_lora_adapter {"lora_name", "lora_path"}` (vLLM's runtime LoRA endpoint) loads a
  PEFT adapter or a full model folder (`lora_path`, read on this machine) as another model served
  under `lora_name`; `POST /v1/unload_lora_adapter {"lora_name"}` drops one. As vLLM: a name loaded
  already is HTTP 400, a path with no model 404, success a plain `Success: ...` line.
* Calls name their model by the `model` field (absent: the first model); an unknown one is HTTP 404.
* `POST /v1/completions` takes token-id prompts (`prompt`: a list of ids or a list of such lists)
  and decodes them as `HFPolicy` does: greedy is the exact argmax, a sampled row draws with its
  own `seed` through the same per-row sampler (temperature, then top-p), so a `ServerPolicy` that
  sends `row_seed` gets the in-process policy's replies token for token. Fields the policy cannot
  honour (top_k, min_p, penalties, n > 1, text prompts) are refused with HTTP 400, never ignored.
* Text: the new tokens up to a stop token (the model's or `stop_token_ids`), decoded without
  special tokens, cut before the first `stop` string.
* Concurrent calls are batched: one worker thread takes every call waiting and answers their rows
  together (`HFPolicy.generate_ids`, `batch_size` rows per `generate`), so one prompt per call
  costs little more than many prompts per call.
* Binds 127.0.0.1 only: it has no authentication.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from core.agents.base import Sampling
from core.agents.hf import HFPolicy
from core.errors import UserError

HOST = "127.0.0.1"
_NEUTRAL = {"top_k": (None, -1, 0), "min_p": (None, 0, 0.0), "repetition_penalty": (None, 1, 1.0),
            "frequency_penalty": (None, 0, 0.0), "presence_penalty": (None, 0, 0.0), "n": (None, 1),
            "echo": (None, False), "logprobs": (None,), "best_of": (None, 1)}


class BadRequest(ValueError):
    """A request this server cannot answer as asked (HTTP 400)."""


class NotFound(BadRequest):
    """A model this server does not serve, or a folder with no model to load (HTTP 404)."""


class _Batcher:
    """One worker thread answering the rows of every call waiting, grouped by max_tokens (with
    `batch_calls` False: one call at a time, so a call's rows are computed the same whatever else
    arrives: which rows share a `generate` decides its padding, and so the last bits of the logits)."""

    def __init__(self, policy: HFPolicy, batch_calls: bool = True) -> None:
        self.policy, self.batch_calls = policy, batch_calls
        self.jobs: queue.Queue = queue.Queue()
        threading.Thread(target=self._loop, daemon=True, name="w2stree-serve-batcher").start()

    def run(self, prompts: list[list[int]], settings: list[Sampling], seeds: list[int],
            max_tokens: int) -> list[list[int]]:
        """The new token ids of each prompt, computed together with the other calls waiting."""
        job: dict[str, Any] = {"args": (prompts, settings, seeds, max_tokens), "done": threading.Event()}
        self.jobs.put(job)
        job["done"].wait()
        if "error" in job:
            raise job["error"]
        return job["out"]

    def _loop(self) -> None:
        while True:
            jobs = [self.jobs.get()]
            while self.batch_calls and not self.jobs.empty():
                jobs.append(self.jobs.get_nowait())
            by_length: dict[int, list[dict[str, Any]]] = {}
            for job in jobs:
                by_length.setdefault(job["args"][3], []).append(job)
            for max_tokens, group in by_length.items():
                rows = [(p, s, seed) for job in group for p, s, seed in zip(*job["args"][:3])]
                try:
                    out = self.policy.generate_ids([r[0] for r in rows], [r[1] for r in rows],
                                                   [r[2] for r in rows], max_new_tokens=max_tokens)
                except Exception as exc:  # noqa: BLE001 - the calls waiting get it as HTTP 500
                    for job in group:
                        job["error"] = exc
                        job["done"].set()
                    continue
                for job in group:
                    job["out"], out = out[:len(job["args"][0])], out[len(job["args"][0]):]
                    job["done"].set()


@dataclass
class Served:
    """One served model: its policy, its batcher and its `/v1/models` card."""

    policy: HFPolicy
    batcher: _Batcher
    card: dict[str, Any]


class CompletionsApp:
    """What the handler serves: the models by name (the first is the one it was started with),
    how a loaded one is built (`load_policy(path)`, the first model's settings) and the batching."""

    def __init__(self, policy: HFPolicy, name: str | None = None, batch_calls: bool = True,
                 load_policy: Callable[[str], HFPolicy] | None = None) -> None:
        self.batch_calls, self.load_policy = batch_calls, load_policy
        self.name = name or policy.name
        self.models: dict[str, Served] = {}
        self._lock = threading.Lock()
        self._add(self.name, policy, getattr(policy.model, "name_or_path", self.name), None)

    def _add(self, name: str, policy: HFPolicy, root: str, parent: str | None) -> None:
        card = {"id": name, "object": "model", "created": int(time.time()), "owned_by": "w2stree",
                "root": root, "parent": parent, "max_model_len": policy.max_context}
        self.models[name] = Served(policy, _Batcher(policy, self.batch_calls), card)

    def cards(self) -> list[dict[str, Any]]:
        """The `/v1/models` cards, the first model's first."""
        with self._lock:
            return [m.card for m in self.models.values()]

    def load(self, body: dict[str, Any]) -> str:
        """Load `lora_path` (an adapter or a full model folder) as the model `lora_name`."""
        name, path = str(body.get("lora_name") or ""), str(body.get("lora_path") or "")
        if not name or not path:
            raise BadRequest("Both 'lora_name' and 'lora_path' must be provided.")
        loaded = f"The lora adapter '{name}' has already been loaded."
        with self._lock:
            if name in self.models:
                raise BadRequest(loaded)
        if not (Path(path) / "config.json").is_file() and not (Path(path) / "adapter_config.json").is_file():
            raise NotFound(f"No adapter found for {path}: no config.json or adapter_config.json there "
                           "(the path is read on the server's machine)")
        if self.load_policy is None:
            raise BadRequest("this server cannot load models")
        try:  # outside the lock: the other models answer while this one loads
            policy = self.load_policy(path)
        except UserError as exc:
            raise BadRequest(f"cannot load {path}: {exc}") from None
        with self._lock:
            if name in self.models:  # a concurrent load of the same name won
                raise BadRequest(loaded)
            self._add(name, policy, path, self.name)
        return f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, body: dict[str, Any]) -> str:
        """Drop the loaded model `lora_name` (the first model stays)."""
        name = str(body.get("lora_name") or "")
        with self._lock:
            if name == self.name:
                raise BadRequest(f"{name!r} is the model this server was started with; it cannot be unloaded")
            if self.models.pop(name, None) is None:
                raise NotFound(f"The lora adapter '{name}' cannot be found.")
        return f"Success: LoRA adapter '{name}' removed successfully."

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """The answer to one `/v1/completions` body (raises `BadRequest`)."""
        with self._lock:
            served = self.models.get(self.name if body.get("model") is None else body["model"])
            names = ", ".join(self.models)
        if served is None:
            raise NotFound(f"The model `{body.get('model')}` does not exist; this server serves {names}")
        for key, allowed in _NEUTRAL.items():
            if body.get(key) not in allowed:
                raise BadRequest(f"{key}={body.get(key)!r} is not supported by this server")
        prompts = body.get("prompt")
        if isinstance(prompts, list) and prompts and all(isinstance(t, int) for t in prompts):
            prompts = [prompts]
        if not (isinstance(prompts, list) and prompts and all(
                isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in prompts)):
            raise BadRequest("prompt must be token ids (a list of ints, or a list of such lists); this "
                             "server takes no text prompts")
        pol = served.policy
        max_tokens = int(body.get("max_tokens") or 16)
        if max_tokens < 1 or max(map(len, prompts)) + max_tokens > pol.max_context:
            raise BadRequest(f"prompt plus max_tokens {max_tokens} exceeds the context {pol.max_context}")
        temperature = float(body.get("temperature", 1.0))
        sampling = Sampling(temperature, float(body.get("top_p", 1.0)))
        seed = int(body.get("seed") or 0)
        stops = [s for s in (body.get("stop") or []) if s] if not isinstance(body.get("stop"), str) else [body["stop"]]
        stop_ids = set(pol.stop_ids) | set(body.get("stop_token_ids") or [])
        rows = served.batcher.run(prompts, [sampling] * len(prompts), [seed] * len(prompts), max_tokens)
        choices = []
        n_out = 0
        for k, ids in enumerate(rows):
            cut = next((i for i, t in enumerate(ids) if t in stop_ids), None)
            n_out += len(ids) if cut is None else cut
            text = pol.decode_text(ids if cut is None else ids[:cut])
            hit = min((text.find(s) for s in stops if s in text), default=-1)
            if hit >= 0:
                text = text[:hit]
            choices.append({"index": k, "text": text, "logprobs": None,
                            "finish_reason": "length" if cut is None and hit < 0 else "stop"})
        return {"object": "text_completion", "model": served.card["id"], "choices": choices,
                "usage": {"prompt_tokens": sum(map(len, prompts)), "completion_tokens": n_out}}


class CompletionsHandler(BaseHTTPRequestHandler):
    """HTTP glue for `CompletionsApp` (the app is `self.server.app`)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: one line per request would drown a collect run's output."""

    def _send(self, code: int, payload: Any, content_type: str = "application/json") -> None:
        """`payload` as JSON, or as it is (a str) for another content type."""
        data = (json.dumps(payload) if content_type == "application/json" else payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        """`/v1/models` and `/health`."""
        app = self.server.app  # type: ignore[attr-defined]
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": app.cards()})
        elif self.path.rstrip("/") == "/health":
            self._send(200, "ok")
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:  # noqa: N802 - the base class's name
        """`/v1/completions`, `/v1/load_lora_adapter`, `/v1/unload_lora_adapter`."""
        app = self.server.app  # type: ignore[attr-defined]
        route = {"/v1/completions": app.complete, "/v1/load_lora_adapter": app.load,
                 "/v1/unload_lora_adapter": app.unload}.get(self.path.rstrip("/"))
        if route is None:
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
            answer = route(body)
        except NotFound as exc:
            self._send(404, {"error": {"message": str(exc), "type": "NotFoundError", "code": 404}})
        except (BadRequest, json.JSONDecodeError, TypeError, ValueError) as exc:
            self._send(400, {"error": {"message": str(exc), "type": "BadRequestError", "code": 400}})
        except Exception as exc:  # noqa: BLE001 - a failed generate: the client may retry
            self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}", "type": "InternalServerError"}})
        else:
            # a load's answer is a plain-text line, as vLLM's
            self._send(200, answer, "text/plain; charset=utf-8" if isinstance(answer, str) else "application/json")


def make_server(policy: HFPolicy, port: int = 0, *, name: str | None = None,
                handler: type[CompletionsHandler] = CompletionsHandler, batch_calls: bool = True,
                load_policy: Callable[[str], HFPolicy] | None = None) -> ThreadingHTTPServer:
    """A completions server for `policy` on 127.0.0.1:`port` (0: a free port; see
    `server.server_address`), not yet serving (`serve_forever`). `batch_calls=False` answers one
    call at a time per model: slower, but a call's replies do not depend on which calls came with
    it. `load_policy(folder)` builds a model `/v1/load_lora_adapter` loads (default: an HFPolicy
    with `policy`'s device, batch size, reply length and seed)."""
    if load_policy is None:
        def load_policy(path: str) -> HFPolicy:
            return HFPolicy(path, device=str(policy.model.device), batch_size=policy.batch_size,
                            max_new_tokens=policy.max_new_tokens, seed=policy.seed)
    server = ThreadingHTTPServer((HOST, port), handler)
    server.daemon_threads = True
    server.app = CompletionsApp(policy, name, batch_calls, load_policy)  # type: ignore[attr-defined]
    return server
