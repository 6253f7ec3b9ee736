"""Figures of the weight delta of a pair (:func:`interp.subspace.weight_diff.delta_norms`)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from interp._validate import require_columns

__all__ = ["relative_change_heatmap"]


def relative_change_heatmap(norms: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Heatmap of ``relative`` = ‖ΔW‖_F / ‖W‖_F per (tensor, layer) of a :func:`delta_norms` table.

    Args:
        norms: Rows with ``layer``, ``tensor`` and ``relative``.
        title: Figure title (default: a description of the figure).

    Returns:
        A plotly ``Figure`` (not shown).
    """
    require_columns(norms, ("layer", "tensor", "relative"), "norms")
    grid = norms.pivot(index="tensor", columns="layer", values="relative")
    figure = go.Figure(go.Heatmap(z=grid.values, x=[str(c) for c in grid.columns], y=list(grid.index),
                                  colorscale="Viridis", colorbar={"title": "‖ΔW‖/‖W‖"}))
    figure.update_layout(title=title or "Relative weight change per layer and tensor", xaxis_title="layer",
                         yaxis_title="tensor", height=380)
    return figure
