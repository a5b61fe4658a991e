"""Importers against hostile files: each bad file is skipped with one line naming file, record and
field, the good files of the same call still import, the store is unchanged by a bad file, and
nothing hangs (FIFOs, devices) or raises a traceback (property-based fuzzing with hypothesis)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.formats.importer import import_paths
from core.store import Store

GOOD = {"env": "toy", "task_id": "1", "instruction": "buy", "reward": 0.5,
        "steps": [{"thought": "t", "action": "search[x]", "observation": "o"}]}
ROLE, OK = {"from": "human", "value": "role"}, {"from": "gpt", "value": "OK"}
TASK = {"from": "human", "value": "do x"}
ACT, OBS = {"from": "gpt", "value": "Thought: t\nAction: a"}, {"from": "human", "value": "Observation: o"}
SFT = [{"id": "r1", "conversations": [ROLE, OK, TASK, ACT, OBS]}]
EXPLORE = {"meta": {"reward": 1.0, "success": True}, "conversations": [ROLE, OK, TASK, ACT, OBS]}


def _jsonl(**fields) -> str:
    return json.dumps({**GOOD, **fields}) + "\n"


def _deep(n: int) -> str:
    return "[" * n + "]" * n


# (format, file text or bytes, part of the one error line); each file also gets a good file
# of the same format in the same call.
CASES = {
    "lone surrogate in action": ("jsonl", _jsonl().replace("search[x]", "\\ud800"),
                                 "line 1: field 'steps[0].action': contains a lone surrogate"),
    "lone surrogate in a meta key": ("jsonl", _jsonl(meta={"k": 1}).replace('"k"', '"\\udfff"'),
                                     "line 1: field 'meta': has a key with a lone surrogate"),
    "invalid UTF-8": ("jsonl", _jsonl().encode() + b'{"env": "\xff"}\n', "line 2: not UTF-8 text (byte 0xff"),
    "100k-deep nesting": ("jsonl", '{"env": "toy", "meta": ' + _deep(100_000) + "}\n",
                          "line 1: nested too deeply to read"),
    "100-deep meta": ("jsonl", _jsonl().replace('"steps"', '"meta": {"x": ' + _deep(100) + '}, "steps"'),
                      "line 1: field 'meta.x"),
    "reward 1e400": ("jsonl", _jsonl().replace('"reward": 0.5', '"reward": 1e400'),
                     "line 1: field 'reward': must be a finite number"),
    "step reward 1e400": ("jsonl", _jsonl(steps=[{"action": "a", "reward": 0}]).replace('"reward": 0}', '"reward": 1e400}'),
                          "line 1: field 'steps[0].reward': must be a finite number"),
    "5,001-digit integer": ("jsonl", _jsonl().replace('"reward": 0.5', '"reward": ' + "9" * 5001),
                            "line 1: a number too long to read"),
    "400-digit score": ("jsonl", _jsonl(steps=[{"action": "a", "score": 0}]).replace('"score": 0', '"score": ' + "9" * 400),
                        "line 1: field 'steps[0].score': integer too large"),
    "NaN in meta": ("jsonl", _jsonl(meta={"x": [1, float("nan")]}), "line 1: field 'meta.x[1]': must be a finite number"),
    "1e400 in meta": ("jsonl", _jsonl().replace('"steps"', '"meta": {"x": 1e400}, "steps"'),
                      "line 1: field 'meta.x': must be a finite number"),
    "empty file": ("jsonl", "", "file: empty file"),
    "blank lines only": ("jsonl", "\n  \n", "file: empty file"),
    "Git LFS pointer": ("jsonl", "version https://git-lfs.github.com/spec/v1\noid sha256:ab12\nsize 123\n",
                        "file: a Git LFS pointer, not the data itself"),
    "jsonl no steps": ("jsonl", _jsonl(steps=[]), "line 1: field 'steps': no steps"),
    "eto-sft no steps": ("eto-sft", json.dumps([{"id": "r", "conversations": [ROLE, OK, TASK]}]),
                         "record 0 (id 'r'): field 'conversations': no steps"),
    "eto-explore no steps": ("eto-explore", json.dumps({**EXPLORE, "conversations": [ROLE, OK, TASK]}),
                             "file: field 'conversations': no steps"),
    "eto-sft reward 1e400": ("eto-sft", json.dumps(SFT).replace('"r1",', '"r1", "reward": 1e400,'),
                             "record 0: field 'reward': must be a finite number"),
    "eto-sft lone surrogate": ("eto-sft", json.dumps(SFT).replace("do x", "do \\ud800"),
                               "record 0: field 'conversations[2].value': contains a lone surrogate"),
    "eto-sft empty": ("eto-sft", b"", "file: empty file"),
    "eto-explore NaN in meta": ("eto-explore", json.dumps({**EXPLORE, "meta": {**EXPLORE["meta"], "x": float("nan")}}),
                                "file: field 'meta.x': must be a finite number"),
    "eto-explore LFS pointer": ("eto-explore", "version https://git-lfs.github.com/spec/v1\n",
                                "file: a Git LFS pointer"),
}
GOOD_TEXT = {"jsonl": _jsonl(), "eto-sft": json.dumps(SFT), "eto-explore": json.dumps(EXPLORE)}
SUFFIX = {"jsonl": ".jsonl", "eto-sft": ".json", "eto-explore": ".json"}


def _place(tmp_path: Path, fmt: str, name: str, content: str | bytes) -> Path:
    folder = tmp_path / "weak" / "exp" if fmt == "eto-explore" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{SUFFIX[fmt]}"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_is_skipped_with_one_line_and_good_files_import(store: Store, tmp_path, case):
    fmt, content, problem = CASES[case]
    bad = _place(tmp_path, fmt, "bad", content)
    good = _place(tmp_path, fmt, "good", GOOD_TEXT[fmt])
    before = store.counts()
    s = import_paths(store, fmt, [bad], progress=False, env="toy" if fmt != "jsonl" else None)
    assert store.counts() == before  # a bad file alone changes nothing
    s = import_paths(store, fmt, [bad, good], progress=False, env="toy" if fmt != "jsonl" else None)
    assert (s.files, s.trajectories, len(s.errors)) == (1, 1, 1)
    (line,) = s.errors
    assert line.startswith(f"{bad}: ") and "\n" not in line
    assert problem in line, line
    assert store.counts()["trajectories"] == 1


def _special(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A file that is not a readable regular file, and the problem the importer reports."""
    path = tmp_path / f"{kind}.jsonl"
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading would wait for a writer forever
        return path, "not a regular file"
    if kind == "device":
        path.symlink_to("/dev/zero")  # endless: reading it would never finish
        return path, "not a regular file"
    if kind == "loop":
        path.symlink_to(path.name)
        return path, "a symbolic link loop"
    if kind == "broken link":
        path.symlink_to("nowhere.jsonl")
        return path, "a broken symbolic link"
    if kind == "unreadable":
        path.symlink_to("/proc/self/mem")  # a regular file whose reading fails (EIO), even for root
        return path, "cannot read: Input/output error"
    if kind == "folder":
        path.mkdir()
        return path, "is a folder"
    raise AssertionError(kind)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["fifo", "device", "loop", "broken link", "unreadable"])
def test_only_regular_files_are_read(store: Store, tmp_path, kind):
    bad, problem = _special(tmp_path, kind)
    good = _place(tmp_path, "jsonl", "good", GOOD_TEXT["jsonl"])
    s = import_paths(store, "jsonl", [bad, good], progress=False)
    assert (s.files, s.trajectories) == (1, 1)
    assert s.errors == [f"{bad}: file: {s.errors[0].split('file: ', 1)[1]}"] and problem in s.errors[0]
    # in a folder too: the same entries are reported, not read and not silently left out
    store2 = Store(tmp_path / "other.duckdb")
    s = import_paths(store2, "jsonl", [tmp_path], progress=False)
    assert (s.files, s.trajectories, len(s.errors)) == (1, 1, 1) and problem in s.errors[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode (see the /proc case)")
def test_file_without_read_permission(store: Store, tmp_path):
    bad = _place(tmp_path, "jsonl", "bad", GOOD_TEXT["jsonl"])
    bad.chmod(0)
    s = import_paths(store, "jsonl", [bad], progress=False)
    assert s.errors == [f"{bad}: file: cannot read: Permission denied"]


def test_devices_and_fifos_given_to_eto_explore(store: Store, tmp_path):
    fifo = tmp_path / "weak" / "exp" / "t1.json"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    s = import_paths(store, "eto-explore", [tmp_path, fifo, "/dev/null"], progress=False, env="toy")
    assert len(s.errors) == 3 and all("not a regular file" in e for e in s.errors)


def test_reimport_of_a_shrunk_file_replaces_what_it_brought(store: Store, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(_jsonl(task_id=str(i)) for i in range(3)))
    import_paths(store, "jsonl", [path], progress=False)
    assert store.counts()["trajectories"] == 3
    path.write_text(_jsonl(task_id="9"))
    s = import_paths(store, "jsonl", [path], progress=False)
    assert s.trajectories == 1
    assert [t.task_id for t in store.trajectories()] == ["9"]
    assert store.counts()["steps"] == 1
    # an SFT file that lost all its records leaves nothing of it behind
    sft = tmp_path / "sft.json"
    sft.write_text(json.dumps(SFT * 2))
    import_paths(store, "eto-sft", [sft], env="toy", progress=False)
    assert store.counts()["trajectories"] == 3
    sft.write_text("[]")
    import_paths(store, "eto-sft", [sft], env="toy", progress=False)
    assert store.counts()["trajectories"] == 1


# -- property-based fuzzing ------------------------------------------------------------------
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
JSON = st.recursive(JSON_LEAF, lambda kids: st.lists(kids, max_size=3)
                    | st.dictionaries(st.text(max_size=5), kids, max_size=3), max_leaves=12)
STEP = st.fixed_dictionaries({"action": st.one_of(st.text(max_size=6), JSON)},
                             optional={"thought": JSON, "observation": JSON, "reward": JSON, "score": JSON})
RECORD = st.fixed_dictionaries(
    {"env": st.one_of(st.just("toy"), JSON), "task_id": st.one_of(st.just("1"), JSON),
     "reward": st.one_of(st.floats(0, 1), JSON), "steps": st.one_of(st.lists(STEP, max_size=3), JSON)},
    optional={"instruction": JSON, "meta": JSON, "success": JSON, "model": JSON, "run": JSON, "extra": JSON})
SFT_RECORD = st.fixed_dictionaries(
    {"id": st.one_of(st.text(max_size=4), JSON),
     "conversations": st.one_of(st.just([ROLE, OK, TASK, ACT, OBS]),
                                st.lists(st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "x"]),
                                                                "value": JSON}), max_size=5), JSON)},
    optional={"reward": JSON, "game_file": JSON})
FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _encode(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogatepass")  # lone surrogates as raw (invalid) bytes too


def _check_import(store: Store, fmt: str, path: Path, content: bytes) -> None:
    path.write_bytes(content)
    before = store.counts()
    s = import_paths(store, fmt, [path], progress=False, env=None if fmt == "jsonl" else "toy")
    if s.errors:
        (line,) = s.errors
        assert line.startswith(f"{path}: ") and "\n" not in line
        assert store.counts() == before
    else:
        assert s.files == 1
        for t in store.trajectories():  # everything stored reads back (meta is valid JSON)
            json.dumps(t.meta, allow_nan=False)


@FUZZ
@given(records=st.lists(RECORD, min_size=1, max_size=3), raw=st.booleans())
def test_fuzz_jsonl(store: Store, tmp_path, records, raw):
    text = "\n".join(json.dumps(r, ensure_ascii=raw) for r in records)
    _check_import(store, "jsonl", tmp_path / "f.jsonl", _encode(text))


@FUZZ
@given(data=st.one_of(st.lists(SFT_RECORD, max_size=3), JSON), raw=st.booleans())
def test_fuzz_eto_sft(store: Store, tmp_path, data, raw):
    _check_import(store, "eto-sft", tmp_path / "f.json", _encode(json.dumps(data, ensure_ascii=raw)))


@FUZZ
@given(content=st.binary(max_size=64) | st.text(max_size=40).map(_encode), fmt=st.sampled_from(list(SUFFIX)))
def test_fuzz_raw_bytes(store: Store, tmp_path, content, fmt):
    folder = tmp_path / "m" / "e"
    folder.mkdir(parents=True, exist_ok=True)
    _check_import(store, fmt, folder / f"f{SUFFIX[fmt]}", content)
