"""Reuse of finished units whose inputs are identical (`w2stree pipeline --reuse`).

Training and exploration are deterministic for given inputs (the same base weights, training
rows, settings and seed give the same model and the same episodes: `w2stree up` reproduces its
table to the last digit), so a unit that already ran on identical inputs need not run again. The
final run of an experiment evaluates on the test split the very models a dev run trained; with
reuse it trains only the seeds the dev run did not.

A unit's key is a sha256 over what determines its result: a training job's kind and every config
field, with the model, the reference and the data file replaced by digests of their content (a
model retrained under the same name gets a new key); an exploration's stage and arguments, its
policy model by digest likewise. Every finished unit leaves a record `<home>/reuse/<key>.json`;
a record is used only while what it points at is unchanged: the model folder whose weights digest
it recorded, or a finished run in this store. Evaluations are never reused: they are the
measurement.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import UserError
from core.models.loading import resolve_model
from core.paths import home

if TYPE_CHECKING:
    from core.store import Store
    from core.work import Unit

SKIP_FILES = {"training_args.bin"}  # pickled trainer arguments: paths and dates, not the model
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (file, size, mtime_ns) -> sha256, per process


def _file_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def content_digest(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents, sorted; trainer arguments
    left out)."""
    path = Path(path)
    if path.is_file():
        return _file_digest(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name not in SKIP_FILES):
        h.update(f"{f.relative_to(path)}\0{_file_digest(f)}\0".encode())
    return h.hexdigest()


def _plain(value: Any) -> Any:
    """JSON for what `json` cannot write itself: a dataclass (a Sampling) as its fields, else text."""
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else str(value)


def _key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=_plain).encode()).hexdigest()


def _model_digest(name: str, store: Store) -> str | None:
    """The digest of a model given by name or folder; None when it is not a local folder (a hub
    id is not pinned to content here, so its units are not reused)."""
    try:
        path = Path(resolve_model(name, store))
    except UserError:
        return None
    return content_digest(path) if path.is_dir() else None


def unit_key(unit: Unit, store: Store) -> str | None:
    """The key of a reusable unit (a training job from a data file, or a call marked `reusable`),
    or None when it cannot be reused."""
    if unit.kind:
        config = dataclasses.asdict(unit.config)
        data = Path(str(config.get("data", "")))
        if not data.is_file():  # rows read from the store may change under the same spec
            return None
        config["data"] = content_digest(data)
        for field in ("model", "ref"):
            if config.get(field):
                config[field] = _model_digest(config[field], store)
                if config[field] is None:
                    return None
        return _key({"kind": unit.kind, "config": config})
    if not unit.reusable or unit.stage is None:
        return None
    kwargs = dict(unit.kwargs)
    kwargs.pop("pool", None)  # where the envs ran does not change the episodes
    if Path(str(kwargs.get("policy", ""))).is_dir():
        kwargs["policy"] = content_digest(kwargs["policy"])
    return _key({"stage": f"{unit.stage.__module__}.{unit.stage.__qualname__}", "kwargs": kwargs})


def _record_path(key: str) -> Path:
    return home() / "reuse" / f"{key}.json"


def record(unit: Unit, store: Store) -> None:
    """Leave the record of a finished unit (nothing for units that cannot be reused)."""
    key = unit_key(unit, store)
    if key is None:
        return
    entry: dict[str, Any] = {"unit": unit.name, "result": str(unit.result)}
    if unit.kind:
        entry["weights"] = content_digest(unit.result)
    path = _record_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entry))
    tmp.replace(path)


def lookup(unit: Unit, store: Store) -> Any | None:
    """The result of an identical finished unit, when its record holds and what it points at is
    unchanged: a training job's model folder, a call's finished run id; else None."""
    key = unit_key(unit, store)
    if key is None or not _record_path(key).is_file():
        return None
    try:
        entry = json.loads(_record_path(key).read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a damaged record only costs the rerun
    result = entry.get("result", "")
    if unit.kind:
        folder = Path(result)
        if folder.is_dir() and content_digest(folder) == entry.get("weights"):
            return folder
        return None
    if store.has_run(result) and store.run_record(result)["status"] == "finished":
        return result
    return None
