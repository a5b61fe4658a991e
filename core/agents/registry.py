"""The one place a policy is chosen by name (collect, evaluate, the pipeline and the dashboard).

Scripted policies by name (`SCRIPTED`): `expert` (the env's gold demonstration), `random`
(uniform over the valid actions) and `noisy-expert` (the expert with random steps mixed in: a
weak explorer that needs no training). Any other name is a model: a name registered in the store
(`w2stree models list`), a local folder or a Hugging Face hub id, run by `core.agents.hf.HFPolicy`,
or, with `server="URL[,URL...]"`, by `core.agents.server.ServerPolicy` on those completions servers.

To add a scripted policy: write a `core.agents.base.Policy` subclass and add a builder here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from core.agents.hf import HFPolicy
from core.agents.scripted import ExpertPolicy, NoisyExpertPolicy, RandomPolicy
from core.agents.server import ServerPolicy
from core.errors import UserError

if TYPE_CHECKING:
    from core.agents.base import Policy
    from core.store import Store


def _expert(env: str, seed: int, env_kwargs: dict[str, Any]) -> Policy:
    return ExpertPolicy(env, **env_kwargs)


def _random(env: str, seed: int, env_kwargs: dict[str, Any]) -> Policy:
    return RandomPolicy(seed)


def _noisy_expert(env: str, seed: int, env_kwargs: dict[str, Any]) -> Policy:
    return NoisyExpertPolicy(env, seed=seed, **env_kwargs)


#: Scripted policies: name -> builder(env, seed, env_kwargs).
SCRIPTED: dict[str, Callable[[str, int, dict[str, Any]], Policy]] = {
    "expert": _expert,
    "random": _random,
    "noisy-expert": _noisy_expert,
}


def make_policy(name: str, env: str, *, seed: int = 0, batch_size: int = 16, store: Store | None = None,
                env_kwargs: dict[str, Any] | None = None, server: str | dict[str, str] | None = None) -> Policy:
    """The policy called `name` for `env`: a scripted one (`SCRIPTED`), else a model run by
    HFPolicy, or by ServerPolicy on the completions servers `server` (`URL[,URL...]`, or URL ->
    the model id each serves it under: `core.agents.server_models.serving`). An unknown
    model is a one-line UserError naming the scripted choices."""
    name = (name or "").strip()
    if not name:
        raise UserError(f"no policy given; use one of {', '.join(SCRIPTED)} or a model name")
    if name in SCRIPTED:
        if server:
            raise UserError(f"--server serves a model; policy {name!r} is scripted (drop --server or pass a model)")
        return SCRIPTED[name](env, seed, dict(env_kwargs or {}))
    if server:
        return ServerPolicy(name, server, seed=seed, store=store)
    try:
        return HFPolicy(name, batch_size=batch_size, seed=seed, store=store)
    except UserError as exc:
        raise UserError(f"policy {name!r} is not one of {', '.join(SCRIPTED)} nor a usable model: {exc}") from None
