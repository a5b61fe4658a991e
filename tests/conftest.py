"""Shared test fixtures: a fresh store per test, the data fixtures folder, one torch thread."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("JAVA_TOOL_OPTIONS", "-Xmx300m")

try:
    import torch

    torch.set_num_threads(1)  # 2-core machines: other processes run beside the tests
except ImportError:  # pragma: no cover
    pass

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    """tests/fixtures: ETO-layout episodes and the ETO ScienceWorld split (see its README.md)."""
    return FIXTURES


@pytest.fixture(autouse=True, scope="session")
def dashboard_config():
    """The Streamlit options of dashboard/.streamlit/config.toml, which a real server reads beside
    the app; AppTest reads only the current folder's, so they are set here for it."""
    try:
        from streamlit import config
    except ImportError:  # pragma: no cover
        return
    with open(REPO / "dashboard" / ".streamlit" / "config.toml", "rb") as fh:
        for section, values in tomllib.load(fh).items():
            for name, value in values.items():
                config.set_option(f"{section}.{name}", value)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh Store in a temporary folder; W2STREE_HOME/W2STREE_DB point there too."""
    from core.store import Store

    monkeypatch.setenv("W2STREE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("W2STREE_DB", str(tmp_path / "home" / "w2stree.duckdb"))
    return Store(tmp_path / "home" / "w2stree.duckdb")


@pytest.fixture
def noisy_shop(store):
    """The noisy expert's paper-schedule exploration of shop train_0..2 (8-step cap) in `store`,
    and those tasks' expert demonstrations: (explored, experts)."""
    from core import stages
    from core.agents.base import PAPER_SCHEDULE
    from core.agents.scripted import NoisyExpertPolicy
    from core.collect import collect

    tasks = ["train_0", "train_1", "train_2"]
    run_id = collect(store, "shop", NoisyExpertPolicy("shop", noise=0.6, seed=3), tasks, PAPER_SCHEDULE,
                     max_steps=8, progress=False).run_id
    return store.trajectories(run_id=run_id), stages.demonstrations(store, "shop", tasks)
