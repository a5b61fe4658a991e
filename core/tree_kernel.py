"""Compiled inner loops of tree building (numba, cached on disk next to this module).

Kept apart so that `import core.tree` does not import numba: `core.tree` imports it on first
use; the first call in a fresh checkout compiles it (about a second), later processes load the
cached machine code.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def first_in_group(group: np.ndarray, codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Per row, whether its code is the first of that code in its group: rows come grouped
    (each group's rows contiguous), codes are 0..n_codes-1. One pass, no hashing or sorting."""
    seen = np.full(n_codes, -1, np.int64)  # the group a code was last seen in
    out = np.empty(len(codes), np.bool_)
    for i in range(len(codes)):
        c = codes[i]
        out[i] = seen[c] != group[i]
        seen[c] = group[i]
    return out
