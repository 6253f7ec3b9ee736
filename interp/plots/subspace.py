"""Figures for the subspace sweep (:mod:`interp.subspace.sweep`), built from its tidy tables.

Each function returns a ``plotly.graph_objects.Figure`` without showing it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from interp._validate import require_columns

__all__ = ["subspace_layer_curves", "subspace_scatter"]


def subspace_scatter(
    summary: pd.DataFrame,
    read_side: pd.DataFrame | None = None,
    *,
    x: str = "mean_R_act",
    y: str = "mean_R_w_combined",
    label_top: int = 8,
    title: str = "Which subspaces explain the tuning delta?",
) -> go.Figure:
    """Two log-log panels of R_act (x) vs R_w (y) per basis: write/mixed bases on the left, read-side
    bases on the right (their R_w is cross-space alignment, not "explains the delta"). Dashed lines
    mark the random-subspace null R = 1; ceilings are black stars (drawn in both panels).

    Args:
        summary: :attr:`SweepResult.summary` (or one table with an ``axis_kind`` column, split here when
            ``read_side`` is None).
        read_side: :attr:`SweepResult.read_side`.
        x: Column on the x axis.
        y: Column on the y axis.
        label_top: Bases labelled per panel, the top ones by ``joint``.
        title: Figure title.

    Returns:
        A plotly ``Figure`` (not shown).
    """
    require_columns(summary, ["basis", "family", "axis_kind", x, y], "summary")
    table = summary if read_side is None else pd.concat([summary, read_side], ignore_index=True)
    require_columns(table, ["basis", "family", "axis_kind", x, y], "read_side")
    ceilings = table[table["axis_kind"] == "ceiling"]
    panels = [
        (table[table["axis_kind"].isin(["write", "mixed"])], "write + mixed (R_w = explains ΔW)"),
        (table[table["axis_kind"] == "read"], "read-side (R_w = cross-space alignment)"),
    ]
    fig = make_subplots(rows=1, cols=2, subplot_titles=[p[1] for p in panels], shared_yaxes=True)
    families = sorted(table.loc[table["axis_kind"] != "ceiling", "family"].unique())
    colors = {f: qualitative.Plotly[i % len(qualitative.Plotly)] for i, f in enumerate(families)}
    positive = table[(table[x] > 0) & (table[y] > 0)]
    lo = min(0.5, float(positive[[x, y]].min().min()) * 0.8) if len(positive) else 0.5
    hi = max(2.0, float(positive[[x, y]].max().max()) * 1.25) if len(positive) else 2.0
    for col, (panel, _) in enumerate(panels, start=1):
        ranked = panel.sort_values("joint", ascending=False) if "joint" in panel else panel
        top = set(ranked["basis"].head(label_top))
        for family in families:
            rows = panel[panel["family"] == family]
            if rows.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=rows[x], y=rows[y], mode="markers+text", name=family, legendgroup=family,
                    showlegend=family not in {t.name for t in fig.data},
                    marker={"size": 9, "color": colors[family], "opacity": 0.85},
                    text=[b if b in top else "" for b in rows["basis"]], textposition="top center",
                    textfont={"size": 9}, hovertext=rows["basis"],
                ),
                row=1, col=col,
            )
        if not ceilings.empty:
            fig.add_trace(
                go.Scatter(
                    x=ceilings[x], y=ceilings[y], mode="markers+text", name="ceiling", legendgroup="ceiling",
                    showlegend=col == 1, marker={"symbol": "star", "size": 15, "color": "black"},
                    text=ceilings["basis"], textposition="bottom center", textfont={"size": 9},
                ),
                row=1, col=col,
            )
        fig.add_hline(y=1.0, line_dash="dash", line_color="gray", row=1, col=col)
        fig.add_vline(x=1.0, line_dash="dash", line_color="gray", row=1, col=col)
        fig.update_xaxes(type="log", range=[_log10(lo), _log10(hi)], title_text="R_act (activation label)",
                         row=1, col=col)
        fig.update_yaxes(type="log", range=[_log10(lo), _log10(hi)], row=1, col=col)
    fig.update_yaxes(title_text="R_w (Frobenius-balanced ΔW_O, ΔW_out)", row=1, col=1)
    fig.update_layout(title=title, height=520, width=1100, legend={"font": {"size": 10}})
    return fig


def subspace_layer_curves(
    per_layer: pd.DataFrame,
    bases: Sequence[str] | None = None,
    *,
    scores: Sequence[str] = ("R_act", "R_w_combined"),
    title: str = "Per-layer concentration",
) -> go.Figure:
    """One panel per score, one line per basis over layers (log y, dashed null at 1).

    Args:
        per_layer: :attr:`SweepResult.per_layer`.
        bases: Bases to draw (default: the 6 with the highest mean R_act, plus the ceilings).
        scores: Score columns, one panel each (default R_act and R_w_combined).
        title: Figure title.

    Returns:
        A plotly ``Figure`` (not shown).
    """
    require_columns(per_layer, ["layer", "basis", "axis_kind", *scores], "per_layer")
    if bases is None:
        means = per_layer[per_layer["axis_kind"] != "ceiling"].groupby("basis")["R_act"].mean()
        bases = list(means.sort_values(ascending=False).index[:6])
        bases += list(per_layer.loc[per_layer["axis_kind"] == "ceiling", "basis"].unique())
    else:
        bases = [bases] if isinstance(bases, str) else list(bases)
        missing = [b for b in bases if b not in set(per_layer["basis"])]
        if missing or not bases:
            raise ValueError(f"bases: {missing or bases} not in the table")
    fig = make_subplots(rows=1, cols=len(scores), subplot_titles=list(scores))
    for i, basis in enumerate(bases):
        rows = per_layer[per_layer["basis"] == basis].sort_values("layer")
        ceiling = rows["axis_kind"].iloc[0] == "ceiling"
        color = "black" if ceiling else qualitative.Plotly[i % len(qualitative.Plotly)]
        for col, score in enumerate(scores, start=1):
            fig.add_trace(
                go.Scatter(
                    x=rows["layer"], y=rows[score], mode="lines+markers", name=basis, legendgroup=basis,
                    showlegend=col == 1,
                    line={"color": color, "dash": "dot" if ceiling else "solid"},
                    marker={"symbol": "star" if ceiling else "circle"},
                ),
                row=1, col=col,
            )
    for col in range(1, len(scores) + 1):
        fig.add_hline(y=1.0, line_dash="dash", line_color="gray", row=1, col=col)
        fig.update_yaxes(type="log", row=1, col=col)
        fig.update_xaxes(title_text="layer", row=1, col=col)
    fig.update_layout(title=title, height=420, width=550 * len(scores))
    return fig


def _log10(v: float) -> float:
    import math

    return math.log10(v)
