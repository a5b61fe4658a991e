"""How right the stored labels are, against the oracle's true values (`core.oracle`).

* **Label accuracy** of the stored pairs: a pair is `right` when its chosen node's true value
  beats the rejected node's, `wrong` when it is lower, `equal` when they tie, `unknown` when
  either is missing (no oracle run, a prefix that did not replay, or a pair not cut from a tree,
  such as the ETO trajectory pairs). Accuracy = right / (right + wrong + equal).
  **By steps**: `right` when the expert needs fewer steps from the chosen node than from the
  rejected one to reach the pair's better true value; a side that reaches less (a lower true
  value: a wrong purchase that ends the episode at once is not "shorter") or cannot finish counts
  as infinitely long (two such sides are `equal`). So pairs of different true values get the same
  verdict by steps as by value, and pairs of equal ones are judged by the expert's steps. Both per
  granularity, overall and by margin bucket (the pair's own value margin, chosen - rejected, as it
  was cut).
* **Values against the truth**: Pearson and Spearman correlation of MCTS Q (over nodes MCTS
  visited) and of the data mean (over nodes trajectories visited) with the true value.
* **Model ranking** (`core.pair_ranking`): added by the CLI when a model is given.

`oracle_report` returns all of it as a dict (`w2stree oracle --report --format json` prints it);
`label_table` the label accuracy as a DataFrame.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.console import plural
from core.pair_ranking import ranking_summary, score_pairs

if TYPE_CHECKING:
    from core.store import Store

#: Margin buckets (left-closed) of the pair's own value margin, chosen - rejected.
MARGIN_EDGES = (-math.inf, 0.0, 0.1, 0.25, 0.5, math.inf)
MARGIN_LABELS = ("< 0", "0 - 0.1", "0.1 - 0.25", "0.25 - 0.5", ">= 0.5")
VERDICTS = ("right", "wrong", "equal", "unknown")


def _verdict(chosen: np.ndarray, rejected: np.ndarray, known: np.ndarray, higher_wins: bool) -> np.ndarray:
    """right / wrong / equal per pair (unknown where not `known`)."""
    c, r = (chosen, rejected) if higher_wins else (rejected, chosen)
    out = np.where(c > r, "right", np.where(c < r, "wrong", "equal")).astype(object)
    out[~known] = "unknown"
    return out


def judge_pairs(truths: pd.DataFrame) -> pd.DataFrame:
    """`Store.pair_truths` with two verdict columns: `by_value` and `by_steps` (module docstring)."""
    df = truths.copy()
    cv, rv = df["chosen_true"].to_numpy(float), df["rejected_true"].to_numpy(float)
    known = np.isfinite(cv) & np.isfinite(rv)
    df["by_value"] = _verdict(cv, rv, known, higher_wins=True)
    # steps to the pair's better value: a side that reaches less, or cannot finish, is infinitely long
    best = np.fmax(cv, rv)
    cs = np.where(cv < best, np.inf, df["chosen_steps"].to_numpy(float, na_value=np.inf))
    rs = np.where(rv < best, np.inf, df["rejected_steps"].to_numpy(float, na_value=np.inf))
    df["by_steps"] = _verdict(cs, rs, known, higher_wins=False)
    df["margin_bucket"] = pd.cut(df["margin"].astype(float), list(MARGIN_EDGES), right=False,
                                 labels=list(MARGIN_LABELS)).astype(object)
    return df


def _counts(part: pd.DataFrame, col: str) -> dict[str, Any]:
    n = {v: int((part[col] == v).sum()) for v in VERDICTS}
    judged = n["right"] + n["wrong"] + n["equal"]
    return {**n, "accuracy": n["right"] / judged if judged else None}


def label_table(judged: pd.DataFrame) -> pd.DataFrame:
    """One row per (granularity, margin bucket or "all"): pairs, the by-value counts and accuracy,
    and the by-steps counts and accuracy (`steps_` columns)."""
    rows = []
    for gran, part in judged.groupby("granularity", sort=True):
        groups = [("all", part)] + [(b, part[part["margin_bucket"] == b]) for b in MARGIN_LABELS]
        for bucket, sub in groups:
            if sub.empty:
                continue
            steps = {f"steps_{k}": v for k, v in _counts(sub, "by_steps").items() if k != "unknown"}
            rows.append({"granularity": gran, "margin": bucket, "pairs": len(sub), **_counts(sub, "by_value"),
                         **steps})
    cols = ["granularity", "margin", "pairs", *VERDICTS, "accuracy", "steps_right", "steps_wrong",
            "steps_equal", "steps_accuracy"]
    return pd.DataFrame(rows, columns=cols)


def correlation(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Pearson and Spearman correlation of two samples (None where undefined: fewer than 2
    points, or a constant sample)."""
    from scipy.stats import pearsonr, spearmanr

    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"nodes": int(len(x)), "pearson": None, "spearman": None}
    return {"nodes": int(len(x)), "pearson": float(pearsonr(x, y).statistic),
            "spearman": float(spearmanr(x, y).statistic)}


def value_correlations(nodes: pd.DataFrame) -> list[dict[str, Any]]:
    """MCTS Q (nodes with MCTS visits) and data mean (nodes with visits) against the true value."""
    out = []
    for name, visits, value in (("mcts", "mcts_visits", "mcts_value"), ("data", "visits", "data_value")):
        part = nodes[nodes[visits].fillna(0) > 0]
        out.append({"value": name, **correlation(part[value].to_numpy(float, na_value=np.nan),
                                                 part["true_value"].to_numpy(float, na_value=np.nan))})
    return out


def oracle_report(store: Store, env: str | None = None, task_id: str | None = None) -> dict[str, Any]:
    """The whole report as a dict: `nodes` (counts), `labels` (`label_table` rows), `values`
    (`value_correlations`)."""
    nodes = store.node_truths(env, task_id)
    judged = judge_pairs(store.pair_truths(env, task_id))
    known = nodes["true_value"].notna()
    return {
        "env": env, "task": task_id,
        "nodes": {"trees": int(nodes["tree_id"].nunique()), "nodes": len(nodes), "known": int(known.sum()),
                  "expert_wins": int((nodes["true_value"] >= 1.0).sum())},
        "labels": label_table(judged).replace({np.nan: None}).to_dict("records"),
        "values": value_correlations(nodes),
    }


def report_lines(report: dict[str, Any]) -> list[str]:
    """The report as text lines (the CLI's table format)."""
    n = report["nodes"]
    lines = [f"nodes with a true value: {n['known']} / {n['nodes']} in {plural(n['trees'], 'tree')} "
             f"(the expert wins from {n['expert_wins']})", "", "label accuracy (chosen true value > rejected):"]
    table = pd.DataFrame(report["labels"])
    if table.empty:
        lines.append("  no pairs")
    else:
        for col in ("accuracy", "steps_accuracy"):
            table[col] = table[col].map(lambda x: "–" if x is None or x != x else f"{x:.3f}")
        lines += ["  " + ln for ln in table.to_string(index=False).splitlines()]
    lines += ["", "values against the true value:"]
    for v in report["values"]:
        r, rho = (("–" if x is None else f"{x:+.3f}") for x in (v["pearson"], v["spearman"]))
        lines.append(f"  {v['value']:<5} over {plural(v['nodes'], 'node')}: Pearson {r}, Spearman {rho}")
    for r in report.get("ranking", []):
        if not r["pairs"]:
            continue
        lines += ["", f"{r['granularity']} pairs: model {r['model']} ranks {r['right']} / {r['pairs']} right "
                      f"(accuracy {r['accuracy']:.3f}, {plural(r['equal'], 'tie')}; mean log-prob chosen "
                      f"{r['mean_chosen']:.2f}, rejected {r['mean_rejected']:.2f})"]
        if r.get("reward_accuracy") is not None:
            lines.append(f"  DPO implicit reward against {r['ref']} at step 0: accuracy {r['reward_accuracy']:.3f} "
                         f"({r['reward_right']} right, {plural(r['reward_equal'], 'tie')})")
    return lines


def model_ranking(store: Store, model: str, ref: str | None = None, env: str | None = None,
                  task_id: str | None = None) -> list[dict[str, Any]]:
    """How `model` ranks the stored pairs (`core.pair_ranking.ranking_summary`), over all of them
    ("all") and per granularity; with `ref`, the DPO implicit-reward accuracy at step 0 too."""
    pairs = store.pairs(env=env, task_id=task_id)
    lp = score_pairs(model, pairs, store)
    ref_lp = score_pairs(ref, pairs, store) if ref else None
    grans = np.array([p.granularity for p in pairs], dtype=object)
    rows = []
    for gran in ["all", *sorted(set(grans.tolist()))]:
        pick = np.ones(len(pairs), bool) if gran == "all" else grans == gran
        rows.append({"granularity": gran, "model": model, "ref": ref,
                     **ranking_summary(lp[pick], ref_lp[pick] if ref_lp is not None else None)})
    return rows
