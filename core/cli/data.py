"""Data commands: import, tree, mcts, pairs, export (`stats` is core.cli.stats).

The flags of tree, mcts and pairs are the fields of their settings (`core.settings`).

    w2stree import {jsonl,eto-sft,eto-explore} PATH... [--env ENV]
    w2stree tree   [--env] [--task] [--merge action|observation|semantic] [--threshold 0.9]
                   [--source S] [--model M]
    w2stree mcts   [--env] [--task] [--iterations 1000] [--c 1.41] [--rule uct|early-release|puct|mean]
    w2stree pairs  [--env] [--task] [--granularity step|continuation|trajectory]
                   [--min-margin X] [--value data|mcts] [--baseline expert|weak] [--hard-for MODEL]
    w2stree export {trajectories,pairs,best-paths,tree} OUT [--format jsonl|eto|trl|json] ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from core.cli.context import env_arg, model_arg, open_store
from core.cli.fields import add_fields, from_args
from core.console import plural
from core.errors import UserError
from core.formats import export
from core.formats.importer import KINDS as IMPORT_FORMATS
from core.formats.importer import import_paths
from core.formats.jsonl import write_jsonl
from core.names import stored_world_hint
from core.pair_ranking import PairScorer
from core.pairs import GRANULARITIES, no_pair_reason, pair_blocker
from core.settings import MCTSSettings, PairSettings, TreeSettings
from core.stages import (
    CHUNK,
    cut_pairs_stored,
    expert_trajectories,
    grow_trees_stored,
    score_trees_stored,
)
from core.store import Store
from core.tree_data import Tree

STDOUT = "standard output"

EXPORT_FORMATS = {
    "trajectories": ("jsonl",),
    "pairs": ("trl", "eto"),
    "best-paths": ("trl", "eto"),
    "tree": ("json",),
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the data verbs to the `w2stree` parser."""
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("import", help="import trajectory files (project JSONL, ETO SFT, ETO explore folders)",
                       formatter_class=fmt, description=(
                           "Import trajectory files into the store. Each file is all-or-nothing: a bad\n"
                           "file is reported (file, record, field) and skipped; the others import.\n"
                           "Importing a file again replaces what it imported before; a collector's\n"
                           "spool (`collect --spool`) keeps its runs and ids, so importing it again adds\n"
                           "nothing. A JSONL file's truncated last line (its writer killed mid-line) is\n"
                           "skipped with a note. Exit status 1 when a file was skipped.\n"
                           "  jsonl        project JSONL, one trajectory per line (records name their env)\n"
                           "  eto-sft      ETO expert SFT file: [{id, conversations}] -> model 'expert'\n"
                           "  eto-explore  folder <root>/<model>/<experiment>/<task_id>.json"))
    p.add_argument("format", choices=IMPORT_FORMATS)
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    p.add_argument("--env", type=env_arg, help="environment of ETO files (default: sciworld)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("tree", help="(re)build trajectory trees, one per (env, task)",
                       description="Merge the selected trajectories into one tree per (env, task) and "
                                   "store it (replacing an earlier tree of that task). Default: all "
                                   "trajectories except evaluation episodes.")
    _filters(p)
    add_fields(p, TreeSettings)
    p.add_argument("--source", help="only trajectories of this source (collect, import, eval)")
    p.add_argument("--model", help="only trajectories of this model")
    p.set_defaults(func=cmd_tree)

    p = sub.add_parser("mcts", help="run offline MCTS over stored trees",
                       description="Score stored trees with offline MCTS (no environment calls) and "
                                   "store the visit statistics and the best path.")
    _filters(p)
    add_fields(p, MCTSSettings)
    p.set_defaults(func=cmd_mcts)

    p = sub.add_parser("pairs", help="cut TreeDPO preference pairs at branching nodes",
                       description="Extract preference pairs from stored trees, replacing earlier pairs "
                                   "of the same granularity for those tasks. `trajectory` gives the "
                                   "ETO-style baseline over the trees' trajectories (see --baseline).")
    _filters(p)
    add_fields(p, PairSettings)
    p.add_argument("--hard-for", metavar="MODEL",
                   help="keep only the pairs MODEL ranks wrong (its summed decision log-probability of the "
                        "chosen side not above the rejected side's; core.pair_ranking)")
    p.set_defaults(func=cmd_pairs)

    p = sub.add_parser("export", help="write trajectories, pairs, best paths or trees to a file",
                       formatter_class=fmt, description=(
                           "Export stored data ('-' as OUT writes to stdout). OUT is written whole or\n"
                           "not at all (a temporary file renamed at the end); an existing OUT needs --force.\n"
                           "  trajectories  jsonl (project format)\n"
                           "  pairs         trl (JSONL prompt/chosen/rejected messages) | eto (JSON list)\n"
                           "  best-paths    trl (JSONL {messages}) | eto (JSON [{id, prompt, conversations}])\n"
                           "  tree          json ({env, task_id, nodes, best_path}; a list for several trees)"))
    p.add_argument("what", choices=tuple(EXPORT_FORMATS))
    p.add_argument("out", metavar="OUT", help="output file, or - for stdout")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--format", dest="fmt", choices=sorted({f for fmts in EXPORT_FORMATS.values() for f in fmts}),
                   help="default: jsonl for trajectories, trl for pairs and best paths, json for trees")
    _filters(p)
    p.add_argument("--granularity", choices=GRANULARITIES,
                   help="pairs only: this granularity (default: all stored pairs)")
    p.add_argument("--source", help="trajectories only: this source")
    p.add_argument("--model", help="trajectories only: this model")
    p.set_defaults(func=cmd_export)


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", type=env_arg, help="only this environment")
    p.add_argument("--task", help="only this task id")


def _scope(args: argparse.Namespace) -> str:
    parts = [f"env {args.env!r}" if args.env else "", f"task {args.task!r}" if args.task else ""]
    text = " ".join(x for x in parts if x)
    return f" for {text}" if text else ""


# -- import ---------------------------------------------------------------------------------
def cmd_import(args: argparse.Namespace) -> int:
    summary = import_paths(open_store(args), args.format, args.paths, env=args.env)
    for line in summary.notes:
        print(f"w2stree: {line}", file=sys.stderr)
    for line in summary.errors:
        print(f"w2stree: skipped {line}", file=sys.stderr)
    print(summary.line())
    return 1 if summary.errors else 0


# -- trees, MCTS, pairs: the stages of core.stages over the store -------------------------------------
def _bar(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit="tree", disable=None if total > 1 else True)


def cmd_tree(args: argparse.Namespace) -> int:
    store = open_store(args)
    settings = from_args(TreeSettings, args)
    # a short name (sft-weak) means the model that explored; eval episodes keep their label as stored
    model = args.model if args.source == "eval" else model_arg(store, args.model, args.env)
    with tqdm(desc="trees", unit="tree", disable=None) as bar:  # the count is known once they are grown
        n_trees, n_nodes, n_trajs = grow_trees_stored(store, settings, env=args.env, task=args.task,
                                                      source=args.source, model=model, progress=bar.update)
    if not n_trajs:
        raise UserError(f"no trajectories{_scope(args)}"
                        f"{' from source ' + repr(args.source) if args.source else ''}"
                        f"{' of model ' + repr(model) if model else ''}; "
                        f"run `w2stree import` or `w2stree collect` first{_hint(store, args)}")
    print(f"built {plural(n_trees, 'tree')} ({plural(n_nodes, 'node')}) from {plural(n_trajs, 'trajectory')}, "
          f"merge={args.merge}")
    return 0


def _trees(store: Store, args: argparse.Namespace) -> list[str]:
    ids = store.trees(args.env, args.task)["tree_id"].tolist()
    if not ids:
        raise UserError(f"no trees{_scope(args)}; run `w2stree tree` first{_hint(store, args)}")
    return ids


def _hint(store: Store, args: argparse.Namespace) -> str:
    """Where the store's trees are when `--env` names a world without any (core.names)."""
    return stored_world_hint(store, args.env) if args.env else ""


def _load(store: Store, ids: list[str], desc: str) -> Iterator[list[Tree]]:
    """Trees in chunks, with a progress bar over all of them."""
    with _bar(len(ids), desc) as bar:
        for i in range(0, len(ids), CHUNK):
            yield store.load_trees(tree_ids=ids[i:i + CHUNK])
            bar.update(len(ids[i:i + CHUNK]))


def cmd_mcts(args: argparse.Namespace) -> int:
    settings = from_args(MCTSSettings, args)
    settings.check()
    store = open_store(args)
    ids = _trees(store, args)
    with _bar(len(ids), "mcts") as bar:
        score_trees_stored(store, ids, settings, bar.update)
    print(f"ran MCTS on {plural(len(ids), 'tree')}: {plural(args.iterations, 'iteration')}, c={args.c}, "
          f"rule={args.rule}")
    return 0


def cmd_pairs(args: argparse.Namespace) -> int:
    settings = from_args(PairSettings, args)
    settings.check()
    store = open_store(args)
    ids = _trees(store, args)
    experts = None
    if args.granularity == "trajectory" and args.baseline == "expert":
        experts = expert_trajectories(store, args.env, args.task)
        if not experts:
            raise UserError(f"no expert trajectories{_scope(args)} for the expert baseline; collect them "
                            "(`w2stree collect --policy expert`) or import them, or pass --baseline weak")
    keep, cut = None, [0]
    if args.hard_for:
        scorer = PairScorer.load(model_arg(store, args.hard_for, args.env), store)

        def keep(pairs: list) -> list:
            cut[0] += len(pairs)
            return scorer.ranked_wrong(pairs)
    try:
        with _bar(len(ids), f"pairs ({args.granularity})") as bar:
            total = cut_pairs_stored(store, ids, settings, experts, bar.update, keep)
    finally:
        if args.hard_for:
            scorer.close()
    detail = f" (baseline={args.baseline})" if args.granularity == "trajectory" else f" (value={args.value})"
    if args.hard_for:
        detail += f"; {args.hard_for} ranks {total} of the {plural(cut[0], 'pair')} cut wrong: only those are stored"
    elif not total:
        detail += ": " + no_pair_reason(store, args.env, args.task, args.min_margin)
    print(f"stored {plural(total, args.granularity + ' pair')} from {plural(len(ids), 'tree')}{detail}")
    return 0


# -- export ---------------------------------------------------------------------------------
@contextmanager
def _open_out(out: str, store: Store, force: bool) -> Iterator[IO[str]]:
    """The stream an export writes: stdout for '-', else a temporary file beside OUT that
    replaces OUT only once everything is written. Refuses the store itself, a folder, and an
    existing file without `force`; a failed write (full disk) is one UserError and leaves OUT as
    it was; a closed standard output ends the export quietly."""
    if out == "-":
        with _writing(STDOUT):
            yield sys.stdout
            sys.stdout.flush()
        return
    path = Path(out)
    _check_out(path, store, force)
    if path.exists() and not path.is_file():  # a device or FIFO the user named: write to it as is
        with _writing(out), path.open("w", encoding="utf-8") as fh:
            yield fh
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with _writing(out):
            with tmp.open("w", encoding="utf-8") as fh:
                yield fh
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_out(path: Path, store: Store, force: bool) -> None:
    store_files = {store.path.resolve(), store.path.resolve().with_name(store.path.name + ".wal")}
    if path.resolve() in store_files or (path.exists() and store.path.exists()
                                         and os.path.samefile(path, store.path)):
        raise UserError(f"{path} is the store itself; exporting onto it would destroy it; name another file")
    if path.is_dir():
        raise UserError(f"{path} is a folder; name a file to write, e.g. {path / 'export.jsonl'}")
    if path.is_file() and not force:
        raise UserError(f"{path} exists; pass --force to replace it")
    if not path.parent.is_dir():
        raise UserError(f"folder {path.parent} of the output file does not exist; create it first")


@contextmanager
def _writing(what: str) -> Iterator[None]:
    """Turn an OSError while writing `what` (a file, or STDOUT) into one UserError line. A closed
    standard output (`| head`) is not an error: its BrokenPipeError goes on to `core.cli.main`,
    which ends quietly."""
    try:
        yield
    except OSError as exc:
        if what == STDOUT:
            if isinstance(exc, BrokenPipeError):
                raise
            silence_stdout()
        if isinstance(exc, BrokenPipeError):
            raise UserError(f"{what} was closed before the export was complete (broken pipe)") from None
        kept = "" if what == STDOUT else f"; {what} was left as it was"
        raise UserError(f"writing {what} failed: {exc.strerror or exc}{kept}") from None


def silence_stdout() -> None:
    """Point stdout at /dev/null after it failed, so that Python's flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _write_rows(rows: list[dict[str, Any]], fh: IO[str], as_list: bool) -> None:
    if as_list:
        json.dump(rows, fh, ensure_ascii=False, indent=1)
        fh.write("\n")
    else:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def cmd_export(args: argparse.Namespace) -> int:
    fmt = args.fmt or EXPORT_FORMATS[args.what][0]
    if fmt not in EXPORT_FORMATS[args.what]:
        raise UserError(f"export {args.what} has no --format {fmt}; use one of "
                        f"{', '.join(EXPORT_FORMATS[args.what])}")
    store = open_store(args)
    what = args.what
    if what == "trajectories":
        trajs = store.trajectories(env=args.env, task_id=args.task, source=args.source, model=args.model)
        if not trajs:
            raise UserError(f"no trajectories{_scope(args)} to export; run `w2stree import` first")
        with _open_out(args.out, store, args.force) as fh:
            n = write_jsonl(trajs, fh)
        if args.out != "-":
            print(f"wrote {n} {what} ({fmt}) to {args.out}")
        return 0
    if what == "pairs":
        pairs = store.pairs(env=args.env, task_id=args.task, granularity=args.granularity)
        if not pairs:
            why = pair_blocker(store, args.env, args.task) or (
                f"run `w2stree pairs` first (when it stores none, {no_pair_reason(store, args.env, args.task)})")
            raise UserError(f"no pairs{_scope(args)}{' of granularity ' + args.granularity if args.granularity else ''}"
                            f"; {why}")
        rows = export.pairs_eto(pairs) if fmt == "eto" else export.pairs_trl(pairs)
    else:
        graphs = [g for chunk in _load(store, _trees(store, args), "export") for g in chunk]
        if what == "tree":
            rows = [export.tree_json(g) for g in graphs]
        else:
            ids = [export.best_path_trajectory(g) for g in graphs]
            by_id = {t.traj_id: t for t in store.trajectories(traj_ids=ids)}
            rows = (export.best_paths_eto if fmt == "eto" else export.best_paths_trl)(graphs, by_id)
    n = len(rows)
    with _open_out(args.out, store, args.force) as fh:
        if what == "tree":
            json.dump(rows[0] if n == 1 else rows, fh, ensure_ascii=False, indent=1)
            fh.write("\n")
        else:
            _write_rows(rows, fh, as_list=fmt == "eto")
    if args.out != "-":
        print(f"wrote {n} {what} ({fmt}) to {args.out}")
    return 0
