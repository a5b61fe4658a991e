"""Form inputs generated from a settings dataclass's fields (`core.settings`, `core.fields`): the
label, help text, default, choices and least value the CLI's flags have, so that a form and
`w2stree` offer the same thing."""

from __future__ import annotations

import dataclasses
from typing import Any

from core.fields import field_kind


def setting_input(where: Any, cls: type, name: str, key: str, *, value: Any = None, label: str | None = None,
                  **widget: Any) -> Any:
    """A Streamlit input in `where` (`st`, a column, a form) for field `name` of `cls`: a selectbox
    of its choices, a number input from its least value, a toggle or a text input. `value`
    replaces the field's default, `label` its label; `widget` passes on (max_value, step, ...)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    meta, kind = f.metadata, field_kind(f)
    default = f.default if value is None else value
    kw = dict(key=key, help=meta.get("help") or None)
    text = label or meta.get("label") or name.replace("_", " ").capitalize()
    if "choices" in meta:
        options = list(meta["choices"])
        return where.selectbox(text, options, index=options.index(default) if default in options else 0, **kw)
    if kind == "bool":
        return where.toggle(text, value=bool(default), **kw)
    if kind in ("int", "float"):
        cast = int if kind == "int" else float
        widget.setdefault("min_value", None if meta.get("min") is None else cast(meta["min"]))
        return cast(where.number_input(text, value=cast(default), **widget, **kw))
    return where.text_input(text, "" if default is None else str(default), **kw)
