"""`ServerPolicy`: a model served by OpenAI-compatible completions servers (vLLM, SGLang,
`w2stree serve`) as a ReAct policy whose episodes advance independently.

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
* Independent episodes (`independent`): `submit` sends one request on its own and returns its
  reply as a future, so the episode runner keeps many episodes in flight and steps each as soon
  as its own reply is in (`core.episodes`); a server batches concurrent calls itself (vLLM and
  SGLang continuously, `w2stree serve` every call waiting). `act` and `submit` are one code path
  (`_ask`): rows become futures that the call threads resolve.
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

import functools
import http.client
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
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


@dataclass(eq=False)
class _Row:
    """One request on its way: the prompt ids and decoding fields sent for it, `key` (the fields
    as JSON: rows with equal keys may share a call) and the future its reply resolves."""

    request: Request
    prompt: list[int]
    fields: dict[str, Any]
    key: str
    reply: Future


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

    independent = True

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
    def _route(self, requests: list[Request]) -> list[Server]:
        """A server for each request: its episode's, else (a new episode, or its server given up)
        the live server with the fewest requests in flight. Each row counts as in flight on its
        server from here until its call ends (`_landed`), so requests routed one at a time
        (`submit`) spread as a batch does."""
        live = [s for s in self.servers if s.down is None]
        if not live:
            raise UserError("every model server failed: " + "; ".join(f"{s.url}: {s.down}" for s in self.servers))
        with self._lock:
            out: list[Server | None] = [None] * len(requests)
            fresh = []
            for i, r in enumerate(requests):
                key = (r.env, r.task_id, r.seed, r.sampling)
                s = self._sticky.get(key)
                if s is not None and s.down is None and r.history:
                    out[i] = s
                    s.in_flight += 1
                    self._sticky.move_to_end(key)
                else:
                    fresh.append((i, key))
            for i, key in fresh:
                s = min(live, key=lambda x: x.in_flight)
                out[i] = self._sticky[key] = s
                s.in_flight += 1
            while len(self._sticky) > _STICKY_CAP:
                self._sticky.popitem(last=False)
        return out  # type: ignore[return-value]

    # -- calls -------------------------------------------------------------------------------
    def _complete(self, server: Server, prompts: list[list[int]], fields: dict[str, Any]) -> list[str]:
        """One completions call with retries; the text of each prompt. Raises `_Retryable` once
        the retries are spent."""
        body = {"model": server.model, "prompt": prompts, **fields}
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

    def _send(self, rows: list[_Row]) -> None:
        """Route `rows` and send them, rows with equal fields on one server sharing a call (up to
        `prompts_per_call`); each call's end resolves its rows (`_landed`). A failure to send
        (every server given up, the policy closed) is the unsent rows' answer."""
        try:
            route = self._route([r.request for r in rows])
        except UserError as exc:
            for r in rows:
                r.reply.set_exception(exc)
            return
        calls: dict[tuple, tuple[Server, list[_Row]]] = {}
        for server, r in zip(route, rows):
            calls.setdefault((id(server), r.key), (server, []))[1].append(r)
        for server, members in calls.values():
            for start in range(0, len(members), self.prompts_per_call):
                chunk = members[start:start + self.prompts_per_call]
                try:
                    job = self._pool.submit(self._complete, server, [r.prompt for r in chunk], chunk[0].fields)
                except RuntimeError as exc:  # the pool is shut down (`close`)
                    job = Future()
                    job.set_exception(exc)
                job.add_done_callback(functools.partial(self._landed, server, chunk))

    def _landed(self, server: Server, chunk: list[_Row], job: Future) -> None:
        """A call ended: its rows get their replies, or (its server given up) are sent again to
        the others; an error that another server would not fix (`UserError`) is their answer."""
        with self._lock:
            server.in_flight -= len(chunk)
        try:
            texts = job.result()
        except _Retryable as exc:
            if server.down is None:
                server.down = str(exc)
                print(f"model server {server.url} given up ({exc}); its episodes move to the others",
                      file=sys.stderr, flush=True)
            self._send(chunk)
            return
        except BaseException as exc:  # noqa: BLE001 - the caller gets it from its reply's future
            for r in chunk:
                r.reply.set_exception(exc)
            return
        for r, text in zip(chunk, texts):
            r.reply.set_result(parse_reply(text))

    def _ask(self, requests: list[Request]) -> list[Future[str]]:
        """The one way requests are answered (`act` and `submit`): each row's prompt is built here,
        in the caller's thread (the tokenizer is not shared between threads), and its reply
        arrives as a future that the call threads complete."""
        rows = []
        for r in requests:
            viewed = self.view(r)
            fields = self.fields(viewed)
            reply: Future[str] = Future()
            reply.set_running_or_notify_cancel()  # running from now on: a caller cannot cancel it
            rows.append(_Row(r, self.prompt_ids(viewed), fields, json.dumps(fields, sort_keys=True), reply))
        if rows:
            self._send(rows)
        return [r.reply for r in rows]

    def act(self, requests: list[Request]) -> list[str]:
        """One reply per request: rows routed to servers, calls sent concurrently; the rows of a
        server given up are routed again (module docstring)."""
        return [f.result() for f in self._ask(requests)]

    def submit(self, request: Request) -> Future[str]:
        """One reply to `request`, sent on its own (one call), routed and retried as in `act`."""
        return self._ask([request])[0]

    def run_settings(self) -> dict[str, Any]:
        """The servers this policy calls: {"servers": {URL: the model id it is called under there}}."""
        return {"servers": {s.url: s.model for s in self.servers}}

    def close(self) -> None:
        """Stop the call threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)
