"""Env slots opened in a pool (`core.env_slots.Pool`): in this process, in worker processes, or in
Ray actors (`core.ray_slots`, imported only when asked for: Ray is an optional extra)."""

from __future__ import annotations

from typing import Any

from core.env_slots import EnvSlots, LocalSlots, Pool, ProcessSlots, default_recycle
from core.errors import UserError


def open_slots(env_name: str, env_kwargs: dict[str, Any], pool: Pool | int = 1) -> EnvSlots:
    """Env slots of `env_name` in `pool` (a worker count: in this process for 1, else in that
    many worker processes). `--executor ray` without Ray installed is one UserError line."""
    pool = pool if isinstance(pool, Pool) else Pool(pool)
    pool.check()
    recycle = default_recycle(env_name) if pool.recycle is None else pool.recycle
    if pool.kind == "local":
        return LocalSlots(env_name, env_kwargs, recycle)
    if pool.kind == "process":
        return ProcessSlots(env_name, env_kwargs, pool.workers, recycle)
    try:
        from core.ray_slots import RaySlots  # ray: an optional extra, heavy to import
    except ModuleNotFoundError as exc:
        if exc.name != "ray":
            raise
        raise UserError("--executor ray needs Ray: pip install 'w2stree[ray]'") from None
    return RaySlots(env_name, env_kwargs, pool.workers, address=pool.ray_address, recycle=recycle)
