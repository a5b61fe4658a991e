"""The intervals of core.stats against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.stats import bootstrap_mean, hierarchical_bootstrap, t_interval, t_quantile


def test_t_quantiles_match_the_tables():
    # two-sided 95 % critical values of Student's t (any statistics table)
    for df, q in ((1, 12.706205), (2, 4.302653), (3, 3.182446), (4, 2.776445), (9, 2.262157), (30, 2.042272)):
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-6)
    with pytest.raises(ValueError, match="df >= 1"):
        t_quantile(0.975, 0)


def test_t_interval_over_three_seeds_by_hand():
    # the TreeDPO - SFT-strong per-seed means
    seeds = [0.002, 0.011, -0.023]
    mean = sum(seeds) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in seeds) / 2)
    half = 4.302653 * sd / math.sqrt(3)
    m, lo, hi = t_interval(np.array(seeds))
    assert m == pytest.approx(mean) and lo == pytest.approx(mean - half, abs=1e-6)
    assert hi == pytest.approx(mean + half, abs=1e-6)
    assert (round(lo, 3), round(hi, 3)) == (-0.047, 0.040)


def test_t_interval_of_one_seed_has_no_bounds():
    m, lo, hi = t_interval(np.array([0.3]))
    assert m == 0.3 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(x) for x in t_interval(np.array([])))


def test_bootstrap_of_a_constant_difference_is_that_constant():
    assert bootstrap_mean(np.array([0.25, 0.25, 0.25])) == (0.25, 0.25, 0.25)


def test_bootstrap_interval_matches_the_resampled_spread():
    mean, lo, hi = bootstrap_mean(np.array([0.0, 1.0] * 50), n_boot=4000)
    assert mean == 0.5
    # the mean of 100 Bernoulli(0.5) draws: sd 0.05, so the 95% interval is about 0.5 ± 0.098
    assert lo == pytest.approx(0.402, abs=0.02) and hi == pytest.approx(0.598, abs=0.02)


def test_hierarchical_bootstrap_of_one_seed_is_the_task_bootstrap():
    row = np.random.default_rng(3).normal(0.1, 0.3, size=40)
    assert hierarchical_bootstrap(row[None, :], n_boot=2000, seed=7) == bootstrap_mean(row, n_boot=2000, seed=7)


def test_identical_seeds_add_nothing_to_the_task_bootstrap():
    row = np.random.default_rng(4).normal(0.0, 0.2, size=30)
    same = np.tile(row, (3, 1))
    assert hierarchical_bootstrap(same, n_boot=2000) == pytest.approx(bootstrap_mean(row, n_boot=2000))


def test_without_task_variation_the_interval_is_the_seed_spread():
    # every task of seed s differs by c_s: resampling tasks changes nothing, so the draws are the
    # means of three seeds drawn from {0, 0.1, 0.2}; all-0 and all-0.2 draws each have chance 1/27
    # (3.7 % > 2.5 %), so the percentile interval is exactly [0, 0.2]
    d = np.repeat(np.array([[0.0], [0.1], [0.2]]), 50, axis=1)
    mean, lo, hi = hierarchical_bootstrap(d, n_boot=4000)
    assert mean == pytest.approx(0.1) and lo == pytest.approx(0.0) and hi == pytest.approx(0.2)
    # the per-task bootstrap of the seed-averaged differences sees no variation at all
    assert bootstrap_mean(d.mean(axis=0)) == pytest.approx((0.1, 0.1, 0.1))


def test_hierarchical_interval_is_wider_than_the_task_interval_when_seeds_disagree():
    rng = np.random.default_rng(5)
    d = rng.normal(0.0, 0.3, size=(3, 200)) + np.array([[0.05], [0.0], [-0.05]])
    _, lo, hi = hierarchical_bootstrap(d, n_boot=3000)
    _, tlo, thi = bootstrap_mean(d.mean(axis=0), n_boot=3000)
    assert hi - lo > 1.5 * (thi - tlo)
    assert all(math.isnan(x) for x in hierarchical_bootstrap(np.zeros((0, 0))))
