"""Replay a tree node's action prefix in an env: the start of every continuation from a node.

`replay_steps` resets an env to a stored trajectory's task and plays its first `depth` actions,
checking every observation against the stored one (`ReplayMismatch` names the first that
differs: the env is not deterministic there); `replay_prefix` is the same for a node to continue
from. `explore` runs it in each env slot (`core.env_slots`, op "replay", so also in worker
processes and Ray actors), the oracle and `play` on their own env. It imports no store: spawned
env workers import it.
"""

from __future__ import annotations

from core.envs.base import Env, StepResult
from core.errors import UserError
from core.trajectory import Trajectory


class ReplayMismatch(UserError):
    """Replaying a node's prefix gave another observation than the stored one."""


def replay_steps(env: Env, traj: Trajectory, depth: int, node: int) -> tuple[str, str, StepResult | None]:
    """Reset `env` to the trajectory's task and play its first `depth` actions, checking every
    observation against the stored one. Returns (first observation, instruction, the last step's
    result: None at the root). ReplayMismatch names the first step that differs."""
    obs0, instruction = env.reset(traj.task_id)
    stored0 = (traj.meta or {}).get("initial_observation")
    if stored0 is not None and not env.same_observation(stored0, obs0):
        raise ReplayMismatch(f"replaying node {node}: the first observation of task {traj.task_id} differs from "
                             f"the stored one (trajectory {traj.traj_id}); the env is not deterministic there")
    res = None
    for i, step in enumerate(traj.steps[:depth]):
        res = env.step(step.action)
        if not env.same_observation(step.observation, res.observation):
            raise ReplayMismatch(
                f"replaying node {node}: step {i + 1} ({step.action!r}) answered another observation than "
                f"the stored trajectory {traj.traj_id}; the env is not deterministic there")
    return obs0, instruction, res


def replay_prefix(env: Env, traj: Trajectory, depth: int, node: int) -> tuple[str, str, list[str] | None]:
    """`replay_steps`, for a node to continue from: returns (first observation, instruction, valid
    actions now); UserError when the episode is over at the node."""
    obs0, instruction, last = replay_steps(env, traj, depth, node)
    if last is not None and last.done:
        raise UserError(f"node {node} ends its episode (step {depth}); pick a node above it to explore from")
    return obs0, instruction, env.valid_actions()
