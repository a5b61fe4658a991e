"""A policy by name on tasks, its episodes stored as one run: `run_policy`, which `core.stages`
offers as the collection stage and under its demonstrations, and `core.evaluate` runs greedily.
Below both, so that the stages can offer `evaluate` too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from core.agents.base import Sampling
from core.agents.registry import make_policy
from core.agents.server_models import serving
from core.collect import EpisodeTick, collect
from core.env_slots import Pool

if TYPE_CHECKING:
    from core.store import Store


def run_policy(store: Store, env: str, policy: str, task_ids: list[str],
               schedule: Sequence[Sampling] = (Sampling(),), *, label: str | None = None, seed: int = 0,
               max_steps: int | None = None, batch_size: int | None = None, pool: Pool = Pool(),
               source: str = "collect", progress: bool | EpisodeTick = False, server: str | None = None,
               load: bool = False) -> str:
    """Run the policy called `policy` (`core.agents.registry`) on `task_ids` with every setting of
    `schedule`, store the episodes (as `source`) under the model name `label` (default: the
    policy's name) and return the run id. `batch_size`: episodes in lockstep (default:
    collect's), which is also a model's generation batch (default 16); `pool`: where the envs run;
    `server`: completions servers that run the model (`core.agents.server`); with `load`, the
    model is first loaded onto those that do not serve it (`core.agents.server_models`), and a
    scripted policy ignores them (it runs here)."""
    agent = make_policy(policy, env, seed=seed, batch_size=batch_size or 16, store=store,
                        server=serving(server, policy, store) if load else server)
    try:
        return collect(store, env, agent, task_ids, schedule=schedule, max_steps=max_steps, pool=pool,
                       batch_size=batch_size, source=source, model=label or agent.name, seed=seed,
                       progress=progress).run_id
    finally:
        agent.close()
