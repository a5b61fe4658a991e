"""Intervals for paired comparisons: a bootstrap over tasks, a hierarchical bootstrap over seeds
and tasks, and the t-interval over seeds.

The experiment's unit of replication is the seed (each seed re-draws the data, trains every
method and evaluates it), and within a seed the test tasks. An interval that resamples only
tasks ignores how much a method's gain moves from seed to seed; the hierarchical bootstrap
resamples both levels, and the t-interval over the per-seed mean differences is the classical
check on the seed level alone.

Pure numpy (no scipy): the t quantile comes from the closed-form t distribution of an integer
number of degrees of freedom, inverted by bisection.
"""

from __future__ import annotations

import math

import numpy as np

Interval = tuple[float, float, float]
NAN3: Interval = (math.nan, math.nan, math.nan)


def bootstrap_mean(diffs: np.ndarray, n_boot: int = 10_000, seed: int = 0) -> Interval:
    """(mean, 2.5th, 97.5th percentile) of the mean of `diffs` under resampling with replacement."""
    diffs = np.asarray(diffs, dtype=float)
    if diffs.size == 0:
        return NAN3
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, diffs.size, size=(n_boot, diffs.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(diffs.mean()), float(lo), float(hi)


def hierarchical_bootstrap(diffs: np.ndarray, n_boot: int = 10_000, seed: int = 0) -> Interval:
    """(mean, 2.5th, 97.5th percentile) of the mean of a seeds x tasks table of paired
    differences when both levels are resampled: each draw picks seeds with replacement and
    tasks with replacement, and applies the same task draw to every picked seed (the tasks are
    the same test tasks in every seed, so their difficulty is shared). With one seed this is
    `bootstrap_mean` of that seed's row, draw for draw."""
    d = np.asarray(diffs, dtype=float)
    if d.ndim != 2 or d.size == 0:
        return NAN3
    n_seeds, n_tasks = d.shape
    rng = np.random.default_rng(seed)
    tasks = rng.integers(0, n_tasks, size=(n_boot, n_tasks))  # drawn first: one seed == bootstrap_mean
    # seeds x draws: each seed's mean over the drawn tasks (a seed at a time: draws x tasks in memory)
    per_seed = np.stack([row[tasks].mean(axis=1) for row in d])
    if n_seeds == 1:
        means = per_seed[0]
    else:
        picks = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
        means = np.take_along_axis(per_seed.T, picks, axis=1).mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer `df` (closed form; Abramowitz & Stegun 26.7.3/4)."""
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + s * math.cos(theta) * total)
    term = total = 1.0  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
    for k in range(1, df // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_quantile(p: float, df: int) -> float:
    """The `p` quantile (p > 0.5) of Student's t with integer `df` >= 1, to ~1e-10."""
    if df < 1 or not 0.5 < p < 1:
        raise ValueError(f"t_quantile needs df >= 1 and 0.5 < p < 1, got df={df}, p={p}")
    target, lo, hi = 2 * p - 1, 0.0, 1.0
    while _t_two_sided(hi, df) < target:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_two_sided(mid, df) < target else (lo, mid)
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2


def t_interval(values: np.ndarray) -> Interval:
    """(mean, lower, upper) of the 95 % t-interval of the mean of `values` (one per seed):
    mean ± t(0.975, n-1) · sd / sqrt(n). With fewer than two values the bounds are NaN."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return NAN3
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    half = t_quantile(0.975, v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mean, mean - half, mean + half
