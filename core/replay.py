"""The replay guarantee: every stored trajectory, replayed action by action in a fresh episode of
the same task, reaches the stored final reward (and the stored per-step `score` where there is one).

Each trajectory is replayed in an env built with the kwargs it was collected with
(`meta["env_kwargs"]`, defaults for imported ones). Trajectories whose env is not installed,
cannot be built here, or does not know the task are skipped with the reason, never a crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from core.envs.base import Env, UnknownEnvError, list_envs, make_env, parse_env_name
from core.errors import UserError
from core.store import Store
from core.trajectory import Trajectory


@dataclass
class Mismatch:
    """One disagreement between a stored trajectory and its replay."""

    traj_id: str
    env: str
    task_id: str
    step: int  # index of the step where it shows (the last step for the final reward)
    field: str  # reward / score / done
    expected: Any
    got: Any


@dataclass
class ReplayReport:
    """What `replay` checked, skipped and found."""

    checked: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (traj_id, reason)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def replay(store: Store, env: str | None = None, limit: int | None = None,
           tolerance: float = 1e-6) -> ReplayReport:
    """Replay stored trajectories (all, or those of `env`; at most `limit`) and report mismatches."""
    report = ReplayReport()
    envs: dict[tuple[str, str], Env | str] = {}  # (env, kwargs) -> env, or why it cannot be built
    known = set(list_envs())
    try:
        for traj in store.trajectories(env=env, limit=limit):
            if parse_env_name(traj.env)[0] not in known:
                report.skipped.append((traj.traj_id, f"env {traj.env!r} is not available here "
                                                     f"(known: {', '.join(sorted(known))})"))
                continue
            kwargs = traj.meta.get("env_kwargs") or {}
            key = (traj.env, json.dumps(kwargs, sort_keys=True))
            if key not in envs:
                try:
                    envs[key] = make_env(traj.env, **kwargs)
                except Exception as exc:  # a missing package, data set or JVM: skip, say why
                    envs[key] = f"env {traj.env!r} cannot be built here: {exc}"
            built = envs[key]
            if isinstance(built, str):
                report.skipped.append((traj.traj_id, built))
                continue
            problems = _replay_one(built, traj, tolerance)
            if problems is None:
                report.skipped.append((traj.traj_id, f"env {traj.env!r} has no task {traj.task_id!r}"))
                continue
            report.checked += 1
            report.mismatches += problems
    finally:
        for built in envs.values():
            if not isinstance(built, str):
                built.close()
    return report


def _replay_one(env: Env, traj: Trajectory, tolerance: float) -> list[Mismatch] | None:
    """The mismatches of one trajectory, or None when the env does not know its task."""
    try:
        env.reset(traj.task_id)
    except (UnknownEnvError, UserError):
        return None
    out: list[Mismatch] = []

    def miss(step: int, what: str, expected: Any, got: Any) -> None:
        out.append(Mismatch(traj.traj_id, traj.env, traj.task_id, step, what, expected, got))

    reward, done = 0.0, False
    for i, step in enumerate(traj.steps):
        if done:
            miss(i, "done", "episode running", f"episode ended after step {i - 1}")
            return out
        res = env.step(step.action)
        reward, done = res.reward, res.done
        if step.score is not None:
            got = res.info.get("score")
            if got is None or abs(float(got) - step.score) > tolerance:
                miss(i, "score", step.score, got)
    if abs(reward - traj.reward) > tolerance:
        miss(max(0, len(traj.steps) - 1), "reward", traj.reward, reward)
    return out
