"""The dashboard's access to the store, cached per (store path, change counter).

Every cached reader takes the store path and `Store.changes()` as its first two arguments, so a
write anywhere (a CLI command, a job, the pipeline) invalidates exactly the stale entries and
navigation between pages is served from memory otherwise. Job state is not cached: it changes
in job folders, outside the store.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.agents.prompt import DECISION_FLAG, decision_rows
from core.errors import UserError
from core.jobs import list_jobs
from core.models.loading import config_value
from core.pairs import no_pair_reason
from core.paths import default_db
from core.results import episode_outcomes, experiment_results, paired_comparisons
from core.store import Store
from core.train.data import build_rows, parse_spec
from core.trajectory import Trajectory
from dashboard import train_shaping
from dashboard.figures import icicle_figure, tree_figure
from dashboard.layout import layout_tree


def db_path() -> str:
    """The store file the dashboard reads: `--db PATH` given to the script (`streamlit run
    dashboard/app.py -- --db PATH`, as `w2stree dashboard` does), else the default store."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--db")
    given = parser.parse_known_args(sys.argv[1:])[0].db
    return str(Path(given).resolve()) if given else str(default_db())


@st.cache_resource(show_spinner=False)
def _open(path: str) -> Store:
    return Store(path)


def store() -> Store:
    """The (shared, migrated) Store of this dashboard."""
    return _open(db_path())


def key() -> tuple[str, int]:
    """(store path, change counter): the first two arguments of every cached reader."""
    s = store()
    return str(s.path), s.changes()


@st.cache_data(show_spinner=False, max_entries=32)
def summary(path: str, changes: int) -> pd.DataFrame:
    """Per environment: tasks, trajectories (not evaluation), evaluation episodes, trees, nodes,
    pairs. Success rates are per source (`by_source`): a mixed rate would mean nothing."""
    return _open(path).env_summary()


@st.cache_data(show_spinner=False, max_entries=32)
def by_source(path: str, changes: int) -> pd.DataFrame:
    """Per env and source (evaluation per model): episodes, successes, rates, steps, invalid
    actions (Store.source_summary)."""
    return _open(path).source_summary()


@st.cache_data(show_spinner=False, max_entries=32)
def tree_outcomes(path: str, changes: int) -> pd.DataFrame:
    """Per env: trees, and trees holding both a success and a failure (pairs need both)."""
    return _open(path).tree_outcomes()


@st.cache_data(show_spinner=False, max_entries=32)
def runs(path: str, changes: int) -> pd.DataFrame:
    """Collect / eval / import runs with their trajectory counts."""
    return _open(path).run_summary()


@st.cache_data(show_spinner=False, max_entries=32)
def models(path: str, changes: int) -> pd.DataFrame:
    return _open(path).models()


@st.cache_data(show_spinner=False, max_entries=32)
def results(path: str, changes: int) -> pd.DataFrame:
    return _open(path).results()


@st.cache_data(show_spinner=False, max_entries=16)
def comparisons(path: str, changes: int, experiment_id: str) -> pd.DataFrame:
    """The experiment's paired comparisons with both intervals (core.results.paired_comparisons)."""
    s = _open(path)
    return paired_comparisons(episode_outcomes(s, experiment_results(s, experiment_id)[1]))


@st.cache_data(show_spinner=False, max_entries=32)
def tree_index(path: str, changes: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(tree headers, root rows with visits and successes) for the task picker."""
    s = _open(path)
    return s.trees(), s.tree_roots()


@st.cache_resource(show_spinner=False, max_entries=8)
def tree(path: str, changes: int, tree_id: str) -> nx.DiGraph:
    """A stored tree, shared (not copied) between reruns and sessions: callers only read it.
    (Unpickling a 5,000-node DiGraph from st.cache_data costs ~0.25 s per rerun.)"""
    return _open(path).load_tree(tree_id).to_networkx()


@st.cache_data(show_spinner=False, max_entries=64)
def pairs(path: str, changes: int, env: str | None = None, task_id: str | None = None,
          granularity: str | None = None, tree_id: str | None = None) -> pd.DataFrame:
    return _open(path).pairs_frame(env=env, task_id=task_id, granularity=granularity, tree_id=tree_id)


@st.cache_data(show_spinner=False, max_entries=32)
def eval_index(path: str, changes: int) -> pd.DataFrame:
    """Headers of the evaluation episodes (source = eval)."""
    return _open(path).trajectory_index(source="eval")


@st.cache_data(show_spinner=False, max_entries=32)
def episodes(path: str, changes: int, traj_ids: tuple[str, ...]) -> list[Trajectory]:
    return _open(path).trajectories(traj_ids=list(traj_ids))


@st.cache_data(show_spinner=False, max_entries=16)
def eval_scores(path: str, changes: int, env: str) -> pd.DataFrame:
    """Per-step scores of the evaluation episodes of `env` (model, traj_id, idx, score)."""
    return _open(path).eval_scores(env)


def jobs() -> pd.DataFrame:
    """The jobs table, fresh: running jobs are synced from their folders first."""
    return list_jobs(store())


@st.cache_data(show_spinner=False, max_entries=32)
def _tree_picture(path: str, changes: int, tree_id: str, kind: str, max_depth: int | None,
                  max_children: int | None, selected: int | None,
                  highlight: tuple[int, ...] = ()) -> tuple[dict, list[int]]:
    g = tree(path, changes, tree_id)
    best = [int(n) for n in g.graph.get("best_path") or []]
    keep = best[-1:] + ([selected] if selected is not None else []) + list(highlight[-1:])
    view = layout_tree(g, max_depth, max_children, keep)
    return tree_figure(g, view, kind, selected, highlight).to_dict(), view.nodes


def tree_picture(path: str, changes: int, tree_id: str, kind: str, max_depth: int | None,
                 max_children: int | None, selected: int | None,
                 highlight: tuple[int, ...] = ()) -> tuple[go.Figure, list[int]]:
    """The Trees page figure and the node ids it draws (caps keep the best path, the selected
    node and the last `highlight`ed node visible). Cached as a plain dict: a cached Figure object
    would be re-validated by Plotly on every unpickling (~0.3 s for 1,500 nodes)."""
    spec, nodes = _tree_picture(path, changes, tree_id, kind, max_depth, max_children, selected, highlight)
    return go.Figure(spec, _validate=False), nodes


@st.cache_data(show_spinner=False, max_entries=16)
def _icicle_picture(path: str, changes: int, tree_id: str, kind: str, max_depth: int | None) -> dict:
    return icicle_figure(tree(path, changes, tree_id), kind, max_depth).to_dict()


def icicle_picture(path: str, changes: int, tree_id: str, kind: str, max_depth: int | None) -> go.Figure:
    """The icicle overview of a whole tree (cached as a dict, like tree_picture)."""
    return go.Figure(_icicle_picture(path, changes, tree_id, kind, max_depth), _validate=False)


def gpu_memory() -> list[tuple[int, int]]:
    """(used, total) MiB per CUDA GPU from nvidia-smi; empty without NVIDIA GPUs."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return train_shaping.gpu_memory(out)


@st.cache_data(show_spinner=False, max_entries=32)
def explorers(path: str, changes: int, env: str) -> list[str]:
    """Models with successful collected trajectories in `env` (for `successes:ENV:MODEL`)."""
    return _open(path).collected_models(env=env, successful=True)


@st.cache_data(show_spinner=False, max_entries=32)
def decision_history(path: str, changes: int, model: str) -> int | None:
    """The history length of a model prompted one decision at a time (its config's
    `core.agents.prompt.DECISION_FLAG`), or None: prompted with the conversation, or not found."""
    try:
        value = config_value(model, DECISION_FLAG, _open(path))
    except UserError:
        return None
    return None if value is None else int(value)


@st.cache_data(show_spinner=False, max_entries=32)
def decision_row_count(path: str, changes: int, spec: str, history: int) -> int | None:
    """How many rows the trainer sees for a data SPEC when the model is prompted one decision at a
    time (`core.agents.prompt.decision_rows`, as `core.train.common.fit_prompts` converts them);
    None for best paths (their rows load every tree: counted when the job starts) or bad specs."""
    try:
        parsed = parse_spec(spec)
        if parsed.source == "best-paths":
            return None
        return len(decision_rows(build_rows(parsed, _open(path)), history))
    except UserError:
        return None


@st.cache_data(show_spinner=False, max_entries=32)
def example_count(path: str, changes: int, spec: str) -> tuple[int, str]:
    """(number of training examples a store data SPEC names, why it names none: "" when some).
    Best paths are counted from the tree headers (building their rows loads every tree)."""
    store = _open(path)
    try:
        parsed = parse_spec(spec)
        if parsed.source == "best-paths":
            trees = store.trees(env=parsed.env)
            n = int(trees["best_path"].map(lambda b: b is not None and len(b) > 0).sum()) if len(trees) else 0
            if "tasks" in parsed.options:
                n = min(n, int(parsed.options["tasks"]))
        else:
            n = len(build_rows(parsed, store))
    except UserError as exc:
        return 0, str(exc)
    why = no_pair_reason(store, parsed.env) if n == 0 and parsed.source == "pairs" else ""
    return n, why

