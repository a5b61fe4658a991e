"""Errors that reach the user as one clear line (the CLI and dashboard print them as-is)."""

from __future__ import annotations

import unicodedata


class UserError(Exception):
    """Bad input from the user: names the thing that is wrong and how to fix it."""


def one_line(text: str) -> str:
    """`text` on one line: line breaks and other control characters (a file name may hold any
    of them) written as escapes (`\\n`, `\\x1b`, `\\u2028`), everything else as it is."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else _escape(c) for c in text)


def _escape(c: str) -> str:
    if unicodedata.category(c) in ("Zs",):  # an unusual space: still one line
        return c
    return c.encode("unicode_escape").decode("ascii")
