"""Dataclass fields that carry their help text and what they take, for typed settings and configs.

A field's metadata holds `help` (the CLI's and the dashboard's text), and optionally `choices`,
`min`, `noun` (how a message names it), `label` (a form's), `metavar` and `flags` (the CLI's).
`core.settings` and `core.train.config` declare their fields this way; `core.cli.fields` makes
flags of them and `dashboard.settings_form` form inputs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from core.errors import UserError


def setting(default: Any = dataclasses.MISSING, help: str = "", **meta: Any) -> Any:  # noqa: A002
    """A dataclass field with its help text and what it takes (`choices`, `min`, `label` for a
    form, `metavar` and `flags` for the CLI) in its metadata."""
    return field(default=default, metadata={"help": help, **meta})


def field_help(cls: type) -> dict[str, str]:
    """Field name -> help text of a settings or config dataclass."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def field_kind(f: dataclasses.Field) -> str:
    """The field's type name without an optional None (`float | None` -> `float`)."""
    names = [t.strip() for t in str(getattr(f.type, "__name__", f.type)).split("|")]
    return next((t for t in names if t != "None"), "str")


def flag(name: str) -> str:
    """The command-line flag of a field (`min_margin` -> `--min-margin`)."""
    return "--" + name.replace("_", "-")


def check_fields(obj: Any, what: str) -> None:
    """A one-line UserError for the first field of `obj` outside its metadata's `choices` or
    below its `min` (a None of an optional field passes); `what` names the settings in the
    message (`unknown pair granularity 'node'; use one of ...`)."""
    for f in dataclasses.fields(obj):
        value, choices, least = getattr(obj, f.name), f.metadata.get("choices"), f.metadata.get("min")
        if value is None and f.default is None:
            continue
        if choices is not None and value not in choices:
            noun = f.metadata.get("noun") or f"{what} {f.name.replace('_', ' ')}"
            raise UserError(f"unknown {noun} {value!r}; use one of {', '.join(choices)}")
        if least is not None and not value >= least:  # `not >=`: NaN fails too
            raise UserError(f"{flag(f.name)} must be at least {least}, got {value}")
