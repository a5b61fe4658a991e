"""Import and export of trajectory files: the project's JSONL, ETO / TraTree files, and the
training-data exports (ETO preference JSON, TRL conversational rows, tree JSON).

Modules: `jsonl` (the project format), `eto` (ETO / TraTree readers), `importer` (files → store,
one transaction per file), `export` (pairs, best paths, trees, trajectories → files).
"""

from __future__ import annotations

from core.errors import UserError, one_line


class FormatError(UserError):
    """A malformed input file: one line naming the file, the record and the field."""

    def __init__(self, file: str, record: str, field: str, problem: str) -> None:
        self.file, self.record, self.field, self.problem = file, record, field, problem
        where = f"{file}: {record}"
        # one line whatever the file, record and field are named (a name may hold a line break)
        super().__init__(one_line(f"{where}: field '{field}': {problem}" if field else f"{where}: {problem}"))
