"""Evaluation: greedy episodes of one model on a split, stored as an eval run.

Every episode goes through `core.collect.collect` with `source="eval"` and `model=<label>`, so the
dashboard's Compare page can put the episodes of several models side by side; the returned
average reward and success rate are computed from exactly the episodes that were stored.
ScienceWorld's per-step 0-100 scores travel inside the stored steps (`Step.score`).

`model` is any policy name of `core.agents.registry`: a scripted one (`expert`, `random`,
`noisy-expert`) or a model (a registered name, a local folder or a hub id, run by HFPolicy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.agents.base import Sampling
from core.console import plural
from core.env_slots import Pool
from core.envs.base import Env, make_env, select_tasks
from core.policy_run import run_policy
from core.store import Store

if TYPE_CHECKING:
    from core.collect import EpisodeTick


@dataclass
class EvalResult:
    """The outcome of one evaluation run."""

    run_id: str
    model: str  # what was evaluated (name or path)
    label: str  # the name the episodes are stored under
    env: str
    split: str
    n_episodes: int
    avg_reward: float
    success_rate: float
    task_ids: list[str] = field(default_factory=list)

    def averages(self) -> dict[str, Any]:
        """What a results row takes from the run: label, avg_reward, success_rate, n_episodes, run_id."""
        return dict(label=self.label, avg_reward=self.avg_reward, success_rate=self.success_rate,
                    n_episodes=self.n_episodes, run_id=self.run_id)

    def summary(self) -> str:
        return (f"{self.label} on {self.env}/{self.split}: avg reward {self.avg_reward:.3f}, "
                f"success rate {self.success_rate:.3f} over {plural(self.n_episodes, 'episode')} "
                f"(run {self.run_id})")


#: Splits a model may be evaluated on without naming one: task ids are looked up here, in order.
HELD_OUT = ("test", "dev")


def _held_out_split(env: Env, task_ids: Sequence[str]) -> str:
    """The held-out split that holds every one of `task_ids` ("test" when none does:
    `select_tasks` then names the ids that are not there)."""
    wanted = set(task_ids)
    for split in HELD_OUT:
        if split in env.splits() and wanted <= {t.task_id for t in env.tasks(split)}:
            return split
    return "test"


def evaluate(store: Store, model: str, env: str, split: str | None = None, tasks: int | None = None,
             task_ids: Sequence[str] | None = None, *, max_steps: int | None = None,
             batch_size: int = 16, pool: Pool = Pool(), label: str | None = None,
             progress: bool | EpisodeTick = False, server: str | None = None, load: bool = False) -> EvalResult:
    """Run `model` greedily on the tasks of `split` (all, the first `tasks`, or `task_ids`),
    store every episode (source=eval, model=`label` or `model`) and return the averages.
    Without a split, `task_ids` must all be test tasks or all dev tasks (never train tasks);
    without either, the split is test. `server`: completions servers running the model (with
    `load`, loaded there first: `core.policy_run.run_policy`); `pool`: where the envs run
    (`core.env_slots.Pool`)."""
    name = label or model
    with make_env(env) as e:
        split = split or (_held_out_split(e, task_ids) if task_ids else "test")
        ids = select_tasks(e, split, tasks, task_ids)
    run_id = run_policy(store, env, model, ids, (Sampling(0.0, 1.0, "greedy"),), label=name, max_steps=max_steps,
                        batch_size=batch_size, pool=pool, source="eval", progress=progress, server=server,
                        load=load)
    # Recompute from the store: the numbers reported are those of the stored episodes.
    head = store.trajectory_index(run_id=run_id)
    n = len(head)
    return EvalResult(
        run_id=run_id, model=model, label=name, env=env, split=split, n_episodes=n,
        avg_reward=float(head["reward"].mean()) if n else 0.0,
        success_rate=float(head["success"].mean()) if n else 0.0, task_ids=ids,
    )
