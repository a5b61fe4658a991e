"""Command-line flags generated from a settings or config dataclass, and the dataclass built back.

One flag per field (`min_margin` -> `--min-margin`, or the field's `metadata["flags"]`), with the
field's help text, its `choices`, a whole-number type from its `min` (`core.cli.context.int_in`),
`--x / --no-x` for a boolean, and `metadata["metavar"]`. A field without a default is a required
flag. `w2stree train` (`core.train.config`), `tree`, `mcts`, `pairs`, `explore`, `grow` and
`pipeline` (`core.settings`) take their flags this way; `core.fields` declares the fields.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from typing import Any

from core.cli.context import int_in
from core.fields import field_kind, flag

_TYPES = {"int": int, "float": float, "str": str}


def add_fields(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
               only: Iterable[str] | None = None, skip: Iterable[str] = (), unset: bool = False,
               prefix: str = "", **changes: dict[str, Any]) -> None:
    """Add a flag for each field of dataclass `cls` (those in `only`, in field order; none in
    `skip`) to `parser`. Defaults are the fields' (named in the help), or None with `unset` (a
    later step fills them in, as a training preset does). `prefix` names the flags and their
    destinations `--<prefix>-<field>`; `changes[field]` overrides that flag's argparse keywords."""
    wanted = None if only is None else set(only)
    for f in dataclasses.fields(cls):
        if f.name in skip or (wanted is not None and f.name not in wanted):
            continue
        meta, kind = f.metadata, field_kind(f)
        name = f"{prefix}_{f.name}" if prefix else f.name
        flags = meta.get("flags", (flag(name),)) if not prefix else (flag(name),)
        default = None if unset or f.default is dataclasses.MISSING else f.default
        help_ = meta.get("help", "")
        if default is not None and not isinstance(default, bool):
            help_ += f" (default {default})"
        kw: dict[str, Any] = dict(dest=name, default=default, help=help_)
        if kind == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = int_in(meta["min"]) if kind == "int" and "min" in meta else _TYPES.get(kind, str)
            kw["choices"] = meta.get("choices")
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and not unset:
            kw["required"] = True
        kw.update(changes.get(f.name, {}))
        if kind != "bool" and kw["choices"] is None:  # argparse shows the choices themselves otherwise
            kw["metavar"] = kw.get("metavar") or meta.get("metavar", name.upper())
        parser.add_argument(*flags, **kw)


def field_values(cls: type, args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """Field name -> parsed value of the flags `add_fields` added for `cls` (fields without a flag
    left out)."""
    out = {}
    for f in dataclasses.fields(cls):
        dest = f"{prefix}_{f.name}" if prefix else f.name
        if hasattr(args, dest):
            out[f.name] = getattr(args, dest)
    return out


def from_args(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """An instance of `cls` from the parsed flags `add_fields` added, with `given` fields on top."""
    return cls(**{**field_values(cls, args), **given})
