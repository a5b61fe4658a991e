"""The Results page's pure builders (dashboard.result_figures) on frames from core.results."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from core.results import COMPARISON_COLUMNS, K_COLUMNS
from dashboard.result_figures import BOOTSTRAP, T_INTERVAL, comparison_cells, comparison_figure, k_figure

NAN = math.nan


def _comparisons() -> pd.DataFrame:
    rows = [("TreeDPO", "SFT-strong", 4, "reward", 0.01, -0.02, 0.05, -0.04, 0.06, 3, 200),
            ("TreeDPO", "SFT-strong", 4, "success", 0.03, 0.0, 0.07, NAN, NAN, 1, 200),
            ("<b>X</b>", "SFT-weak", 4, "reward", 0.2, 0.1, 0.3, NAN, NAN, 1, 50),
            ("MCTS", "SFT-continued", 4, "reward", NAN, NAN, NAN, NAN, NAN, 0, 0)]
    return pd.DataFrame([dict(a=a, b=b, k=k, metric=m, diff=d, lo=lo, hi=hi, resampled="seeds+tasks", t_lo=tl,
                              t_hi=th, n_seeds=s, n_tasks=t) for a, b, k, m, d, lo, hi, tl, th, s, t in rows],
                        columns=COMPARISON_COLUMNS)


def test_comparison_cells_show_both_intervals_one_seed_and_no_data():
    cells = comparison_cells(_comparisons())
    first = cells.iloc[0].to_dict()
    assert first == {"comparison": "TreeDPO − SFT-strong", "K": 4, "metric": "reward", "diff": "+0.010",
                     BOOTSTRAP: "[-0.020, +0.050]", T_INTERVAL: "[-0.040, +0.060]", "seeds x tasks": "3 x 200"}
    assert cells.iloc[1][T_INTERVAL] == "1 seed" and cells.iloc[1][BOOTSTRAP] == "[+0.000, +0.070]"
    assert cells.iloc[3][["diff", BOOTSTRAP, T_INTERVAL]].tolist() == ["no data", "", ""]


def test_comparison_figure_draws_each_interval_around_its_difference():
    fig = comparison_figure(_comparisons(), "reward")
    boot, t = fig.data
    assert list(boot.x) == [0.01, 0.2]  # the no-data comparison is left out
    assert list(boot.error_x.array) == pytest.approx([0.04, 0.1])  # hi - diff
    assert list(boot.error_x.arrayminus) == pytest.approx([0.03, 0.1])  # diff - lo
    assert list(t.x) == [0.01] and list(t.error_x.array) == pytest.approx([0.05])  # one seed: no t bar
    assert list(t.error_x.arrayminus) == pytest.approx([0.05])
    labels = list(fig.layout.yaxis.ticktext)
    assert labels[0] == "TreeDPO − SFT-strong (K=4)" and "<b>" not in labels[1] and "&lt;b&gt;" in labels[1]
    assert len(comparison_figure(_comparisons(), "success").data[0].x) == 1


def test_k_figure_is_the_mean_per_k_with_t_bars():
    table = pd.DataFrame([
        dict(method="TreeDPO", k=1, metric="reward", mean=0.4, t_lo=0.3, t_hi=0.55, n_seeds=3),
        dict(method="TreeDPO", k=4, metric="reward", mean=0.6, t_lo=NAN, t_hi=NAN, n_seeds=1),
        dict(method="ETO-DPO", k=1, metric="reward", mean=NAN, t_lo=NAN, t_hi=NAN, n_seeds=0),
        dict(method="ETO-DPO", k=4, metric="reward", mean=NAN, t_lo=NAN, t_hi=NAN, n_seeds=0),
        dict(method="TreeDPO", k=1, metric="success", mean=0.2, t_lo=0.1, t_hi=0.3, n_seeds=3),
    ], columns=K_COLUMNS)
    fig = k_figure(table, "reward")
    (tree,) = fig.data  # ETO-DPO has no data at any K
    assert tree.name == "TreeDPO" and list(tree.x) == [1, 4] and list(tree.y) == [0.4, 0.6]
    assert list(tree.error_y.array) == pytest.approx([0.15, 0.0]) and list(tree.error_y.arrayminus) == pytest.approx([0.1, 0.0])
    assert list(fig.layout.xaxis.tickvals) == [1, 4] and fig.layout.yaxis.title.text == "average reward"
    assert k_figure(table, "success").layout.yaxis.title.text == "success rate"
