"""`ServerPolicy`: a model served by OpenAI-compatible completions servers (vLLM, SGLang,
`w2stree serve`) as a batched ReAct policy.

* Prompts: built here, exactly as the in-process `HFPolicy` builds them (the shared
  `TokenizedPolicy`: chat template, truncation, the one-decision view), and sent to
  `POST /v1/completions` as token-id prompts; only the tokenizer and config are loaded, no weights.
* Decoding: every field is set per row (`fields`): max_tokens, temperature, top_p, top_k = -1
  (off), min_p 0, repetition/frequency/presence penalties neutral, the row's seed (`row_seed`, the
  one the in-process sampler uses), the model's stop token ids and a stop at a hallucinated
  `Observation:` line, so a server decodes what the in-process policy decodes (a vLLM server
  started with `--generation-config vllm`, else it applies the model's own generation config).
* Calls: rows with equal fields share one call (greedy rows all ignore the seed, so they are sent
  with seed 0 and share one; sampled rows have their own seed, one call each), up to
  `prompts_per_call` prompts; a batch's calls go out concurrently from a thread pool.
* Several servers (`URL[,URL...]`): only those that serve the model get calls (`_serving`); an
  episode (env, task, episode seed, setting) sticks to one server, so its growing prompt hits that
  server's prefix cache; a new episode goes to the server with the fewest requests in flight.
* Faults: a connection error, a timeout (`timeout` seconds without a byte), HTTP 5xx/408/429 or a
  malformed answer is retried `retries` times with exponential backoff (`backoff`, doubled each
  time); then the server is given up and its rows (and episodes) move to the others. Nothing is
  lost or answered twice: a row's reply comes from exactly one successful call. Other HTTP 4xx
  (a bad request will not get better elsewhere) and every server given up are one-line
  `UserError`s naming the server; an unreachable URL fails at construction (`GET /v1/models`).
* HTTP is the standard library's `urllib`: no new dependency for an optional feature.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from core.agents.base import Request
from core.agents.tokenized import OBSERVATION_STOP, TokenizedPolicy, parse_reply
from core.errors import UserError
from core.models.loading import load_tokenizer, model_name, resolve_model

_STICKY_CAP = 1 << 16  # episodes remembered per policy (oldest forgotten first)
_RETRYABLE_HTTP = (408, 429)


class _Retryable(Exception):
    """A failure another try (or another server) may not have."""


@dataclass
class Server:
    """One completions server: its URL as given, its API base and the served model's id."""

    url: str
    base: str
    model: str = ""
    in_flight: int = 0
    down: str | None = None  # why it was given up


def server_urls(spec: str | list[str]) -> list[str]:
    """`URL[,URL...]` -> the URLs (each http(s)://host:port, optionally ending in /v1)."""
    urls = [u.strip().rstrip("/") for u in (spec.split(",") if isinstance(spec, str) else spec) if u.strip()]
    if not urls:
        raise UserError("--server: no URL given; pass e.g. --server http://127.0.0.1:8000")
    for u in urls:
        if not u.startswith(("http://", "https://")):
            raise UserError(f"--server {u!r} is not an http(s) URL; pass e.g. http://127.0.0.1:8000")
    return urls


def _request_json(url: str, body: dict[str, Any] | None, timeout: float) -> Any:
    """GET (body None) or POST JSON; the decoded answer. Retryable failures raise `_Retryable`,
    other HTTP errors `urllib.error.HTTPError` (its body read into `.detail`)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        exc.detail = exc.read().decode(errors="replace")[:300]  # type: ignore[attr-defined]
        if exc.code >= 500 or exc.code in _RETRYABLE_HTTP:
            raise _Retryable(f"HTTP {exc.code}: {exc.detail}") from None
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _Retryable(f"{type(exc).__name__}: {reason}") from None


class ServerPolicy(TokenizedPolicy):
    """A model behind completions servers (module docstring). `model` names the model whose
    tokenizer builds the prompts (a registered name, folder or hub id); `servers` is
    `URL[,URL...]`, or URL -> the model id to call it under there (`core.agents.server_models`)."""

    def __init__(self, model: str, servers: str | list[str] | dict[str, str], *, seed: int = 0, store=None,
                 adapter: str | None = None, max_new_tokens: int | None = None, max_context: int | None = None,
                 timeout: float = 600.0, retries: int = 3, backoff: float = 0.5, prompts_per_call: int = 64,
                 threads: int = 64) -> None:
        if prompts_per_call < 1 or threads < 1 or retries < 0 or timeout <= 0:
            raise UserError("ServerPolicy: prompts_per_call, threads and timeout must be positive, retries >= 0")
        self.name = model_name(model, store)
        given = servers if isinstance(servers, dict) else {}
        self.servers = [Server(u, u if u.endswith("/v1") else u + "/v1", given.get(u, "")) for u in server_urls(
            list(servers) if isinstance(servers, dict) else servers)]
        tokenizer, config, eos = load_tokenizer(model, adapter=adapter, store=store)
        self._init_tokens("ServerPolicy", tokenizer, config, eos, max_new_tokens=max_new_tokens,
                          max_context=max_context, seed=seed)
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.prompts_per_call = prompts_per_call
        self.servers = self._serving({model, self.name, resolve_model(adapter or model, store)})
        self._lock = threading.Lock()
        self._sticky: OrderedDict[tuple, Server] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="w2stree-server")

    def _listing(self, server: Server) -> list[str]:
        """The model ids `server` lists (`GET /v1/models`); an unreachable one is a UserError."""
        try:
            listing = _request_json(server.base + "/models", None, min(self.timeout, 30.0))
            return [m["id"] for m in listing["data"]]
        except (_Retryable, urllib.error.HTTPError, KeyError, TypeError) as exc:
            raise UserError(f"model server {server.url} is unreachable or not OpenAI-compatible ({exc}); "
                            "start it (`vllm serve MODEL --generation-config vllm` or `w2stree serve --model "
                            "MODEL`) or fix --server") from None

    def _serving(self, names: set[str]) -> list[Server]:
        """The servers that serve this model, each with the id it serves it under: given with the
        URL, else one of `names` it lists; only where no server lists any of them, a server's only
        model. Servers that do not serve it get no calls (a note says so); none: one UserError."""
        ids = {s.url: self._listing(s) for s in self.servers if not s.model}
        for s in self.servers:
            s.model = s.model or next((i for i in ids[s.url] if i in names), "")
        if not any(s.model for s in self.servers):
            for s in self.servers:
                s.model = ids[s.url][0] if len(ids[s.url]) == 1 else ""
        serving = [s for s in self.servers if s.model]
        if not serving:
            raise UserError("; ".join(f"model server {s.url} serves {', '.join(ids[s.url]) or 'no model'}"
                                      for s in self.servers)
                            + f", not {self.name!r}; serve it there (a LoRA adapter: `--lora-modules NAME=PATH` "
                              "under its registered name)")
        if len(serving) < len(self.servers):
            print(f"model servers {', '.join(s.url for s in self.servers if not s.model)} do not serve "
                  f"{self.name!r}; its calls go to {', '.join(s.url for s in serving)}", file=sys.stderr, flush=True)
        return serving

    # -- decoding fields ---------------------------------------------------------------------
    def fields(self, request: Request) -> dict[str, Any]:
        """Every decoding field of one row (module docstring); the seed is 0 for greedy rows."""
        s = request.sampling
        return {"max_tokens": self.max_new_tokens, "temperature": 0.0 if s.greedy else s.temperature,
                "top_p": 1.0 if s.greedy else s.top_p, "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0,
                "frequency_penalty": 0.0, "presence_penalty": 0.0, "n": 1,
                "seed": 0 if s.greedy else self.row_seed(request), "stop": [OBSERVATION_STOP],
                "stop_token_ids": list(self.stop_ids), "skip_special_tokens": True}

    # -- routing -----------------------------------------------------------------------------
    def _route(self, requests: list[Request], rows: list[int]) -> dict[int, Server]:
        """A server for each row: its episode's, else (a new episode, or its server given up) the
        live server with the fewest requests in flight, counting the rows routed so far."""
        live = [s for s in self.servers if s.down is None]
        if not live:
            raise UserError("every model server failed: " + "; ".join(f"{s.url}: {s.down}" for s in self.servers))
        with self._lock:
            return self._route_locked(requests, rows, live)

    def _route_locked(self, requests: list[Request], rows: list[int], live: list[Server]) -> dict[int, Server]:
        load = {id(s): s.in_flight for s in live}
        out: dict[int, Server] = {}
        fresh = []
        for i in rows:
            r = requests[i]
            key = (r.env, r.task_id, r.seed, r.sampling)
            s = self._sticky.get(key)
            if s is not None and s.down is None and r.history:
                out[i] = s
                load[id(s)] += 1
                self._sticky.move_to_end(key)
            else:
                fresh.append((i, key))
        for i, key in fresh:
            s = min(live, key=lambda x: load[id(x)])
            out[i] = self._sticky[key] = s
            load[id(s)] += 1
        while len(self._sticky) > _STICKY_CAP:
            self._sticky.popitem(last=False)
        return out

    # -- calls -------------------------------------------------------------------------------
    def _complete(self, server: Server, prompts: list[list[int]], fields: dict[str, Any]) -> list[str]:
        """One completions call with retries; the text of each prompt. Raises `_Retryable` once
        the retries are spent."""
        body = {"model": server.model, "prompt": prompts, **fields}
        with self._lock:
            server.in_flight += len(prompts)
        try:
            for attempt in range(self.retries + 1):
                if server.down is not None:
                    raise _Retryable(server.down)
                try:
                    answer = _request_json(server.base + "/completions", body, self.timeout)
                    choices = sorted(answer["choices"], key=lambda c: c.get("index", 0))
                    if len(choices) != len(prompts):
                        raise _Retryable(f"{len(choices)} choices for {len(prompts)} prompts")
                    return [c["text"] for c in choices]
                except urllib.error.HTTPError as exc:
                    raise UserError(f"model server {server.url} refused a request: HTTP {exc.code} "
                                    f"{getattr(exc, 'detail', '')}".strip()) from None
                except (_Retryable, KeyError, TypeError) as exc:
                    last = exc if isinstance(exc, _Retryable) else _Retryable(f"malformed answer ({exc})")
                    if attempt < self.retries:
                        time.sleep(self.backoff * 2 ** attempt)
            raise last
        finally:
            with self._lock:
                server.in_flight -= len(prompts)

    def act(self, requests: list[Request]) -> list[str]:
        """One reply per request: rows routed to servers, calls sent concurrently; the rows of a
        server given up are routed again (module docstring)."""
        viewed = [self.view(r) for r in requests]
        prompts = [self.prompt_ids(r) for r in viewed]
        fields = [self.fields(r) for r in viewed]
        replies: list[str | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        while pending:
            route = self._route(requests, pending)
            calls: dict[tuple, list[int]] = {}
            for i in pending:
                calls.setdefault((id(route[i]), json.dumps(fields[i], sort_keys=True)), []).append(i)
            jobs = []
            for members in calls.values():
                for start in range(0, len(members), self.prompts_per_call):
                    chunk = members[start:start + self.prompts_per_call]
                    server = route[chunk[0]]
                    jobs.append((server, chunk, self._pool.submit(
                        self._complete, server, [prompts[i] for i in chunk], fields[chunk[0]])))
            pending = []
            for server, chunk, future in jobs:
                try:
                    texts = future.result()
                except _Retryable as exc:
                    if server.down is None:
                        server.down = str(exc)
                        print(f"model server {server.url} given up ({exc}); its episodes move to the others",
                              file=sys.stderr, flush=True)
                    pending.extend(chunk)
                    continue
                for i, text in zip(chunk, texts):
                    replies[i] = parse_reply(text)
            pending.sort()
        return [r or "" for r in replies]

    def run_settings(self) -> dict[str, Any]:
        """The servers this policy calls: {"servers": {URL: the model id it is called under there}}."""
        return {"servers": {s.url: s.model for s in self.servers}}

    def close(self) -> None:
        """Stop the call threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
