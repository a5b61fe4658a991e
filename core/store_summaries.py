"""Store methods that summarise the tables: `w2stree stats`, the dashboard's overview, tree and
result pages, and the checks that explain why a store yields no pairs.

A mixin of `core.store.Store` (it uses `query`): use these methods through Store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from core.store import Store

# What produced a trajectory, as the dashboard groups them (in this order): evaluation episodes,
# the expert's demonstrations, and every other collected or imported trajectory.
SOURCES = ("expert demonstrations", "exploration", "evaluation")
_SOURCE = ("CASE WHEN source = 'eval' THEN 'evaluation' WHEN model = 'expert' THEN 'expert demonstrations' "
           "ELSE 'exploration' END")


def _filters(prefix: str, **filters: str | None) -> tuple[str, list[str]]:
    """`AND`-joined conditions (and parameters) of the filters that are not None ("TRUE" if none)."""
    given = [(col, val) for col, val in filters.items() if val is not None]
    cond = " AND ".join(f"{prefix}{col} = ?" for col, _ in given) or "TRUE"
    return cond, [val for _, val in given]


class Summaries:
    """Read-only summaries of the store (mixed into Store)."""

    def task_stats(self: Store, env: str | None = None, task_id: str | None = None) -> pd.DataFrame:
        """Per (env, task) of `env` / `task_id`: trajectories, success rate and mean reward (all
        but evaluation episodes, which `source_summary` gives per model), trees, tree nodes,
        branching nodes, pairs (a task with trees or pairs but no trajectories has NaN rates)."""
        cond, params = _filters("", env=env, task_id=task_id)
        return self.query(f"""
            WITH t AS (SELECT env, task_id, count(*) AS trajectories, avg(success::INT) AS success_rate,
                              avg(reward) AS mean_reward
                       FROM trajectories WHERE source <> 'eval' AND {cond} GROUP BY ALL),
                 tr AS (SELECT env, task_id, count(*) AS trees, sum(n_nodes)::BIGINT AS nodes,
                               sum(n_branching)::BIGINT AS branching
                        FROM trees WHERE {cond} GROUP BY ALL),
                 p AS (SELECT env, task_id, count(*) AS pairs FROM pairs WHERE {cond} GROUP BY ALL)
            SELECT env, task_id AS task, coalesce(t.trajectories, 0) AS trajectories, t.success_rate,
                   t.mean_reward, coalesce(tr.trees, 0) AS trees, coalesce(tr.nodes, 0) AS nodes,
                   coalesce(tr.branching, 0) AS branching,
                   coalesce(p.pairs, 0) AS pairs
            FROM t FULL JOIN tr USING (env, task_id) FULL JOIN p USING (env, task_id)
            ORDER BY env, task_id""", params * 3)

    def env_summary(self: Store) -> pd.DataFrame:
        """Per environment: tasks, trajectories (not evaluation), evaluation episodes, trees,
        nodes, pairs."""
        return self.query("""
            WITH envs AS (SELECT env FROM tasks UNION SELECT env FROM trajectories
                          UNION SELECT env FROM trees UNION SELECT env FROM pairs)
            SELECT e.env,
              (SELECT count(*) FROM tasks t WHERE t.env = e.env) AS tasks,
              (SELECT count(*) FROM trajectories t WHERE t.env = e.env AND t.source <> 'eval') AS trajectories,
              (SELECT count(*) FROM trajectories t WHERE t.env = e.env AND t.source = 'eval') AS eval_episodes,
              (SELECT count(*) FROM trees t WHERE t.env = e.env) AS trees,
              (SELECT coalesce(sum(n_nodes), 0)::BIGINT FROM trees t WHERE t.env = e.env) AS nodes,
              (SELECT count(*) FROM pairs p WHERE p.env = e.env) AS pairs
            FROM envs e ORDER BY e.env""")

    def source_summary(self: Store, env: str | None = None, task_id: str | None = None) -> pd.DataFrame:
        """Per env and source (one of SOURCES, in that order) of `env` / `task_id`, evaluation
        episodes also per model (`model` is '' for the other sources): episodes, successes,
        success_rate, mean_reward, steps, mean_length, and the invalid actions and steps of the
        episodes that recorded them (collected ones do, imported ones not). Evaluation is never
        one figure over several models."""
        cond, params = _filters("", env=env, task_id=task_id)
        return self.query(f"""
            SELECT * FROM (
              SELECT env, {_SOURCE} AS source, CASE WHEN source = 'eval' THEN model ELSE '' END AS model,
                     count(*) AS episodes, sum(CAST(success AS INTEGER)) AS successes,
                     avg(CAST(success AS DOUBLE)) AS success_rate, avg(reward) AS mean_reward,
                     sum(n_steps) AS steps, avg(n_steps) AS mean_length,
                     sum(TRY_CAST(json_extract_string(meta, '$.n_invalid') AS INTEGER)) AS invalid,
                     sum(n_steps) FILTER (WHERE json_extract_string(meta, '$.n_invalid') IS NOT NULL)
                         AS checked_steps
              FROM trajectories WHERE {cond} GROUP BY ALL)
            ORDER BY env, list_position({list(SOURCES)}, source), model""", params)

    def tree_roots(self: Store, env: str | None = None, task_id: str | None = None) -> pd.DataFrame:
        """The root node of every stored tree (of `env` / `task_id`): tree_id, env, task_id,
        visits (trajectories) and successes."""
        cond, params = _filters("t.", env=env, task_id=task_id)
        return self.query(f"""
            SELECT t.tree_id, t.env, t.task_id, n.visits, n.successes
            FROM trees t JOIN nodes n ON n.tree_id = t.tree_id AND n.node_id = 0
            WHERE {cond} ORDER BY t.env, t.task_id, t.tree_id""", params)

    def tree_outcomes(self: Store) -> pd.DataFrame:
        """Per env: trees, and trees holding both a success and a failure (pairs need both)."""
        return self.query("""
            SELECT t.env, count(*) AS trees,
                   count(*) FILTER (WHERE n.successes > 0 AND n.successes < n.visits) AS both_outcomes
            FROM trees t JOIN nodes n ON n.tree_id = t.tree_id AND n.node_id = 0
            GROUP BY t.env ORDER BY t.env""")

    def run_summary(self: Store) -> pd.DataFrame:
        """Collect / eval / import runs with their trajectory counts and success rates, newest first."""
        return self.query("""
            SELECT r.run_id, r.kind, r.env, r.policy, r.model, r.status, r.created_at,
                   count(t.traj_id) AS trajectories, avg(CAST(t.success AS DOUBLE)) AS success_rate
            FROM runs r LEFT JOIN trajectories t USING (run_id)
            GROUP BY ALL ORDER BY r.created_at DESC""")

    def eval_scores(self: Store, env: str) -> pd.DataFrame:
        """Per-step scores of the evaluation episodes of `env` (model, traj_id, idx, score)."""
        return self.query("""
            SELECT t.model, s.traj_id, s.idx, s.score
            FROM steps s JOIN trajectories t USING (traj_id)
            WHERE t.source = 'eval' AND t.env = ? ORDER BY s.traj_id, s.idx""", [env])

    def collected_models(self: Store, env: str | None = None, task_id: str | None = None,
                         successful: bool = False) -> list[str]:
        """The models whose trajectories (not evaluation episodes) of `env` / `task_id` are
        stored, sorted; with `successful` only those with a successful one."""
        cond, params = _filters("", env=env, task_id=task_id)
        extra = " AND success AND model <> ''" if successful else ""
        df = self.query(f"SELECT DISTINCT model FROM trajectories WHERE source <> 'eval' AND {cond}{extra} "
                        "ORDER BY model", params)
        return df["model"].tolist()

    # -- oracle (core.oracle_report) --------------------------------------------------------------
    def pair_truths(self: Store, env: str | None = None, task_id: str | None = None) -> pd.DataFrame:
        """Per stored pair: its granularity, margin and values, and the true value and expert steps
        of its chosen and rejected nodes (NULL where unknown, or for pairs not cut from a tree)."""
        cond, params = _filters("p.", env=env, task_id=task_id)
        return self.query(f"""
            SELECT p.pair_id, p.env, p.task_id, p.tree_id, p.node_id, p.granularity, p.margin,
                   p.chosen_value, p.rejected_value, p.chosen_node, p.rejected_node,
                   c.true_value AS chosen_true, c.true_steps AS chosen_steps,
                   r.true_value AS rejected_true, r.true_steps AS rejected_steps
            FROM pairs p
            LEFT JOIN nodes c ON c.tree_id = p.tree_id AND c.node_id = p.chosen_node
            LEFT JOIN nodes r ON r.tree_id = p.tree_id AND r.node_id = p.rejected_node
            WHERE {cond} ORDER BY p.env, p.task_id, p.node_id, p.pair_id""", params)

    def node_truths(self: Store, env: str | None = None, task_id: str | None = None) -> pd.DataFrame:
        """Per tree node: data visits and mean, MCTS visits and Q, true value and expert steps."""
        cond, params = _filters("t.", env=env, task_id=task_id)
        return self.query(f"""
            SELECT n.tree_id, n.node_id, n.depth, n.visits, n.value_sum / nullif(n.visits, 0) AS data_value,
                   n.mcts_visits, n.mcts_value_sum / nullif(n.mcts_visits, 0) AS mcts_value,
                   n.true_value, n.true_steps
            FROM nodes n JOIN trees t USING (tree_id)
            WHERE {cond} ORDER BY n.tree_id, n.node_id""", params)
