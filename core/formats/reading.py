"""Reading input files the store can hold: only regular files, strict UTF-8, JSON with values
that are text, finite numbers and 64-bit integers, nested at most MAX_DEPTH levels.

Every problem is a FormatError naming the file, the record and the field, raised before anything
is written: a FIFO or device is refused without being opened for reading (it would block), a
symlink loop, an empty file and a Git LFS pointer get their own messages, and a lone surrogate
(`"\\ud800"`, not text), `1e400` (infinite), a 400-digit integer or 100,000-deep nesting are
validation errors rather than tracebacks from the JSON parser, Arrow or DuckDB.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from core.formats import FormatError

MAX_DEPTH = 64  # nesting of free-form values (meta) kept as JSON in the store
INT_BITS = 63  # the store's integers are signed 64-bit
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
# What can hide a value the store cannot hold in JSON text that parsed: a surrogate escape, a
# long run of digits not after a decimal point (huge integer, or a float that overflows to inf;
# the long fractions of ordinary floats do not count), a big exponent, NaN/Infinity.
_SUSPECT = re.compile(r"\\u[dD][89a-fA-F]|(?<![.\d])\d{16}|[eE][+-]?\d{3}|NaN|Infinity")


def read_text(path: Path) -> str:
    """The text of a regular UTF-8 file; FormatError for anything else (see the module docstring)."""
    return "\n".join(line for _, line in read_lines(path))


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of every line of a regular UTF-8 file, read one line at a time (a big
    file is never held whole), without their line breaks; FormatError as `read_text` says, the
    bad line named. Only `\\n` ends a line (JSON strings may hold U+2028 and the like)."""
    file = str(path)
    with _open_regular(path) as fh:
        try:
            empty = True
            for n, raw in enumerate(fh, 1):
                if n == 1:
                    if raw.startswith(LFS_POINTER):
                        raise FormatError(file, "file", "", "a Git LFS pointer, not the data itself; fetch the "
                                                            "file with `git lfs pull` and import again")
                    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise FormatError(file, f"line {n}", "", f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                                                             f"column {exc.start + 1}); convert the file to UTF-8") from None
                empty = empty and (not line or line.isspace())
                yield n, line.removesuffix("\n")
        except OSError as exc:  # a read that fails midway (EIO)
            raise FormatError(file, "file", "", _os_problem(exc, path)) from None
    if empty:
        raise FormatError(file, "file", "", "empty file: there is nothing to import")


def ends_with_newline(path: Path) -> bool:
    """Whether the (regular, non-empty) file at `path` ends with a line break."""
    with _open_regular(path) as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file; FormatError otherwise."""
    file = str(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise FormatError(file, "file", "", _os_problem(exc, path)) from None
    if stat.S_ISDIR(st.st_mode):
        raise FormatError(file, "file", "", "is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise FormatError(file, "file", "", "not a regular file (a FIFO, device or socket); only "
                                            "regular files are read")
    try:
        # O_NONBLOCK: should the path become a FIFO after the check, opening it does not wait
        fh = os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb")
    except OSError as exc:
        raise FormatError(file, "file", "", _os_problem(exc, path)) from None
    if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
        fh.close()
        raise FormatError(file, "file", "", "not a regular file; only regular files are read")
    return fh


def _os_problem(exc: OSError, path: Path) -> str:
    if exc.errno == errno.ELOOP:
        return "a symbolic link loop (the link leads back to itself); fix or remove the link"
    if exc.errno == errno.ENOENT:
        return "a broken symbolic link" if path.is_symlink() else "no such file"
    return f"cannot read: {exc.strerror or exc}"


def parse_json(text: str, file: str, record: str | None = None, extra_data_hint: str = "") -> Any:
    """`json.loads` with every failure a FormatError (record: `record`, or the error's line);
    `extra_data_hint` is added when the text holds more than one JSON value."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = record or f"line {exc.lineno}"
        hint = extra_data_hint if exc.msg == "Extra data" else ""
        raise FormatError(file, where, "", f"not valid JSON ({exc.msg} at column {exc.colno}){hint}") from None
    except RecursionError:
        raise FormatError(file, record or "file", "", "nested too deeply to read (over ~1000 levels)") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise FormatError(file, record or "file", "", f"a number too long to read ({exc})") from None


def suspect(text: str) -> bool:
    """Whether parsed JSON `text` may hold a value `check_value` rejects (a fast pre-check)."""
    return _SUSPECT.search(text) is not None


def check_value(value: Any, file: str, record: str, field: str = "", depth_limit: int | None = None) -> None:
    """FormatError at the first part of `value` the store cannot hold: a string with a lone
    surrogate, a non-finite float, an integer beyond 64 bits, or (with `depth_limit`) nesting
    deeper than that."""
    found = _bad(value, field, 0, depth_limit)
    if found:
        raise FormatError(file, record, *found)


def _bad(v: Any, path: str, depth: int, limit: int | None) -> tuple[str, str] | None:
    t = type(v)
    if t is str:
        return None if _is_text(v) else (path, "contains a lone surrogate (\\ud800-\\udfff), which is "
                                                "not text; fix the text or the file's encoding")
    if t is float:
        return None if math.isfinite(v) else (path, f"must be a finite number, got {v}")
    if t is int:
        return None if v.bit_length() <= INT_BITS else (path, "integer too large for the store (more than "
                                                              "64 bits)")
    if t is dict or t is list:
        if limit is not None and depth >= limit:
            return path, f"nested deeper than {limit} levels"
        items = v.items() if t is dict else enumerate(v)
        for k, x in items:
            if t is dict and not _is_text(k):
                return path, "has a key with a lone surrogate (\\ud800-\\udfff), which is not text"
            found = _bad(x, f"{path}.{k}" if t is dict and path else str(k) if t is dict else f"{path}[{k}]",
                         depth + 1, limit)
            if found:
                return found
    return None


def _is_text(s: str) -> bool:
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
