"""Files → store. Each input file is all-or-nothing: it is read and validated completely before
anything is written, and its trajectories are written in one transaction, so a bad file leaves
the store as it was while the good files of the same call are imported.

Trajectory ids are derived from the file's resolved path and the record's position
(`imp-<hash>-<n>`), so importing the same file again replaces everything it imported before
(also when it has fewer records now) instead of duplicating it. Records of a collector's spool
(`core.spool`) keep their own ids, runs and task splits instead: a spooled trajectory already
stored is left out, so importing a spool again adds nothing, and a spool's truncated last line
(its collector killed mid-write) is skipped with a note. Good files are written in
batches (never splitting a file) to keep big imports fast; should a batch still fail to store,
its files are written one by one so that only the failing file is skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
from tqdm import tqdm

from core.console import plural
from core.envs.alfworld_data import adopt_game_ids
from core.errors import UserError, one_line
from core.formats import FormatError
from core.formats.eto import explore_files, read_eto_explore_file, read_eto_sft
from core.formats.jsonl import read_jsonl
from core.spool import unspool
from core.store import Store
from core.trajectory import Run, Trajectory

KINDS = ("jsonl", "eto-sft", "eto-explore")
BATCH_TRAJECTORIES = 20_000
# Errors of a write that the values themselves caused (not the store file: that is StoreError).
STORE_VALUE_ERRORS = (pa.ArrowException, duckdb.ConversionException, duckdb.InvalidInputException,
                      duckdb.ConstraintException, ValueError, TypeError, OverflowError)


@dataclass
class ImportSummary:
    """What an import call did: files and trajectories imported, and one error line per skipped file."""

    files: int = 0
    trajectories: int = 0
    already: int = 0  # records of trajectories the store already holds (a re-imported export or spool)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line per truncated last line skipped

    @property
    def skipped(self) -> int:
        return len(self.errors)

    def line(self) -> str:
        text = f"imported {plural(self.trajectories, 'trajectory')} from {plural(self.files, 'file')}"
        text += f"; {self.already} already stored" if self.already else ""
        return text + (f"; skipped {plural(self.skipped, 'file')} with errors" if self.errors else "")


def _files(kind: str, path: Path) -> list[Path]:
    """The files to read; in a folder every matching entry but folders, so that a FIFO or a link
    loop there is reported (by the reader) rather than silently left out."""
    if kind == "eto-explore":
        return explore_files(path)
    if path.is_dir():
        return sorted(p for p in path.glob("*.jsonl" if kind == "jsonl" else "*.json") if not p.is_dir())
    if not path.exists() and not path.is_symlink():
        raise FileNotFoundError("no such file or folder")
    return [path]


def _reader(kind: str, env: str, notes: list[str]) -> Callable[[Path], list[Trajectory]]:
    if kind == "jsonl":
        return lambda p: read_jsonl(p, skipped=notes)
    if kind == "eto-sft":
        return lambda p: read_eto_sft(p, env)
    return lambda p: [read_eto_explore_file(p, env)]


def _runs(path: Path, kind: str, trajs: list[Trajectory]) -> list[Run]:
    """Give trajectories without a run the file's import run; one Run row per run id."""
    for t in trajs:
        t.run_id = t.run_id or f"import:{path.name}"
    runs: dict[str, Run] = {}
    for t in trajs:
        if t.run_id not in runs:
            folder = path.parent if kind == "eto-explore" else path
            runs[t.run_id] = Run(run_id=t.run_id, kind="import", env=t.env, policy="import",
                                 model=t.model, settings={"format": kind, "path": str(folder)})
    return list(runs.values())


def id_prefix(path: Path) -> str:
    """The prefix of the ids of every trajectory imported from `path` (its resolved path)."""
    return f"imp-{hashlib.sha1(str(path.resolve()).encode(errors='surrogateescape')).hexdigest()[:12]}-"


@dataclass
class FileRead:
    """One validated file, ready for the store: its trajectories with ids and runs assigned;
    those of spool records (own ids) apart, with their tasks' splits ((env, task id) -> split)."""

    path: Path
    kind: str
    trajs: list[Trajectory]
    runs: list[Run]
    spooled: list[Trajectory] = field(default_factory=list)
    splits: dict[tuple[str, str], str] = field(default_factory=dict)


def read_file(kind: str, path: Path, env: str, notes: list[str] | None = None) -> FileRead:
    """Read and validate one file (raises FormatError); ids and runs assigned for the store.
    A truncated last line of a JSONL file is skipped, with a line in `notes`."""
    trajs = _reader(kind, env, notes if notes is not None else [])(path)
    if env == "alfworld":  # ETO names ALFWorld games by file: map them to the env's task ids
        adopt_game_ids(trajs)
    prefix = id_prefix(path)
    read = FileRead(path, kind, trajs, [])
    plain, spool_runs = [], {}
    for n, t in enumerate(trajs):
        found = unspool(t)
        if found is None:
            t.traj_id = f"{prefix}{n:06d}"
            plain.append(t)
        else:
            read.spooled.append(t)
            spool_runs.setdefault(t.run_id, found[0])
            read.splits[(t.env, t.task_id)] = found[1]
    read.runs = _runs(path, kind, plain) + list(spool_runs.values())
    return read


def import_paths(store: Store, kind: str, paths: Iterable[str | Path], env: str | None = None,
                 progress: bool = True) -> ImportSummary:
    """Import every file named by `paths` (files or folders) of one kind; returns the summary.

    `env` names the environment of ETO files (default "sciworld"); JSONL records name their own.
    """
    if kind not in KINDS:
        raise UserError(f"unknown import format {kind!r}; use one of {', '.join(KINDS)}")
    if kind == "jsonl" and env:
        raise UserError("--env applies to ETO files only; JSONL records name their own env")
    env = env or "sciworld"
    summary = ImportSummary()
    files: list[Path] = []
    for p in paths:
        try:
            found = _files(kind, Path(p))
        except FileNotFoundError as exc:
            summary.errors.append(one_line(f"{p}: {exc}"))
            continue
        if not found:
            summary.errors.append(one_line(f"{p}: no {kind} files in this folder"))
        files.extend(found)

    batch: list[FileRead] = []
    pending = 0  # trajectories in the batch

    def flush() -> None:
        nonlocal pending
        if not batch:
            return
        try:
            added = _write(store, batch)
            summary.files += len(batch)
            summary.trajectories += added
            summary.already += pending - added
        except STORE_VALUE_ERRORS:  # validation missed something: find the file, keep the others
            for item in batch:
                try:
                    added = _write(store, [item])
                except STORE_VALUE_ERRORS as exc:
                    summary.errors.append(one_line(f"{item.path}: file: the store cannot hold it: {_first_line(exc)}"))
                    continue
                summary.files += 1
                summary.trajectories += added
                summary.already += len(item.trajs) - added
        batch.clear()
        pending = 0

    for path in tqdm(files, desc=f"import {kind}", unit="file", disable=not progress or None):
        try:
            read = read_file(kind, path, env, summary.notes)
        except FormatError as exc:
            summary.errors.append(str(exc))
            continue
        except MemoryError:  # its trajectories do not fit in memory: the next files still import
            summary.errors.append(one_line(f"{path}: file: too big to hold in memory here; split it "
                                           "into smaller files and import those"))
            continue
        clash = store.foreign_runs({t.run_id for t in read.spooled}, spooled=True)
        if clash:
            summary.errors.append(one_line(f"{path}: run {min(clash)!r} is a run of this store that was not "
                                           "collected to a spool; import this spool into another store"))
            continue
        batch.append(read)
        pending += len(read.trajs)
        if pending >= BATCH_TRAJECTORIES:
            flush()
    flush()
    return summary


def _write(store: Store, batch: list[FileRead]) -> int:
    """Store a batch of read files; returns the trajectories added. A record naming a run that
    an import did not make (a collected run) goes to its file's import run instead, keeping
    that name in `meta["run"]`: an import never changes another run. Spooled trajectories the
    store already holds (by id) are left out."""
    spooled = {id(t) for f in batch for t in f.spooled}
    foreign = store.foreign_runs({t.run_id for f in batch for t in f.trajs if id(t) not in spooled})
    for f in batch:
        moved = [t for t in f.trajs if t.run_id in foreign and id(t) not in spooled]
        for t in moved:
            t.meta["run"], t.run_id = t.run_id, ""
        if moved:
            f.runs[:] = [r for r in f.runs if r.run_id not in foreign] + _runs(f.path, f.kind, moved)
    known = store.stored_traj_ids([t.traj_id for f in batch for t in f.spooled])
    runs = {r.run_id: r for f in batch for r in f.runs}  # folders share a run
    return store.import_trajectories([t for f in batch for t in f.trajs if t.traj_id not in known], runs.values(),
                                     replace_prefixes=[id_prefix(f.path) for f in batch],
                                     splits={k: v for f in batch for k, v in f.splits.items()})


def _first_line(exc: BaseException) -> str:
    return next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
