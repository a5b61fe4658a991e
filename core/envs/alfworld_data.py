"""ALFWorld's game files: where they are, which games each split holds, and unpacking them.

Layout (ALFWorld's own, what `$ALFWORLD_DATA` holds after `alfworld-download`):

    <root>/logic/alfred.pddl, <root>/logic/alfred.twl2
    <root>/json_2.1.1/{train,valid_seen,valid_unseen}/<task folder>/<trial>/{game.tw-pddl,traj_data.json}

The root is `$ALFWORLD_DATA` when set, else `<W2STREE_HOME or ./data>/alfworld`, which
`w2stree data alfworld --from DIR` fills from a folder of archives (`<split>.tar.xz` or
`<split>_<anything>.tar.xz`, each holding `<split>/...`, plus `logic/`) or from a folder already
in the layout above. The project bundles a few real games in that archive form
(`core/data/alfworld_mini/`, `--from bundled`), so tests and a demo run on a fresh clone.

Games: like ALFWorld's loader, games of the `movable` and `Sliced` variants and games whose
`game.tw-pddl` says `"solvable": false` are left out. Splits:

* `train`: every such game of `json_2.1.1/train`, sorted by path;
* `eto-seen` / `dev`: `valid_seen` (ETO's and the paper's seen test set, 140 games), sorted;
* `eto-unseen`: `valid_unseen` (the unseen test set, 134) in the order of ETO's list
  (`core/data/alfworld_eto_unseen.txt`), so ETO's task index i is game i here;
  `test`: the same games sorted by path.

A split lists the games present on disk: a partial unpack (the bundled few) gives a short
split, and `split_report` says how many of the expected games are there.
Task ids are the game folder relative to `json_2.1.1`, e.g.
`valid_seen/pick_and_place_simple-Book-None-SideTable-329/trial_T20190908_050633_745514`: the
ALFRED split, task type, object, receptacle (and scene), and trial, stable across machines.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
from functools import lru_cache
from pathlib import Path

from core.console import plural
from core.envs.base import UnknownEnvError
from core.errors import UserError
from core.paths import home

PACKAGE_DATA = Path(__file__).resolve().parents[1] / "data"
BUNDLED = PACKAGE_DATA / "alfworld_mini"
ETO_UNSEEN_FILE = PACKAGE_DATA / "alfworld_eto_unseen.txt"

GAMES_DIR = "json_2.1.1"
GAME_FILE = "game.tw-pddl"
TRAJ_FILE = "traj_data.json"
LOGIC_FILES = ("logic/alfred.pddl", "logic/alfred.twl2")
#: split name -> (ALFRED folder, expected game count or None)
SPLITS: dict[str, tuple[str, int | None]] = {
    "train": ("train", None),
    "eto-seen": ("valid_seen", 140),
    "eto-unseen": ("valid_unseen", 134),
    "dev": ("valid_seen", 140),
    "test": ("valid_unseen", 134),
}
ALFRED_SPLITS = ("train", "valid_seen", "valid_unseen")
FIX = "run `w2stree data alfworld --from DIR` (a folder of ALFWorld archives or ALFWorld's own data; " \
      "`--from bundled` for the few games shipped with w2stree) or set ALFWORLD_DATA"
_SOLVABLE_TAIL = re.compile(rb'"solvable"\s*:\s*(true|false)\s*}\s*$')


def data_root() -> Path:
    """`$ALFWORLD_DATA`, else `<home>/alfworld` (not checked)."""
    base = os.environ.get("ALFWORLD_DATA")
    return Path(base).expanduser().resolve() if base else home() / "alfworld"


def checked_root() -> Path:
    """The data root, with its games folder and logic files present; else a one-line UserError."""
    root = data_root()
    for rel in (GAMES_DIR, *LOGIC_FILES):
        if not (root / rel).exists():
            raise UserError(f"ALFWorld data missing: {root / rel} does not exist; {FIX}")
    return root


def _solvable(game: Path) -> bool:
    """`"solvable"` of a game file: read from its tail (the key comes last), else the whole JSON."""
    with game.open("rb") as fh:
        fh.seek(max(0, game.stat().st_size - 64))
        m = _SOLVABLE_TAIL.search(fh.read())
    if m:
        return m.group(1) == b"true"
    return bool(json.loads(game.read_text()).get("solvable", False))


@lru_cache(maxsize=16)
def _alfred_games(games_dir: Path, alfred_split: str) -> tuple[str, ...]:
    base = games_dir / alfred_split
    found = []
    for game in base.glob(f"*/*/{GAME_FILE}"):
        folder = game.parts[-3]
        if "movable" in folder or "Sliced" in folder or not (game.parent / TRAJ_FILE).is_file():
            continue
        if _solvable(game):
            found.append(str(game.parent.relative_to(games_dir)))
    return tuple(sorted(found))


@lru_cache(maxsize=1)
def eto_unseen_order() -> tuple[str, ...]:
    """ETO's 134 unseen games as task ids, in ETO's order."""
    lines = [ln.strip() for ln in ETO_UNSEEN_FILE.read_text().splitlines() if ln.strip()]
    return tuple(f"valid_unseen/{ln}" for ln in lines)


def split_games(split: str, root: Path | None = None) -> list[str]:
    """Task ids of a split that are on disk (see the module docstring)."""
    if split not in SPLITS:
        raise UserError(f"unknown alfworld split {split!r}; use one of {', '.join(SPLITS)}")
    games_dir = (root or checked_root()) / GAMES_DIR
    games = _alfred_games(games_dir, SPLITS[split][0])
    if split == "eto-unseen":
        present = set(games)
        return [g for g in eto_unseen_order() if g in present]
    return list(games)


def split_report(root: Path | None = None) -> dict[str, str]:
    """`{split: "n games"}`, with "of N expected" where the paper's split has a size."""
    out = {}
    for split, (_, expected) in SPLITS.items():
        n = len(split_games(split, root))
        out[split] = plural(n, "game") + (f" of {expected}" if expected and n != expected else "")
    return out


def game_path(task_id: str, root: Path | None = None) -> Path:
    """The game file of a task id; a missing one is a UserError naming the path and the fix."""
    parts = Path(task_id).parts
    if len(parts) != 3 or parts[0] not in ALFRED_SPLITS or ".." in parts:
        raise UnknownEnvError(f"unknown alfworld task id {task_id!r}: expected <train|valid_seen|"
                              "valid_unseen>/<task folder>/<trial>, as `w2stree stats` or tasks(split) list them")
    path = (root or checked_root()) / GAMES_DIR / task_id / GAME_FILE
    for p in (path, path.with_name(TRAJ_FILE)):
        if not p.is_file():
            raise UserError(f"ALFWorld game file missing: {p} does not exist; {FIX}")
    return path


def relative_game(task_id: str) -> str:
    """A task's game file relative to the data root (`meta["game"]` of its trajectories)."""
    return f"{GAMES_DIR}/{task_id}/{GAME_FILE}"


def task_id_of_game(game_file: str) -> str | None:
    """The task id of a game path as other tools write it (ETO's `game_file`, ALFWorld's
    `extra.gamefile`, absolute or relative), or None when it is not a game path."""
    parts = Path(game_file).parts
    if len(parts) < 4 or parts[-1] != GAME_FILE or parts[-4] not in ALFRED_SPLITS:
        return None
    return "/".join(parts[-4:-1])


def adopt_game_ids(trajs: list) -> None:
    """Imported ETO records that name their game (`game_file`, in the SFT record or the explore
    file's meta) take that game's task id, keep ETO's id as `meta["eto_task_id"]` and get
    `meta["game"]`; so they replay, and join the trees of collected episodes. Records without a
    game path keep ETO's id (ETO's explore files number games by split position)."""
    for t in trajs:
        game = t.meta.get("game_file") or (t.meta.get("eto_meta") or {}).get("game_file")
        task_id = task_id_of_game(game) if isinstance(game, str) else None
        if task_id:
            t.meta["eto_task_id"] = t.task_id
            t.task_id = task_id
            t.meta["game"] = relative_game(task_id)


# --------------------------------------------------------------------------- unpacking


def _archives(src: Path) -> list[tuple[str, Path]]:
    """(ALFRED split, archive) pairs of a folder of `<split>[_*].tar.xz` files."""
    out = []
    for arc in sorted(src.glob("*.tar.xz")):
        split = next((s for s in ALFRED_SPLITS if arc.name == f"{s}.tar.xz" or arc.name.startswith(f"{s}_")), None)
        if split is None:
            raise UserError(f"{arc}: not an ALFWorld split archive (expected train*.tar.xz, "
                            "valid_seen*.tar.xz or valid_unseen*.tar.xz)")
        out.append((split, arc))
    return out


def _safe_members(tar: tarfile.TarFile, split: str, arc: Path) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if not parts or parts[0] != split or ".." in parts or m.issym() or m.islnk() or Path(m.name).is_absolute():
            raise UserError(f"{arc}: unexpected entry {m.name!r} (every entry must sit under {split}/)")
    return members


def unpack(src: str | Path, dest: Path | None = None) -> Path:
    """Fill `dest` (default: the data root) from `src`: a folder of split archives plus `logic/`,
    a folder in ALFWorld's layout (copied), or "bundled" (the games shipped with w2stree).
    Returns `dest`. Existing games are overwritten; other files there are kept."""
    src_path = BUNDLED if str(src) == "bundled" else Path(src).expanduser().resolve()
    dest = (dest or data_root()).resolve()
    if not src_path.is_dir():
        raise UserError(f"--from {src}: no such folder; give a folder of ALFWorld archives "
                        "(like the one w2stree bundles) or ALFWorld's own data folder")
    logic = [src_path / rel for rel in LOGIC_FILES]
    missing = [str(p) for p in logic if not p.is_file()]
    if missing:
        raise UserError(f"--from {src}: {missing[0]} is missing; the folder needs logic/alfred.pddl "
                        "and logic/alfred.twl2 beside the games")
    archives = _archives(src_path)
    if not archives and not (src_path / GAMES_DIR).is_dir():
        raise UserError(f"--from {src}: no <split>.tar.xz archives and no {GAMES_DIR} folder in it")
    if src_path == dest:
        return dest
    (dest / "logic").mkdir(parents=True, exist_ok=True)
    for p in logic:
        shutil.copyfile(p, dest / "logic" / p.name)
    games = dest / GAMES_DIR
    games.mkdir(exist_ok=True)
    for split, arc in archives:
        with tarfile.open(arc, "r:xz") as tar:
            tar.extractall(games, members=_safe_members(tar, split, arc), filter="data")
    if (src_path / GAMES_DIR).is_dir():
        shutil.copytree(src_path / GAMES_DIR, games, dirs_exist_ok=True)
    _alfred_games.cache_clear()
    return dest
