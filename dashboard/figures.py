"""Plotly figures for the dashboard, built from trees and frames by pure functions.

Every string that comes from a trajectory goes through `shaping.escape` before it reaches a
figure: Plotly renders `<b>`, `<a>` and friends inside hover and node labels.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import networkx as nx
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import get_colorscale

from core.console import plural
from dashboard.layout import TreeView
from dashboard.shaping import VALUE_LABELS, best_path_edges, escape, fmt, leaf_outcome, node_stats

# Expanded here: plotly.js knows only a few scale names, and traces skip the Python-side expansion.
COLORSCALE = get_colorscale("RdYlGn")  # red = failure (0) ... green = success (1)
NO_VALUE = "#bdbdbd"  # nodes without statistics (e.g. never visited by MCTS)
BEST_PATH = "#2b6cb0"
SUCCESS = "#1a9850"
FAILURE = "#d73027"
SELECTED = "#111111"
NEW = "#f59e0b"  # nodes a finished exploration added
SVG_LIMIT = 1500  # above this many drawn nodes use WebGL markers
LABEL_LIMIT = 150  # above this many drawn nodes skip the visit-count labels
HOVER_CHARS = 90


def _edge_xy(view: TreeView, edges: list[tuple[int, int]]) -> tuple[list, list]:
    """Line coordinates for (parent index, child index) edges, separated by None."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    for p, c in edges:
        xs += [view.x[p], view.x[c], None]
        ys += [view.depth[p], view.depth[c], None]
    return xs, ys


def _trace(cls: type, **props: object) -> object:
    """A trace of our own making, built without Plotly's per-element validation (which is most
    of the figure's build time at thousands of nodes)."""
    return cls(_validate=False, **props)


def _hover(g: nx.DiGraph, view: TreeView, i: int, kind: str) -> str:
    n = view.nodes[i]
    if n < 0:
        members = view.groups[n]
        visits, value = node_stats(g, n, view.groups, "data")
        text = (f"{len(members)} more children folded (children cap)<br>"
                f"visits {visits} · mean reward {fmt(value)}")
    else:
        d = g.nodes[n]
        visits, value = node_stats(g, n)
        mv, q = node_stats(g, n, kind="mcts")
        action = escape(d.get("action", ""), HOVER_CHARS) or "(root)"
        text = (f"node {n} · depth {int(d.get('depth', 0))}<br>{action}<br>"
                f"visits {visits} · mean reward {fmt(value)} · "
                f"{int(d.get('successes', 0) or 0)} success / {int(d.get('failures', 0) or 0)} fail<br>"
                f"MCTS visits {mv} · Q {fmt(q)}")
        if d.get("true_value") is not None:
            steps = d.get("true_steps")
            text += (f"<br>true value {fmt(float(d['true_value']))} · expert "
                     + (f"{plural(steps, 'step')} from here" if steps is not None else "does not finish"))
        outcome = leaf_outcome(g, n)
        if outcome:
            text += f"<br>trajectory end: {outcome}"
    if view.hidden[i] and n >= 0:
        text += f"<br>{view.hidden[i]} deeper nodes hidden (depth cap)"
    return text + {"mcts": "<br><i>MCTS statistics shown</i>", "true": "<br><i>true values shown</i>"}.get(kind, "")


def tree_figure(g: nx.DiGraph, view: TreeView, kind: str = "data",
                selected: int | None = None, highlight: Collection[int] = ()) -> go.Figure:
    """The tidy node-link tree: colour = mean reward (data), Q (mcts) or the true value by the
    env's expert (true) with a colour bar,
    marker size and label = visits, MCTS best path in blue, trajectory ends as stars (success)
    or crosses (failure), folded children as squares, `highlight`ed nodes (new branches) ringed
    in orange. Node markers carry their node id in
    `customdata` (group ids are negative) so a click can be mapped back to the node."""
    n = len(view.nodes)
    stats = [node_stats(g, v, view.groups, kind) for v in view.nodes]
    visits = np.array([s[0] for s in stats], dtype=float)
    values = np.array([s[1] for s in stats], dtype=float)
    vmax = max(visits.max() if n else 1.0, 1.0)
    sizes = 9 + 21 * np.sqrt(visits / vmax)

    symbols, line_colors = [], []
    for v in view.nodes:
        outcome = leaf_outcome(g, v) if v >= 0 else None
        symbols.append("square" if v < 0 else "star" if outcome == "success"
                       else "x" if outcome == "failure" else "circle")
        line_colors.append(SUCCESS if outcome == "success" else FAILURE if outcome == "failure"
                           else "#555555")
    finite = ~np.isnan(values)
    colors = np.where(finite, values, 0.0)

    best = best_path_edges(g)
    pos = {v: i for i, v in enumerate(view.nodes)}
    all_edges = [(p, i) for i, p in enumerate(view.parents) if p >= 0]
    best_edges = [(pos[a], pos[b]) for a, b in best if a in pos and b in pos]

    scatter = go.Scattergl if n > SVG_LIMIT else go.Scatter
    traces = []
    ex, ey = _edge_xy(view, all_edges)
    traces.append(_trace(go.Scatter, x=ex, y=ey, mode="lines", line={"color": "#b0b0b0", "width": 1},
                             hoverinfo="skip", showlegend=False, name="edges"))
    bx, by = _edge_xy(view, best_edges)
    traces.append(_trace(go.Scatter, x=bx or [None], y=by or [None], mode="lines",
                             line={"color": BEST_PATH, "width": 4}, hoverinfo="skip",
                             name="MCTS best path"))
    label = VALUE_LABELS[kind]
    marker = {
        "size": sizes, "symbol": symbols,
        "color": colors, "colorscale": COLORSCALE, "cmin": 0.0, "cmax": 1.0,
        "colorbar": {"title": {"text": label}, "thickness": 12},
        "line": {"color": line_colors, "width": 1.5},
    }
    show_labels = n <= LABEL_LIMIT
    traces.append(_trace(scatter,
        x=view.x, y=view.depth, mode="markers+text" if show_labels else "markers",
        marker=marker,
        text=[str(int(v)) for v in visits] if show_labels else None,
        textposition="top center", textfont={"size": 9, "color": "#444444"},
        hovertext=[_hover(g, view, i, kind) for i in range(n)], hoverinfo="text",
        customdata=list(view.nodes), name="nodes", showlegend=False,
    ))
    if (~finite).any():  # grey out nodes with no statistic of this kind
        idx = np.flatnonzero(~finite)
        traces.append(_trace(scatter,
            x=view.x[idx], y=view.depth[idx], mode="markers", hoverinfo="skip",
            marker={"size": sizes[idx], "color": NO_VALUE, "symbol": [symbols[i] for i in idx]},
            name="no statistics", customdata=[view.nodes[i] for i in idx],
        ))
    for name, symbol, color in (("success end", "star", SUCCESS), ("failure end", "x", FAILURE),
                                ("folded children", "square", "#888888")):
        traces.append(_trace(go.Scatter, x=[None], y=[None], mode="markers", name=name,
                                 marker={"symbol": symbol, "color": color, "size": 10}))
    new = [pos[v] for v in highlight if v in pos]
    if new:
        traces.append(_trace(go.Scatter,
            x=view.x[new], y=view.depth[new], mode="markers", hoverinfo="skip", name="new branch",
            marker={"size": sizes[new] + 8, "color": NEW, "symbol": "circle-open", "line": {"width": 3}},
            customdata=[view.nodes[i] for i in new],
        ))
    if selected is not None and selected in pos:
        i = pos[selected]
        traces.append(_trace(go.Scatter,
            x=[view.x[i]], y=[view.depth[i]], mode="markers", hoverinfo="skip", name="selected",
            # open symbols are drawn in the marker colour
            marker={"size": sizes[i] + 10, "color": SELECTED, "symbol": "circle-open",
                    "line": {"width": 2.5}},
            customdata=[selected],
        ))
    fig = go.Figure(data=traces, _validate=False)
    depth = int(view.depth.max()) if n else 0
    fig.update_layout(
        height=int(min(260 + 70 * depth, 1400)), margin={"l": 10, "r": 10, "t": 30, "b": 40},
        xaxis={"visible": False}, yaxis={"visible": False, "autorange": "reversed"},
        plot_bgcolor="white", clickmode="event+select", dragmode="pan", hovermode="closest",
        # Below the plot: the toolbar (modebar) sits in the top-right corner and would cover it.
        legend={"orientation": "h", "y": -0.01, "x": 0, "yanchor": "top"},
    )
    return fig


def icicle_figure(g: nx.DiGraph, kind: str = "data", max_depth: int | None = 6) -> go.Figure:
    """An icicle overview of the whole tree sized by visits, coloured by mean reward, Q or true value."""
    ids, parents, labels, values, colors, hover = [], [], [], [], [], []
    for n in nx.dfs_preorder_nodes(g, 0):
        preds = list(g.predecessors(n))
        visits, _ = node_stats(g, n)
        _, value = node_stats(g, n, kind=kind)
        action = escape(g.nodes[n].get("action", ""), 40) or "(root)"
        ids.append(str(n))
        parents.append(str(preds[0]) if preds else "")
        labels.append(action)
        values.append(visits)
        colors.append(0.0 if math.isnan(value) else value)
        hover.append(f"node {n}<br>{escape(g.nodes[n].get('action', ''), HOVER_CHARS)}<br>"
                     f"visits {visits} · {VALUE_LABELS[kind]} {fmt(value)}")
    fig = go.Figure(data=[_trace(
        go.Icicle, ids=ids, parents=parents, labels=labels, values=values, branchvalues="total",
        marker={"colors": colors, "colorscale": COLORSCALE, "cmin": 0, "cmax": 1,
                "colorbar": {"title": {"text": VALUE_LABELS[kind]},
                             "thickness": 12}},
        hovertext=hover, hoverinfo="text", maxdepth=(max_depth + 1) if max_depth else -1,
        tiling={"orientation": "v"},
    )], _validate=False)
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig


def line_figure(df: pd.DataFrame, x: str, y: str, color: str, title: str = "",
                y_title: str | None = None, x_title: str | None = None) -> go.Figure:
    """One line per value of `color` (escaped in the legend)."""
    fig = go.Figure()
    for key, part in df.groupby(color, sort=False):
        part = part.sort_values(x)
        fig.add_trace(go.Scatter(x=part[x], y=part[y], mode="lines+markers",
                                 name=escape(key, 40)))
    fig.update_layout(title=title or None, height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis_title=x_title or x, yaxis_title=y_title or y,
                      legend={"orientation": "h", "y": -0.25})
    return fig


def metrics_figure(metrics: pd.DataFrame, names: list[str], title: str) -> go.Figure | None:
    """Training curves (step on x) for the metric names present in a job's metrics frame
    (columns step, name, value); None when none of them was logged yet."""
    part = metrics[metrics["name"].isin(names)] if not metrics.empty else metrics
    if part.empty:
        return None
    return line_figure(part, "step", "value", "name", title=title, y_title="")
