"""Figures for the weight-circuit analyses (:mod:`interp.circuits`), built from their tidy tables.

Every function takes a DataFrame produced by :mod:`interp.circuits` (or one with the same columns)
and returns a ``plotly.graph_objects.Figure`` without showing it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp._validate import require_columns

__all__ = [
    "circuit_heatmap",
    "mlp_delta_by_layer",
    "pc_comparison",
    "projection_bars",
    "zscore_delta_lines",
    "zscore_lines",
]

_CIRCUIT_TITLES = {"qk": "QK affinity", "vo": "VO decomposition"}
_MODEL_COLORS = {"base": "#1f77b4", "tuned": "#ff7f0e", "model": "#1f77b4"}
_RELATION_DASH = {"self": "solid", "opposite": "dash"}
_RELATION_COLORS = {"self": "#2ca02c", "opposite": "#d62728"}




def _circuit_by_direction_grid(
    frame: pd.DataFrame, directions: Sequence[str] | None, title_prefix: str
) -> tuple[go.Figure, list[str], list[str]]:
    """An empty subplot grid, rows = the frame's circuits, columns = the chosen query directions."""
    directions = _pick(directions, frame["query"], "directions")
    circuits = list(dict.fromkeys(frame["circuit"]))
    fig = make_subplots(
        rows=len(circuits), cols=len(directions), shared_xaxes=True,
        subplot_titles=[f"{title_prefix}{_CIRCUIT_TITLES.get(c, c)}: {d}" for c in circuits for d in directions],
    )
    return fig, circuits, directions


def _pick(values: Sequence[str] | None, available: Sequence[str], name: str) -> list[str]:
    available = list(dict.fromkeys(available))
    if values is None:
        return available
    values = [str(v) for v in ([values] if isinstance(values, str) else values)]
    missing = [v for v in values if v not in available]
    if missing or not values:
        raise ValueError(f"{name}: {missing or values} not in the table (available: {available[:12]})")
    return values


def zscore_lines(
    series: pd.DataFrame,
    directions: Sequence[str] | None = None,
    *,
    value: str = "z",
    pca_layer: int | None = None,
    title: str | None = None,
) -> go.Figure:
    """Layer-wise lines of a :func:`~interp.circuits.self_opposite` table: rows = circuits (QK, VO),
    columns = directions; one colour per model (base/tuned), solid = self, dashed = opposite; a dotted
    vertical line at ``pca_layer`` (where the directions were read).

    Args:
        series: Self/opposite rows (``query``, ``relation``, ``layer``, ``model``, ``circuit``, ``value``).
        directions: Directions to draw, one column each (default all in ``series``).
        value: Column to plot (default the z-score).
        pca_layer: Layer to mark with a vertical line, or None.
        title: Figure title (default: a description of the figure).

    Returns:
        A plotly ``Figure`` (not shown).
    """
    require_columns(series, ["query", "relation", "layer", "model", "circuit", value], "series")
    fig, circuits, directions = _circuit_by_direction_grid(series, directions, "")
    for r, circuit in enumerate(circuits, start=1):
        for c, direction in enumerate(directions, start=1):
            rows = series[(series["circuit"] == circuit) & (series["query"] == direction)]
            for (model, relation), part in rows.groupby(["model", "relation"], sort=False):
                part = part.groupby("layer", sort=True)[value].mean()
                arrow = "→" if relation == "self" else "→ −"
                fig.add_trace(
                    go.Scatter(
                        x=part.index, y=part.to_numpy(), mode="lines+markers",
                        name=f"{model}: {direction} {arrow}{direction}",
                        legendgroup=f"{model}-{relation}", showlegend=(r == 1 and c == 1),
                        line=dict(color=_MODEL_COLORS.get(model), dash=_RELATION_DASH.get(relation, "dot")),
                    ),
                    row=r, col=c,
                )
            fig.add_hline(y=0, line=dict(color="gray", dash="dot", width=1), row=r, col=c)
            if pca_layer is not None:
                fig.add_vline(x=pca_layer, line=dict(color="red", dash="dot", width=1), row=r, col=c)
    fig.update_xaxes(title_text="layer", row=len(circuits))
    fig.update_yaxes(title_text=f"{value} (vs random)" if value == "z" else value, col=1)
    fig.update_layout(title=title or "Self and opposite circuits by layer (base vs tuned)")
    return fig


def zscore_delta_lines(
    deltas: pd.DataFrame, directions: Sequence[str] | None = None, *, value: str = "delta_z", title: str | None = None
) -> go.Figure:
    """Tuned − base lines of a :func:`~interp.circuits.tuned_minus_base` table of self/opposite rows,
    filled to zero: rows = circuits, columns = directions, one colour per relation.

    Args:
        deltas: The wide tuned − base table (``delta_z`` per circuit, relation, query and layer).
        directions: Directions to draw (default all).
        value: Column to plot.
        title: Figure title (default: a description of the figure).

    Returns:
        A plotly ``Figure`` (not shown).
    """
    require_columns(deltas, ["query", "relation", "layer", "circuit", value], "deltas")
    fig, circuits, directions = _circuit_by_direction_grid(deltas, directions, "Tuning effect, ")
    for r, circuit in enumerate(circuits, start=1):
        for c, direction in enumerate(directions, start=1):
            rows = deltas[(deltas["circuit"] == circuit) & (deltas["query"] == direction)]
            for relation, part in rows.groupby("relation", sort=False):
                part = part.groupby("layer", sort=True)[value].mean()
                fig.add_trace(
                    go.Scatter(
                        x=part.index, y=part.to_numpy(), mode="lines+markers", fill="tozeroy",
                        name=f"{relation}", legendgroup=relation, showlegend=(r == 1 and c == 1),
                        line=dict(color=_RELATION_COLORS.get(relation)),
                    ),
                    row=r, col=c,
                )
            fig.add_hline(y=0, line=dict(color="black", width=1), row=r, col=c)
    fig.update_xaxes(title_text="layer", row=len(circuits))
    fig.update_yaxes(title_text="Δz (tuned − base)" if value == "delta_z" else value, col=1)
    fig.update_layout(title=title or "Tuning effect on self/opposite circuits")
    return fig


def pc_comparison(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Mean |Δz| by direction number from :func:`~interp.circuits.mean_abs_delta`: one panel per
    circuit, one line per relation (is PC1 special?).

    Args:
        table: ``mean_abs_delta`` rows (``number``, ``relation``, ``mean_abs_delta_z``, ``circuit``), e.g.
            :attr:`~interp.circuits.CircuitStudy.summary`.
        title: Figure title (default: a description of the figure).

    Returns:
        A plotly ``Figure`` (not shown).
    """
    require_columns(table, ["number", "relation", "mean_abs_delta_z", "circuit"], "table")
    circuits = list(dict.fromkeys(table["circuit"]))
    fig = make_subplots(rows=1, cols=len(circuits),
                        subplot_titles=[f"{_CIRCUIT_TITLES.get(c, c)}: tuning effect by PC" for c in circuits])
    for c, circuit in enumerate(circuits, start=1):
        rows = table[table["circuit"] == circuit]
        for relation, part in rows.groupby("relation", sort=False):
            part = part.sort_values("number")
            fig.add_trace(
                go.Scatter(x=part["number"], y=part["mean_abs_delta_z"], mode="lines+markers", name=relation,
                           legendgroup=relation, showlegend=(c == 1),
                           line=dict(color=_RELATION_COLORS.get(relation)), text=part.get("direction")),
                row=1, col=c,
            )
    n_layers = int(table["n_layers"].max()) if "n_layers" in table.columns else None
    fig.update_xaxes(title_text="PC number", dtick=1)
    fig.update_yaxes(title_text=f"mean |Δz| over {n_layers} layers" if n_layers else "mean |Δz|", col=1)
    fig.update_layout(title=title or "Tuning effect by PC number")
    return fig


def circuit_heatmap(
    table: pd.DataFrame,
    *,
    layer: int,
    circuit: str | None = None,
    model: str | None = None,
    head: int | None = None,
    value: str = "z",
    title: str | None = None,
) -> go.Figure:
    """Query × key heatmap of ``value`` at one layer from a :func:`~interp.circuits.weight_circuits`
    (or :func:`~interp.circuits.circuit_table`) table.

    Args:
        table: The circuit table.
        layer: The layer shown.
        circuit: "qk" or "vo" (required when the table holds both).
        model: "base", "tuned" or "model" (required when the table holds several).
        head: For per-head tables, the head shown (None: the mean over heads).
        value: Column shown (default the z-score).
        title: Figure title (default: a description of the figure).

    Returns:
        A plotly ``Figure`` (not shown).
    """
    require_columns(table, ["layer", "query", "key", value], "table")
    rows = table[table["layer"] == layer]
    if rows.empty:
        raise ValueError(f"layer: {layer!r} is not in the table (layers {sorted(table['layer'].unique())[:12]})")
    for column, wanted in (("circuit", circuit), ("model", model)):
        if column in rows.columns:
            options = list(dict.fromkeys(rows[column]))
            if wanted is None and len(options) > 1:
                raise ValueError(f"{column}: the table holds several ({options}); choose one")
            if wanted is not None:
                if wanted not in options:
                    raise ValueError(f"{column}: {wanted!r} is not in the table ({options})")
                rows = rows[rows[column] == wanted]
    if "head" in rows.columns and head is not None:
        if head not in set(rows["head"]):
            raise ValueError(f"head: {head!r} is not in the table")
        rows = rows[rows["head"] == head]
    queries = list(dict.fromkeys(rows["query"]))
    keys = list(dict.fromkeys(rows["key"]))
    grid = rows.groupby(["query", "key"], sort=False)[value].mean().unstack("key").reindex(index=queries, columns=keys)
    fig = go.Figure(go.Heatmap(z=grid.to_numpy(), x=keys, y=queries, colorscale="RdBu_r", zmid=0,
                               colorbar=dict(title=value)))
    label = _CIRCUIT_TITLES.get(circuit or "", circuit or "circuit")
    where = f"layer {layer}" + ("" if head is None else f" head {head}") + ("" if model is None else f" ({model})")
    fig.update_layout(title=title or f"{label}: {value}, {where}", xaxis_title="key / probe",
                      yaxis_title="query / key", yaxis_autorange="reversed")
    return fig


def mlp_delta_by_layer(table: pd.DataFrame, directions: Sequence[str] | None = None, *, title: str | None = None) -> go.Figure:
    """The MLP-pass figure's two panels from :meth:`~interp.circuits.MLPPassComparison.table`: ``delta_norm``
    by layer per direction, and base vs tuned output norms per direction.

    Args:
        table: The MLP-pass table (``layer``, ``direction``, ``base_norm``, ``tuned_norm``, ``delta_norm``).
        directions: Directions to draw (default all).
        title: Figure title (default: a description of the figure).

    Returns:
        A plotly ``Figure`` (not shown).
    """
    require_columns(table, ["layer", "direction", "base_norm", "tuned_norm", "delta_norm"], "table")
    directions = _pick(directions, table["direction"], "directions")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["MLP output Δ (tuned − base)", "MLP output norms"])
    for direction in directions:
        rows = table[table["direction"] == direction].sort_values("layer")
        fig.add_trace(go.Scatter(x=rows["layer"], y=rows["delta_norm"], mode="lines+markers", name=f"|Δ| {direction}"),
                      row=1, col=1)
        for model, dash in (("base", "solid"), ("tuned", "dash")):
            fig.add_trace(
                go.Scatter(x=rows["layer"], y=rows[f"{model}_norm"], mode="lines+markers",
                           name=f"{model} {direction}", line=dict(dash=dash, color=_MODEL_COLORS[model])),
                row=1, col=2,
            )
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(title_text="‖Δ‖", row=1, col=1)
    fig.update_yaxes(title_text="‖output‖", row=1, col=2)
    fig.update_layout(title=title or "MLP pass of directions: base vs tuned")
    return fig


def projection_bars(table: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Horizontal bars of ``projection`` per probe, from :func:`~interp.circuits.delta_projections`
    (or its :func:`~interp.circuits.top_bottom` selection), largest at the top.

    Args:
        table: Rows with ``probe`` and ``projection`` (e.g. :attr:`~interp.circuits.CircuitStudy.projection_ends`).
        title: Figure title (default: a description of the figure).

    Returns:
        A plotly ``Figure`` (not shown).
    """
    require_columns(table, ["probe", "projection"], "table")
    rows = table.sort_values("projection")
    colors = ["#d62728" if v < 0 else "#2ca02c" for v in rows["projection"]]
    fig = go.Figure(go.Bar(x=rows["projection"], y=rows["probe"], orientation="h", marker_color=colors))
    where = ""
    if {"layer", "direction"} <= set(table.columns) and len(table):
        where = f": {table['direction'].iloc[0]} at layer {table['layer'].iloc[0]}"
    fig.update_layout(title=title or f"What tuning adds to the MLP output{where}",
                      xaxis_title="Δ · probe (unit)", yaxis_title="probe", height=max(300, 22 * len(rows) + 120))
    return fig
