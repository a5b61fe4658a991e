"""`--db` holds everywhere: no function opens a default store of its own. The caller's store is
passed down; a job process opens the store its lineage records; a model name is looked up in
the given store only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.errors import UserError
from core.jobs import job_store
from core.models.loading import model_name, resolve_model
from core.store import Store
from core.train.data import build_rows

REPO = Path(__file__).resolve().parents[1]


def test_no_module_falls_back_to_a_default_store():
    """`Store()` with no path (the default store) appears nowhere in core/ or dashboard/: a store
    comes from the CLI's --db (`core.cli.context.open_store`), the dashboard's, or a path."""
    found = set()
    for path in [p for top in ("core", "dashboard") for p in (REPO / top).rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Store"
                    and not node.args and not node.keywords):
                found.add(str(path.relative_to(REPO)))
    assert not found, f"Store() without a path in {sorted(found)}: pass the caller's store down"


def test_a_model_name_is_looked_up_in_the_given_store_only(tmp_path, monkeypatch):
    """A name registered in the default store is not found without a store (it used to be: a
    command with another --db then trained on the default store's model of that name)."""
    default = Store(tmp_path / "default.duckdb")
    monkeypatch.setenv("W2STREE_DB", str(default.path))
    folder = tmp_path / "m"
    folder.mkdir()
    default.register_model("only-in-default", str(folder))
    other = Store(tmp_path / "other.duckdb")
    assert resolve_model("only-in-default", default) == str(folder)
    assert model_name(str(folder), default) == "only-in-default"
    for store in (None, other):
        with pytest.raises(UserError, match="only-in-default"):
            resolve_model("only-in-default", store)
        assert model_name(str(folder), store) == "m"  # the folder's name: no store knows it


def test_a_job_process_opens_the_store_it_was_started_on(tmp_path):
    db = tmp_path / "runs.duckdb"
    assert job_store({"job_id": "explore-1", "lineage": {"db": str(db)}}).path == db
    with pytest.raises(UserError, match="explore-1 does not record its store"):
        job_store({"job_id": "explore-1", "lineage": {}})


def test_training_rows_from_the_store_need_one(tmp_path):
    with pytest.raises(UserError, match="reads a store"):
        build_rows("expert:shop", None)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": [{"role": "user", "content": "hi"}], "completion": '
                    '[{"role": "assistant", "content": "yo"}]}\n')
    assert len(build_rows(str(rows), None)) == 1  # a file needs no store
