"""Training data: the data SPEC grammar, building chat rows from the store, and `datasets` glue.

Data SPEC grammar (what `--data` takes)::

    expert:ENV                 expert demonstrations of ENV (trajectories with model "expert")
    successes:ENV:MODEL        successful exploration trajectories of MODEL (W2S-SFT)
    best-paths:ENV             the MCTS best path (one real trajectory) of every stored tree of
                               ENV that holds a success (the `mcts` method)
    pairs:ENV:GRANULARITY      stored preference pairs: step, continuation or trajectory
    PATH.jsonl | PATH.json     a file of rows in TRL's conversational formats:
                               {"messages"} or {"prompt", "completion"} for SFT,
                               {"prompt", "chosen", "rejected"} for DPO

A store source may end in `?key=value&...` options: `tasks=N` (the first N task ids, sorted),
`split=S` (tasks of that split only), `min_margin=X` (pairs only), `hard_for=MODEL` (pairs only:
the pairs that model ranks wrong, `core.pair_ranking`).
Example: `expert:shop?split=train&tasks=100`. ENV may carry its parameters, and options then join
them with `&` (or after the granularity / model with `?`): `expert:shop?n_products=200&tasks=100`,
`pairs:shop?n_products=200&n_categories=10:step?min_margin=0.1`; a key that is not an option must be
a parameter of the env.

Every row is in the format the policy sees at inference: `core.agents.prompt.env_prefix(env)`
(system turn, "OK", the one-shot example) + the task message + `Thought/Action` assistant turns
and `Observation` user turns. SFT rows are `{"prompt", "completion"}` so the fixed prefix is never
trained on; the completion's observation turns are excluded by TRL's assistant-only loss.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from core.agents.prompt import Message, env_prefix, step_messages, task_message
from core.envs import UnknownEnvError, canonical_env_name, env_parameters
from core.errors import UserError
from core.formats.export import best_path_messages, best_path_trajectory
from core.pair_ranking import hard_pairs
from core.pairs import GRANULARITIES
from core.store import Store
from core.trajectory import Pair, Trajectory

if TYPE_CHECKING:
    from core.tree_data import Tree

log = logging.getLogger(__name__)

SOURCES = ("expert", "successes", "best-paths", "pairs")
OPTIONS = ("tasks", "split", "min_margin", "hard_for")
SPEC_HELP = __doc__.split("Data SPEC grammar (what `--data` takes)::\n\n", 1)[1].split("\nEvery row")[0]


@dataclass
class DataSpec:
    """A parsed data SPEC."""

    text: str
    source: str  # one of SOURCES, or "file"
    env: str = ""
    arg: str = ""  # the model (successes) or the granularity (pairs)
    path: Path | None = None
    options: dict[str, str] = field(default_factory=dict)


def parse_spec(text: str) -> DataSpec:
    """Parse a data SPEC; a UserError names what is wrong and shows the grammar."""
    text = (text or "").strip()
    head = text.partition("?")[0]
    if head.endswith((".jsonl", ".json")) or "/" in head:
        path = Path(head).expanduser()
        if not path.is_file():
            raise UserError(f"data file {head} does not exist; give an existing .jsonl/.json file")
        return DataSpec(text, "file", path=path.resolve())
    parts = text.split(":")
    source = parts[0]
    if source not in SOURCES:
        raise UserError(f"data spec {text!r} is not understood; use one of: "
                        "expert:ENV, successes:ENV:MODEL, best-paths:ENV, pairs:ENV:GRANULARITY, FILE.jsonl")
    want = 3 if source in ("successes", "pairs") else 2
    split = [re.split(r"[?&]", p) for p in parts]  # per part: its name, then its query items
    names = [s[0] for s in split]
    if len(parts) != want or not all(names):
        form = {"expert": "expert:ENV", "successes": "successes:ENV:MODEL", "best-paths": "best-paths:ENV",
                "pairs": "pairs:ENV:GRANULARITY"}[source]
        raise UserError(f"data spec {text!r} is malformed; write it as {form}")
    # the query items after ENV and after MODEL/GRANULARITY: spec options, the rest env parameters
    items = [(item.partition("=")[0], item) for s in split[1:] for item in s[1:] if item]
    options = dict(parse_qsl("&".join(i for k, i in items if k in OPTIONS), keep_blank_values=True))
    params = [(k, i) for k, i in items if k not in OPTIONS]
    allowed = env_parameters(names[1])
    unknown = next((k for k, _ in params if k not in allowed), None)
    if unknown is not None:
        raise UserError(f"data spec {text!r}: unknown option {unknown!r}; use "
                        f"{', '.join(OPTIONS)} or a parameter of env {names[1]!r} ({', '.join(allowed) or 'none'})")
    try:  # the store keeps every world under its canonical name (a short name like tinyshop too)
        env = canonical_env_name(names[1] + ("?" + "&".join(i for _, i in params) if params else ""))
    except UnknownEnvError as exc:
        raise UserError(f"data spec {text!r}: {exc}") from None
    for key, conv in (("tasks", int), ("min_margin", float)):
        if key in options:
            try:
                conv(options[key])
            except ValueError:
                raise UserError(f"data spec {text!r}: {key}={options[key]!r} is not a number") from None
    spec = DataSpec(text, source, env=env, arg=names[2] if want == 3 else "", options=options)
    if "hard_for" in options and source != "pairs":
        raise UserError(f"data spec {text!r}: hard_for filters pairs; use it with pairs:ENV:GRANULARITY")
    if source == "pairs" and spec.arg not in GRANULARITIES:
        raise UserError(f"data spec {text!r}: granularity {spec.arg!r} is unknown; use {', '.join(GRANULARITIES)}")
    return spec


# -- building rows --------------------------------------------------------------------------------

def build_rows(spec: DataSpec | str, store: Store | None = None) -> list[dict[str, Any]]:
    """The training rows a SPEC names (SFT rows or preference rows, see the module docstring),
    read from `store` (the caller's, from `--db`; only a file spec needs none)."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    if spec.source == "file":
        return read_rows(spec.path)
    if store is None:
        raise UserError(f"data spec {spec.text!r} reads a store, and none was given")
    if spec.source == "pairs":
        return _pair_rows(spec, store)
    if spec.source == "best-paths":
        return _best_path_rows(spec, store)
    model = "expert" if spec.source == "expert" else spec.arg
    trajs = [t for t in store.trajectories(env=spec.env, source="collect", model=model)
             if t.steps and (spec.source == "expert" or t.success)]
    keep = _task_filter(spec, store, {t.task_id for t in trajs})
    return sft_rows([t for t in trajs if t.task_id in keep])


def sft_rows(trajs: Iterable[Trajectory]) -> list[dict[str, Any]]:
    """One SFT row per trajectory with steps: the task message, then the episode's turns."""
    return [sft_row(t.env, task_message(t.instruction, t.meta.get("initial_observation", "")),
                    step_messages(t.steps, final_observation=False)) for t in trajs if t.steps]


def pair_rows(pairs: Sequence[Pair]) -> list[dict[str, Any]]:
    """One preference row per pair; pairs with an empty side (nothing left after the trailing
    observations are cut) are dropped."""
    rows = [preference_row(p.env, p.prompt, p.chosen, p.rejected) for p in pairs]
    return [r for r in rows if r["chosen"] and r["rejected"]]


def sft_row(env: str, task: str, turns: list[Message]) -> dict[str, Any]:
    """One SFT row: prompt = env prefix + task message; completion = the turns (up to the last
    assistant turn: trailing observations teach nothing)."""
    return {"prompt": [*env_prefix(env), {"role": "user", "content": task}],
            "completion": _strip_trailing_user(turns)}


def preference_row(env: str, prompt: list[Message], chosen: list[Message],
                   rejected: list[Message]) -> dict[str, Any]:
    """One preference row in TRL's conversational format (prompt ends with a user turn)."""
    return {"prompt": [*env_prefix(env), *prompt], "chosen": _strip_trailing_user(chosen),
            "rejected": _strip_trailing_user(rejected)}


def _strip_trailing_user(turns: list[Message]) -> list[Message]:
    out = list(turns)
    while out and out[-1]["role"] != "assistant":
        out.pop()
    return out


def _task_filter(spec: DataSpec, store: Store, task_ids: set[str]) -> set[str]:
    """The task ids kept by the `split` and `tasks` options."""
    if "split" in spec.options:
        in_split = set(store.tasks(env=spec.env, split=spec.options["split"])["task_id"])
        task_ids = task_ids & in_split
    if "tasks" in spec.options:
        task_ids = set(sorted(task_ids)[: int(spec.options["tasks"])])
    return task_ids


def _pair_rows(spec: DataSpec, store: Store) -> list[dict[str, Any]]:
    margin = float(spec.options["min_margin"]) if "min_margin" in spec.options else None
    pairs = store.pairs(env=spec.env, granularity=spec.arg, min_margin=margin)
    keep = _task_filter(spec, store, {p.task_id for p in pairs})
    pairs = [p for p in pairs if p.task_id in keep]
    if spec.options.get("hard_for"):
        pairs = hard_pairs(pairs, spec.options["hard_for"], store)
    return pair_rows(pairs)


def best_path_rows(graphs: Iterable[Tree], trajectories: Iterable[Trajectory] | Mapping[str, Trajectory]
                   ) -> tuple[list[dict[str, Any]], int]:
    """SFT rows of the `mcts` method: per tree, ONE real trajectory along its MCTS best path
    (`core.formats.export.best_path_trajectory`), looked up in `trajectories` (a mapping by id, or
    any iterable holding them). Trees without a best path are left out; trees that hold no
    success are skipped (a best path of failures teaches failing). Returns the rows and the
    number of trees skipped for holding no success."""
    by_id = trajectories if isinstance(trajectories, Mapping) else {t.traj_id: t for t in trajectories}
    rows, skipped = [], 0
    for g in graphs:
        if len(g.best_path) < 2:
            continue
        if not g.successes[0]:
            skipped += 1
            continue
        msgs = best_path_messages(g, by_id)
        rows.append(sft_row(g.env, msgs[0]["content"], msgs[1:]))
    return rows, skipped


def _best_path_rows(spec: DataSpec, store: Store) -> list[dict[str, Any]]:
    trees = store.trees(env=spec.env)
    keep = _task_filter(spec, store, set(trees["task_id"]))
    ids = [t for t, task, best in zip(trees["tree_id"], trees["task_id"], trees["best_path"], strict=True)
           if task in keep and best is not None and len(best) > 1]
    graphs = store.load_trees(tree_ids=ids)
    rows, skipped = best_path_rows(graphs, store.trajectories(traj_ids=[best_path_trajectory(g) for g in graphs]))
    if skipped:
        log.warning("best paths of %s: skipped %d of %d trees that hold no success", spec.env, skipped, len(graphs))
    return rows


# -- files ----------------------------------------------------------------------------------------

def read_rows(path: Path | str) -> list[dict[str, Any]]:
    """Rows of a .jsonl (one JSON object a line) or .json (a list) file."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise UserError(f"data file {path} is not valid JSON ({exc}); fix or regenerate it") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"data file {path} must hold JSON objects (one per line for .jsonl)")
    return rows


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Write rows as JSONL."""
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def check_rows(rows: list[dict[str, Any]], preference: bool, what: str) -> None:
    """Reject an empty set or rows of the wrong shape for the trainer, naming the fix."""
    if not rows:
        hint = ("build pairs first (`w2stree pairs`)" if preference
                else "collect or import trajectories / build trees first")
        raise UserError(f"training data {what} is empty; {hint}, or pass another --data")
    keys = ({"prompt", "chosen", "rejected"},) if preference else ({"messages"}, {"prompt", "completion"})
    for i, row in enumerate(rows):
        if not any(k <= row.keys() for k in keys):
            need = " or ".join("+".join(sorted(k)) for k in keys)
            raise UserError(f"training data {what}: row {i} has keys {sorted(row)}, this trainer needs {need}")
        for key in row.keys() & {"messages", "prompt", "completion", "chosen", "rejected"}:
            msgs = row[key]
            if not isinstance(msgs, list) or not all(
                    isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                    and isinstance(m.get("content"), str) for m in msgs):
                raise UserError(f"training data {what}: row {i} {key!r} must be a list of "
                                "{role, content} chat messages")


# -- datasets -------------------------------------------------------------------------------------

def install_fingerprint_fallback() -> None:
    """Make `datasets` survive an unhashable dataset state.

    On the GPU image (Python 3.12) `Dataset.from_list` raises `PicklingError: Can't pickle
    MonthDayNano` inside its fingerprint hashing. A fingerprint only keys datasets' cache, and
    datasets itself falls back to a random one for unhashable transforms; do the same for the
    initial fingerprint. Idempotent.
    """
    import datasets.arrow_dataset as ad
    from datasets.fingerprint import generate_random_fingerprint

    original = ad.generate_fingerprint
    if getattr(original, "_w2stree_fallback", False):
        return

    def generate_fingerprint(dataset: Any) -> str:
        try:
            return original(dataset)
        except Exception as exc:  # noqa: BLE001 - pickling errors come in many types
            log.warning("datasets could not hash a dataset (%s); using a random fingerprint", exc)
            return generate_random_fingerprint()

    generate_fingerprint._w2stree_fallback = True  # type: ignore[attr-defined]
    ad.generate_fingerprint = generate_fingerprint


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    """A `datasets.Dataset` of rows (survives fingerprint hashing failures)."""
    from datasets import Dataset

    install_fingerprint_fallback()
    return Dataset.from_list(rows)
