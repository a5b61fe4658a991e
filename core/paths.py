"""Where w2stree keeps its files: the store, local models and job folders."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The data folder: `W2STREE_HOME`, else `./data` of the current directory."""
    return Path(os.environ.get("W2STREE_HOME", "data")).resolve()


def default_db() -> Path:
    """The DuckDB file: `W2STREE_DB`, else `<home>/w2stree.duckdb`."""
    env = os.environ.get("W2STREE_DB")
    return Path(env).resolve() if env else home() / "w2stree.duckdb"


def models_dir() -> Path:
    """Folder of locally built and trained models."""
    return home() / "models"


def jobs_dir() -> Path:
    """Folder holding one sub-folder per training job."""
    return home() / "jobs"
