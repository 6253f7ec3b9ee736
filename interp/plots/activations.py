"""Figures for the activation analyses (:mod:`interp.activations`), built from their results.

Every function takes data (an :class:`~interp.activations.AttentionPattern` or a tidy DataFrame from
the analysis) and returns a ``plotly.graph_objects.Figure`` without showing it.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots
from transformer_lens.utilities import to_numpy

from interp._validate import require_columns
from interp.activations.attention_metrics import AttentionPattern


def attention_heatmap(pattern: AttentionPattern, *, max_tokens: int | None = None, title: str | None = None) -> go.Figure:
    """Heatmap of ``pattern[query, key]`` (one head, or the head mean when ``pattern.head`` is None, as
    in the attention-patterns notebook's last-layer heatmap) with token labels (``i:token``, so repeats stay apart).

    For an interactive view (hover a token), use :meth:`~interp.activations.AttentionPattern.view`.

    Args:
        pattern: From :func:`~interp.activations.attention_pattern` (``head=None``: the head mean).
        max_tokens: Show only the first ``max_tokens`` positions (default all).
        title: Figure title (default: a description of the figure).

    Returns:
        A plotly ``Figure`` (not shown).
    """
    if not isinstance(pattern, AttentionPattern):
        raise TypeError(f"pattern: expected an AttentionPattern (see interp.activations.attention_pattern), got {type(pattern).__name__}")
    n = len(pattern.tokens) if max_tokens is None else min(max_tokens, len(pattern.tokens))
    labels = [f"{i}:{t!r}"[: 24] for i, t in enumerate(pattern.tokens[:n])]
    fig = go.Figure(go.Heatmap(z=to_numpy(pattern.pattern[:n, :n]), x=labels, y=labels, colorscale="Blues",
                               zmin=0, zmax=1, colorbar=dict(title="attention")))
    which = "mean over heads" if pattern.head is None else f"head {pattern.head}"
    fig.update_layout(title=title or f"Attention pattern, layer {pattern.layer}, {which}",
                      xaxis_title="key", yaxis_title="query", yaxis_autorange="reversed")
    return fig


def entropy_by_layer(layer_frame: pd.DataFrame, *, value: str = "entropy", by: str = "label",
                     title: str | None = None) -> go.Figure:
    """One line per ``by`` group (e.g. prompt variant): ``value`` against layer, averaged within the group.

    Args:
        layer_frame: Rows with ``layer``, ``value`` and ``by`` (e.g. ``AttentionMetrics.layer_frame()``).
        value: Column to plot.
        by: Column whose values get one line each.
        title: Figure title (default: a description of the figure).

    Returns:
        A plotly ``Figure`` (not shown).
    """
    require_columns(layer_frame, ["layer", value, by], "layer_frame")
    means = layer_frame.groupby([by, "layer"], sort=False)[value].mean().reset_index()
    fig = go.Figure()
    for group, rows in means.groupby(by, sort=False):
        fig.add_trace(go.Scatter(x=rows["layer"], y=rows[value], mode="lines+markers", name=str(group)))
    default = f"{value} by layer" + (" (H / ln n_keys)" if "normalized_entropy" in value
                                     else " (nats)" if "entropy" in value else "")
    fig.update_layout(title=title or default,
                      xaxis_title="layer", yaxis_title=value, legend_title=by)
    return fig


def head_metric_heatmap(frame: pd.DataFrame, value: str, *, title: str | None = None,
                        colorscale: str = "Viridis", zmid: float | None = None) -> go.Figure:
    """Layer × head heatmap of ``value`` (averaged over any other rows, e.g. prompts).

    Args:
        frame: Rows with ``layer``, ``head`` and ``value``.
        value: Column to show.
        title: Figure title (default: a description of the figure).
        colorscale: Plotly colour scale (e.g. "RdBu" for deltas).
        zmid: Value at the middle of the colour scale (e.g. 0 for deltas).

    Returns:
        A plotly ``Figure`` (not shown).
    """
    require_columns(frame, ["layer", "head", value])
    grid = frame.groupby(["layer", "head"])[value].mean().unstack("head").sort_index()
    fig = go.Figure(go.Heatmap(z=grid.to_numpy(), x=[str(h) for h in grid.columns], y=[str(layer) for layer in grid.index],
                               colorscale=colorscale, zmid=zmid, colorbar=dict(title=value)))
    fig.update_layout(title=title or f"{value} per head", xaxis_title="head", yaxis_title="layer",
                      yaxis_autorange="reversed")
    return fig


def similarity_densities(histograms: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """The Q/K/V similarity 2 × 2 panel: density curves of neuron similarities per block, target (top) vs
    neighbour (bottom), within-matrix (QQ, KK, VV; left) vs across-matrix (QK, QV, KV; right); the
    shuffled-matrix baseline is the dashed grey curve in every within-matrix panel.

    Args:
        histograms: :attr:`~interp.activations.QKVSimilarityStudy.histograms`.
        title: Figure title (default: a description of the figure).

    Returns:
        A plotly ``Figure`` (not shown).
    """
    require_columns(histograms, ["condition", "block", "bin_center", "density"], "histograms")
    if "head" in histograms.columns:
        histograms = histograms.groupby(["condition", "block", "bin_center"], as_index=False)["density"].mean()
    fig = make_subplots(rows=2, cols=2, shared_xaxes=True, subplot_titles=(
        "target: within-matrix", "target: across-matrix", "neighbour: within-matrix", "neighbour: across-matrix"))
    colors = {"QQ": "#1f77b4", "KK": "#ff7f0e", "VV": "#2ca02c", "QK": "#d62728", "QV": "#9467bd", "KV": "#8c564b"}
    shuffled = histograms[histograms["condition"] == "shuffled"]
    for row, condition in enumerate(("target", "neighbour"), start=1):
        for col, blocks in enumerate((("QQ", "KK", "VV"), ("QK", "QV", "KV")), start=1):
            for block in blocks:
                rows = histograms[(histograms["condition"] == condition) & (histograms["block"] == block)]
                fig.add_trace(go.Scatter(x=rows["bin_center"], y=rows["density"], mode="lines", name=block,
                                         line=dict(color=colors[block]), legendgroup=block,
                                         showlegend=row == 1), row=row, col=col)
            if col == 1 and len(shuffled):
                fig.add_trace(go.Scatter(x=shuffled["bin_center"], y=shuffled["density"], mode="lines",
                                         name="shuffled", line=dict(color="gray", dash="dash"),
                                         legendgroup="shuffled", showlegend=row == 1), row=row, col=col)
    fig.update_xaxes(title_text="similarity", range=[-1, 1], row=2)
    fig.update_yaxes(title_text="density", rangemode="tozero")
    fig.update_layout(title=title or "Q/K/V neuron similarity densities")
    return fig


def entropy_lines_by_model(layer_frame: pd.DataFrame, *, value: str = "entropy", title: str | None = None) -> go.Figure:
    """Entropy by layer from a pair's ``layer_frame``: one colour per variant ``label``, solid = base, dashed = tuned.

    Args:
        layer_frame: A pair layer frame (``model`` in "base", "tuned"; ``label``, ``layer``, ``value``).
        value: ``"entropy"`` (nats) or ``"normalized_entropy"`` (H / ln n_keys, comparable across prompt lengths).
        title: Figure title (default: a description of the figure).

    Returns:
        A plotly ``Figure`` (not shown).
    """
    require_columns(layer_frame, ("model", "label", "layer", value), "layer_frame")
    frame = layer_frame[layer_frame["model"].isin(["base", "tuned"])]
    frame = frame.assign(series=frame["label"] + " · " + frame["model"])
    normalized = value.startswith("normalized")
    default = ("Last-token normalised attention entropy H / ln n_keys by layer (mean over heads), base vs tuned"
               if normalized else "Last-token attention entropy by layer (mean over heads), base vs tuned")
    figure = entropy_by_layer(frame, value=value, by="series", title=title or default)
    colours = {label: qualitative.Plotly[i % 10] for i, label in enumerate(dict.fromkeys(frame["label"]))}
    for trace in figure.data:
        label, model = trace.name.rsplit(" · ", 1)
        trace.line = {"color": colours[label], "dash": "dash" if model == "tuned" else "solid"}
    figure.update_layout(yaxis_title="H / ln n_keys" if normalized else "entropy (nats)", legend_title="variant · model")
    return figure
