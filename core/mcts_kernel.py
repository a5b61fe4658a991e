"""The compiled MCTS loop of core.mcts (numba, cached on disk next to this module).

Kept apart so that `import core.mcts` does not import numba; the first call of `search` in a
fresh checkout compiles it (a few seconds), later processes load the cached machine code.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True)
def _select(p: int, kid_off: np.ndarray, kids: np.ndarray, vis: np.ndarray, val: np.ndarray,
            csum: np.ndarray, prior: np.ndarray, c: float, eps: float, mode: int) -> int:
    lo, hi = kid_off[p], kid_off[p + 1]
    if mode == 2:  # puct: Q (0 if unvisited) + c * prior * sqrt(P) / (1 + n); first maximum wins
        root_p = math.sqrt(csum[p])
        best, best_u = kids[lo], -math.inf
        for j in range(lo, hi):
            k = kids[j]
            nk = vis[k]
            q = val[k] / nk if nk else 0.0
            u = q + c * prior[k] * root_p / (1 + nk)
            if u > best_u:
                best, best_u = k, u
        return best
    total = csum[p] + eps  # UCB1: +inf for unvisited children, first maximum wins
    if total <= 0:
        return kids[lo]
    lp = math.log(total)
    best, best_u = kids[lo], -math.inf
    for j in range(lo, hi):
        k = kids[j]
        nk = vis[k]
        if nk == 0:
            return k  # +inf: nothing earlier was infinite, so this is the first maximum
        u = val[k] / nk + c * math.sqrt(lp / nk)
        if u > best_u:
            best, best_u = k, u
    return best


@numba.njit(cache=True)
def search(roots: np.ndarray, kid_off: np.ndarray, kids: np.ndarray, vis: np.ndarray, val: np.ndarray,
           leaf_value: np.ndarray, prior: np.ndarray, iterations: int, c: float, eps: float,
           mode: int) -> None:
    """`iterations` MCTS iterations from every root, updating `vis` / `val` in place.

    Children of node p: `kids[kid_off[p]:kid_off[p + 1]]` (ascending id). `mode`: 0 uct (leaf
    value = `leaf_value`, root not backed up), 1 early-release (leaf value = the leaf's running
    mean, root backed up), 2 puct (as uct, PUCT choice with `prior`).
    """
    n = len(vis)
    csum = np.zeros(n, np.int64)  # P of every node: the sum of its children's visits
    for p in range(n):
        for j in range(kid_off[p], kid_off[p + 1]):
            csum[p] += vis[kids[j]]
    path = np.empty(n + 1, np.int64)
    for r in roots:
        for _ in range(iterations):
            node = r
            m = 0
            while kid_off[node + 1] > kid_off[node]:
                k = _select(node, kid_off, kids, vis, val, csum, prior, c, eps, mode)
                csum[node] += 1
                path[m] = k
                m += 1
                node = k
            if mode == 1:
                v = val[node] / vis[node] if vis[node] > 0 else 0.0
                vis[r] += 1
                val[r] += v
            else:
                v = leaf_value[node]
            for i in range(m):
                vis[path[i]] += 1
                val[path[i]] += v
