"""Loading a model onto running completions servers before its rollouts go there: `ensure_served`.

The pipeline trains its models as it runs, so a server started before them cannot list them. For
each server (`URL[,URL...]`):

* `GET /v1/models` lists `name`: it serves it already.
* Else it is asked to load it: `POST /v1/load_lora_adapter {"lora_name": name, "lora_path": path}`,
  vLLM's runtime LoRA endpoint (vLLM registers it only when started with `--enable-lora
  --max-lora-rank N` and the environment variable VLLM_ALLOW_RUNTIME_LORA_UPDATING=True; it loads
  PEFT adapters, not full models) and `w2stree serve`'s (adapters and full model folders). A 404
  there (no such route) tries SGLang's `POST /load_lora_adapter` with the same body (SGLang started
  with `--enable-lora`); SGLang's `/v1/models` lists only its base model, and an adapter is called
  as `BASE:NAME` in the `model` field, so that is the id used for it.
* An answer that the name is loaded already (two units loading one model at once) counts as served.
* A server that cannot load it (unreachable, no runtime loading, a path it cannot read, a full
  model on vLLM) is skipped; no server left is one `UserError` naming the model, its path, every
  server's reason and the fixes.

`path` is read by the server, not here: it must be visible to it (the same machine or a shared
disk, at the same path). `served_ids` also returns the model id each server answers to;
`serving` is the pipeline's call: a model is loaded under a name unique to its weights, so a
server still up from an earlier run never answers with the earlier weights of a model retrained
under the same registered name; a scripted policy runs in process.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from core.agents.registry import SCRIPTED
from core.agents.server import server_urls
from core.errors import UserError
from core.models.loading import model_name, resolve_model
from core.reuse import content_digest

if TYPE_CHECKING:
    from core.store import Store

LOAD_TIMEOUT = 600.0  # seconds a server may take to load a model (a large adapter from a slow disk)


class _Refused(Exception):
    """Why one server does not serve the model."""


def _call(url: str, body: dict | None, timeout: float) -> tuple[int, str]:
    """(HTTP status, body text) of a GET (body None) or a JSON POST; `_Refused` when unreachable.
    An error status is returned, not raised: vLLM answers a load with plain text, not JSON."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        raise _Refused(f"unreachable ({getattr(exc, 'reason', None) or exc})") from None


def _detail(text: str) -> str:
    """The message of an error body (vLLM's `{"error": {"message"}}` or older `{"message"}`,
    SGLang's `{"error_message"}`, FastAPI's `{"detail"}`), else the text; one line, cut short."""
    try:
        body = json.loads(text)
    except ValueError:
        body = text
    if isinstance(body, dict):
        err = body.get("error")
        body = (err.get("message") if isinstance(err, dict) else err) or body.get("message") \
            or body.get("error_message") or body.get("detail") or body
    return " ".join(str(body).split())[:200]


def _listed(api: str, timeout: float) -> list[dict]:
    """The model cards of `GET {api}/models`."""
    code, text = _call(api + "/models", None, timeout)
    try:
        cards = json.loads(text)["data"] if code == 200 else None
        if isinstance(cards, list) and all(isinstance(c, dict) and "id" in c for c in cards):
            return cards
    except (ValueError, KeyError, TypeError):
        pass
    raise _Refused(f"GET /v1/models answered HTTP {code} {_detail(text)}; not an OpenAI-compatible server")


def _served_id(url: str, name: str, path: str, timeout: float) -> str:
    """The model id under which the server at `url` serves `name` once asked to load it from
    `path` (module docstring); `_Refused` with the reason when it does not."""
    api = url if url.endswith("/v1") else url + "/v1"
    cards = _listed(api, min(timeout, 30.0))
    if any(c["id"] == name for c in cards):
        return name
    body = {"lora_name": name, "lora_path": path}
    code, text = _call(api + "/load_lora_adapter", body, timeout)
    if code == 404:  # no such route (vLLM without runtime LoRA updating, SGLang), or no adapter at the path
        first = f"/v1/load_lora_adapter: HTTP 404 {_detail(text)}"
        code, text = _call(api[: -len("/v1")] + "/load_lora_adapter", body, timeout)
        if code == 404:
            raise _Refused(f"{first}; /load_lora_adapter: HTTP 404 {_detail(text)}")
    if code != 200 and "already" not in _detail(text).lower():
        raise _Refused(f"loading answered HTTP {code} {_detail(text)}")
    cards = _listed(api, min(timeout, 30.0))
    if any(c["id"] == name for c in cards):
        return name
    bases = [c["id"] for c in cards if not c.get("parent")]
    if len(bases) != 1:
        raise _Refused(f"loaded {name!r} but lists {', '.join(c['id'] for c in cards)}, not it")
    return f"{bases[0]}:{name}"  # SGLang: an adapter is named after its base in the `model` field


def served_ids(servers: str | list[str], name: str, path: str, *, timeout: float = LOAD_TIMEOUT) -> dict[str, str]:
    """URL -> the model id it serves `name` under, for each server (`URL[,URL...]`) that serves it
    or loads it from `path` now (module docstring); servers that cannot are left out. No server
    left: one-line `UserError` naming the model, its path, each server's reason and the fixes."""
    out: dict[str, str] = {}
    why: list[str] = []
    for url in server_urls(servers):
        try:
            out[url] = _served_id(url, name, str(path), timeout)
        except _Refused as exc:
            why.append(f"{url}: {exc}")
    if out and why:
        print(f"w2stree: {name!r} goes to {', '.join(out)} only: " + "; ".join(why), file=sys.stderr, flush=True)
    if not out:
        raise UserError(
            f"no model server serves {name!r} or could load it from {path} ({'; '.join(why)}); start vLLM with "
            "--enable-lora --max-lora-rank N and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and train with LoRA "
            "unmerged (training config merge_lora false: vLLM loads adapters, not full models), or use "
            f"`w2stree serve` (loads both), or serve the model yourself under the name {name!r}; the path "
            "must be readable by the server (the same machine or a shared disk)")
    return out


def check_reachable(servers: str | list[str], timeout: float = 30.0) -> None:
    """Fail early, in one line naming every URL and why, when no server of `servers` answers
    `GET /v1/models` (a pipeline checks before hours of training, not at its first rollout)."""
    why = []
    for url in server_urls(servers):
        try:
            _listed(url if url.endswith("/v1") else url + "/v1", timeout)
            return
        except _Refused as exc:
            why.append(f"{url}: {exc}")
    raise UserError(f"no model server answers ({'; '.join(why)}); start one (`vllm serve`, SGLang or "
                    "`w2stree serve`) or fix --server")


def ensure_served(servers: str | list[str], name: str, path: str, *, timeout: float = LOAD_TIMEOUT) -> list[str]:
    """The URLs of `servers` that serve `name` afterwards, each asked to load it from `path` where
    it does not list it yet (`served_ids`, module docstring)."""
    return list(served_ids(servers, name, path, timeout=timeout))


def serving(servers: str | list[str] | None, policy: str, store: Store | None = None) -> dict[str, str] | None:
    """The servers (URL -> model id) a rollout of `policy` goes to: None without servers or for a
    scripted policy (it runs in process); for a model (a registered name or folder), the servers
    that serve it after it is loaded there under `<name>-<first 12 hex digits of its weights'
    digest>` (module docstring); a hub id is taken as the servers serve it."""
    if not servers or policy in SCRIPTED:
        return None
    path = resolve_model(policy, store)
    if not Path(path).is_dir():
        return served_ids(servers, path, path)
    return served_ids(servers, f"{model_name(policy, store)}-{content_digest(path)[:12]}", path)
