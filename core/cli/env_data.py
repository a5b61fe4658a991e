"""Environment data commands.

    w2stree data alfworld --from DIR|bundled [--to DEST]
"""

from __future__ import annotations

import argparse

from core.envs import alfworld_data


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `data` verb to the `w2stree` parser."""
    p = sub.add_parser("data", help="set up an environment's data files (alfworld)",
                       description="Set up the data files an environment reads, offline.")
    which = p.add_subparsers(dest="data_env", metavar="ENV", required=True)
    a = which.add_parser(
        "alfworld", help="unpack ALFWorld game files into data/alfworld (or $ALFWORLD_DATA)",
        description="Unpack ALFWorld's TextWorld game files from DIR: a folder of split archives "
                    "(train*.tar.xz, valid_seen*.tar.xz, valid_unseen*.tar.xz, each holding <split>/...) "
                    "with logic/alfred.pddl and logic/alfred.twl2, or a folder in ALFWorld's own layout "
                    "(what alfworld-download fills). `--from bundled` takes the few real games shipped "
                    "with w2stree. The destination is where the alfworld env looks: $ALFWORLD_DATA when "
                    "set, else <W2STREE_HOME or ./data>/alfworld.")
    a.add_argument("--from", dest="source", required=True, metavar="DIR", help="source folder, or 'bundled'")
    a.add_argument("--to", dest="dest", metavar="DEST", help="destination (default: where the env looks)")
    a.set_defaults(func=cmd_data_alfworld)


def cmd_data_alfworld(args: argparse.Namespace) -> int:
    from pathlib import Path

    dest = alfworld_data.unpack(args.source, Path(args.dest) if args.dest else None)
    report = alfworld_data.split_report(dest)
    print(f"ALFWorld data in {dest}: " + ", ".join(f"{k} {v}" for k, v in report.items()))
    if args.dest and Path(args.dest).resolve() != alfworld_data.data_root():
        print(f"point the env at it with: export ALFWORLD_DATA={dest}")
    return 0
