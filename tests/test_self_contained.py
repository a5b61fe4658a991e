"""A fresh clone is complete: no file of the project points outside it (a user's clone has no
sibling data folder and no design notes), and the test fixtures it needs are in tests/fixtures."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Spelled in pieces so that this file does not match itself.
OUTSIDE = ("../" + "shared", "DESIGN" + ".md", 'parent / "' + 'shared"')
SCANNED = ("core", "dashboard", "tests", "bench", "docs", ".ci", ".streamlit")
SUFFIXES = {".py", ".md", ".toml", ".txt", ".json", ".cfg", ".sh", ""}


def project_files() -> list[Path]:
    files = [REPO / "README.md", REPO / "pyproject.toml"]
    for top in SCANNED:
        files += [p for p in (REPO / top).rglob("*") if p.is_file() and p.suffix in SUFFIXES
                  and "__pycache__" not in p.parts]
    return files


def test_no_file_points_outside_the_repository():
    hits = [f"{p.relative_to(REPO)}: {needle}" for p in project_files()
            for needle in OUTSIDE if needle in p.read_text(encoding="utf-8", errors="replace")]
    assert not hits, hits


def test_fixtures_are_in_the_repository_and_small(fixtures):
    assert fixtures == REPO / "tests" / "fixtures"
    expected = json.loads((fixtures / "eto-explore-expected.json").read_text())
    for task_id, runs in expected.items():
        for run in runs:
            assert (fixtures / "eto-explore" / run["run"] / "sciworld_explore" / f"{task_id}.json").is_file()
    for name in ("train", "dev", "test"):
        assert json.loads((fixtures / "eto-sciworld" / f"{name}_indices.json").read_text())
    size = sum(p.stat().st_size for p in fixtures.rglob("*") if p.is_file())
    assert size < 400_000, f"tests/fixtures holds {size:,} bytes; keep the repository small"


def test_architecture_module_map_matches_the_code():
    """docs/architecture.md lists every module of core/, dashboard/, bench/ and docs/scripts/ once,
    and no module that does not exist."""
    import re

    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| `((?:core|dashboard|bench|docs/scripts)/[\w/]+\.py)` \|", text, flags=re.M)
    actual = sorted(str(p.relative_to(REPO)) for top in ("core", "dashboard", "bench", "docs/scripts")
                    for p in (REPO / top).rglob("*.py") if "__pycache__" not in p.parts)
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert sorted(listed) == actual, (f"missing: {sorted(set(actual) - set(listed))}, "
                                      f"gone: {sorted(set(listed) - set(actual))}")
