"""Exports: preference pairs, MCTS best paths, trees and trajectories as files other tools read.

* Pairs → ETO preference JSON (`[{id, prompt, chosen, rejected}]`, each a list of
  `{"from": "human"|"gpt", "value"}` turns) or TRL conversational DPO rows (JSONL of
  `{"prompt", "chosen", "rejected"}` message lists). Both prompts start with the environment's
  prefix (role prompt, "OK", one-shot example) from `core.agents.prompt.env_prefix`.
* MCTS best paths (each ONE real trajectory, `best_path_trajectory`) → ETO-style `[{id, prompt, conversations}]` (`prompt` = prefix + task message,
  `conversations` = the whole conversation, so the file is also a valid ETO SFT file) or TRL
  `{"messages": [...]}` rows.
* Trees → `{"env", "task_id", "nodes": [...], "best_path": [...]}`.
* Trajectories → the project JSONL (core.formats.jsonl).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from core.agents.prompt import Message, env_prefix, step_messages, task_message
from core.envs.alfworld_data import relative_game
from core.errors import UserError
from core.trajectory import Pair, Trajectory
from core.tree_data import Tree

TREE_NODE_FIELDS = ("depth", "action", "visits", "value_sum", "successes", "failures",
                    "mcts_visits", "mcts_value_sum")
_FROM = {"user": "human", "assistant": "gpt", "system": "human"}


def to_eto_turns(messages: Iterable[Message]) -> list[dict[str, str]]:
    """Chat messages → ETO `{"from", "value"}` turns."""
    return [{"from": _FROM[m["role"]], "value": m["content"]} for m in messages]


def best_path_trajectory(g: Tree) -> str:
    """The id of the real trajectory that stands for a tree's MCTS best path: of the trajectories
    that follow the whole path (through its last node), the one with the highest final reward,
    ties to the earliest inserted."""
    path = [int(n) for n in g.best_path]
    if len(path) < 2:
        raise UserError(f"tree {g.tree_id!r} has no best path; run `w2stree mcts` first")
    return g.pick_trajectory(path[-1], g.trajectory_ends())


def best_path_messages(g: Tree, trajectories: Mapping[str, Trajectory],
                       final_observation: bool = False) -> list[Message]:
    """The MCTS best path of a tree as chat messages, WITHOUT the env prefix: ONE real trajectory
    (`best_path_trajectory`, looked up in `trajectories` by id) as the task message, then its
    assistant `Thought/Action` turns and the observations that followed them (the last one only
    with `final_observation`, so SFT rows end on an assistant turn)."""
    traj_id = best_path_trajectory(g)
    t = trajectories.get(traj_id)
    if t is None:
        raise UserError(f"trajectory {traj_id} of tree {g.tree_id!r} is not stored; "
                        "rebuild the tree (`w2stree tree`) and run `w2stree mcts` again")
    task = task_message(t.instruction, str((t.meta or {}).get("initial_observation", "")))
    return [{"role": "user", "content": task}, *step_messages(t.steps, final_observation=final_observation)]


def _prefixes() -> Callable[[str], list[Message]]:
    """env_prefix, computed once per environment within one export."""
    cache: dict[str, list[Message]] = {}

    def get(env: str) -> list[Message]:
        if env not in cache:
            cache[env] = env_prefix(env)
        return list(cache[env])
    return get


def pairs_eto(pairs: Iterable[Pair]) -> list[dict[str, Any]]:
    """Pairs as ETO preference records `{id, prompt, chosen, rejected}` (prefix in the prompt)."""
    prefix = _prefixes()
    return [{"id": p.pair_id, "prompt": to_eto_turns(prefix(p.env) + p.prompt),
             "chosen": to_eto_turns(p.chosen), "rejected": to_eto_turns(p.rejected)} for p in pairs]


def pairs_trl(pairs: Iterable[Pair]) -> list[dict[str, Any]]:
    """Pairs as TRL conversational preference rows `{prompt, chosen, rejected}` (prefix in the prompt)."""
    prefix = _prefixes()
    return [{"prompt": prefix(p.env) + p.prompt, "chosen": list(p.chosen), "rejected": list(p.rejected)}
            for p in pairs]


def best_paths_eto(trees: Iterable[Tree], trajectories: Mapping[str, Trajectory]) -> list[dict[str, Any]]:
    """Best paths as ETO SFT-style records `{id, prompt, conversations}` (`trajectories`: by id,
    holding every tree's `best_path_trajectory`)."""
    prefix = _prefixes()
    out = []
    for g in trees:
        head = prefix(g.env)
        turns = to_eto_turns(head + best_path_messages(g, trajectories, final_observation=True))
        rec = {"id": g.tree_id, "prompt": turns[:len(head) + 1], "conversations": turns}
        if g.env == "alfworld":  # ETO's ALFWorld records name their game
            rec["game_file"] = relative_game(g.task_id)
        out.append(rec)
    return out


def best_paths_trl(trees: Iterable[Tree], trajectories: Mapping[str, Trajectory]) -> list[dict[str, Any]]:
    """Best paths as TRL conversational SFT rows `{"messages": [...]}` (prefix included)."""
    prefix = _prefixes()
    return [{"messages": prefix(g.env) + best_path_messages(g, trajectories)} for g in trees]


def tree_json(g: Tree) -> dict[str, Any]:
    """One tree as `{"env", "task_id", "nodes": [{"id", "parent", ...stats}], "best_path"}`."""
    cols = {k: getattr(g, k).tolist() for k in TREE_NODE_FIELDS}
    nodes = [{"id": n, "parent": p if p >= 0 else None, **{k: cols[k][n] for k in TREE_NODE_FIELDS}}
             for n, p in enumerate(g.parent.tolist())]
    return {"env": g.env, "task_id": g.task_id, "nodes": nodes, "best_path": [int(x) for x in g.best_path]}
