"""Plotly figures built from interp's analysis results (figures only; the numbers come from the analysis
modules). Every function returns a ``plotly.graph_objects.Figure`` without showing it.

One module per analysis: :mod:`~interp.plots.circuits`, :mod:`~interp.plots.activations`,
:mod:`~interp.plots.subspace`, :mod:`~interp.plots.weights`;
:mod:`~interp.plots.attention_view` renders interactive circuitsvis attention views in a notebook
(the ``notebook`` extra; import it from its module).
"""

from interp.plots.activations import (
    attention_heatmap,
    entropy_by_layer,
    entropy_lines_by_model,
    head_metric_heatmap,
    similarity_densities,
)
from interp.plots.circuits import (
    circuit_heatmap,
    mlp_delta_by_layer,
    pc_comparison,
    projection_bars,
    zscore_delta_lines,
    zscore_lines,
)
from interp.plots.subspace import subspace_layer_curves, subspace_scatter
from interp.plots.weights import relative_change_heatmap

__all__ = [
    "attention_heatmap", "entropy_by_layer", "entropy_lines_by_model", "head_metric_heatmap", "similarity_densities",
    "circuit_heatmap", "mlp_delta_by_layer", "pc_comparison", "projection_bars", "zscore_delta_lines", "zscore_lines",
    "subspace_layer_curves", "subspace_scatter",
    "relative_change_heatmap",
]
