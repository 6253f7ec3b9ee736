"""Figures of interp.plots.circuits: built from the tables, returned (not shown), data traceable to
the table. Tables come from circuit_table on seeded random values (shapes only matter here)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from interp.circuits import circuit_table, mean_abs_delta, self_opposite, top_bottom, tuned_minus_base
from interp.plots.circuits import (
    circuit_heatmap,
    mlp_delta_by_layer,
    pc_comparison,
    projection_bars,
    zscore_delta_lines,
    zscore_lines,
)

NAMES = ["PC1", "-PC1", "PC2", "-PC2", "Random1", "Random2", "Random3"]
LAYERS = [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def table():
    gen = torch.Generator().manual_seed(601)
    parts = []
    for circuit in ("qk", "vo"):
        for model in ("base", "tuned"):
            values = torch.randn(len(LAYERS), 7, 7, generator=gen)
            parts.append(circuit_table(values, layers=LAYERS, query_names=NAMES).assign(circuit=circuit, model=model))
    return pd.concat(parts, ignore_index=True)


def test_zscore_lines_plot_the_series(table):
    series = self_opposite(table)
    fig = zscore_lines(series, ["PC1", "PC2"], pca_layer=2)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) == 2 * 2 * 2 * 2  # circuits x directions x models x relations
    trace = next(t for t in fig.data if t.name == "tuned: PC2 → −PC2" and t.xaxis == "x4")
    rows = series[(series["circuit"] == "vo") & (series["model"] == "tuned") & (series["query"] == "PC2")
                  & (series["relation"] == "opposite")].sort_values("layer")
    np.testing.assert_allclose(trace.y, rows["z"].to_numpy())
    assert any(shape.x0 == 2 for shape in fig.layout.shapes)  # the PCA-layer marker


def test_delta_and_pc_comparison_figures(table):
    deltas = tuned_minus_base(self_opposite(table))
    fig = zscore_delta_lines(deltas, ["PC1"])
    assert len(fig.data) == 2 * 2 and all(t.fill == "tozeroy" for t in fig.data)
    summary = mean_abs_delta(deltas, [1, 2, 3])
    fig = pc_comparison(summary)
    trace = next(t for t in fig.data if t.name == "self" and t.xaxis == "x")
    expected = summary[(summary["circuit"] == "qk") & (summary["relation"] == "self")].sort_values("number")
    np.testing.assert_allclose(trace.y, expected["mean_abs_delta_z"].to_numpy())
    assert list(trace.x) == [1, 2]


def test_circuit_heatmap_pivots_one_layer(table):
    fig = circuit_heatmap(table, layer=3, circuit="qk", model="base")
    heat = fig.data[0]
    rows = table[(table["layer"] == 3) & (table["circuit"] == "qk") & (table["model"] == "base")]
    value = rows[(rows["query"] == "PC2") & (rows["key"] == "Random1")]["z"].item()
    assert heat.z[NAMES.index("PC2")][NAMES.index("Random1")] == pytest.approx(value)
    with pytest.raises(ValueError, match="circuit"):
        circuit_heatmap(table, layer=3)
    with pytest.raises(ValueError, match="layer"):
        circuit_heatmap(table, layer=99, circuit="qk", model="base")


def test_mlp_and_projection_figures():
    mlp_table = pd.DataFrame({
        "layer": [1, 2, 1, 2], "direction": ["PC1", "PC1", "-PC1", "-PC1"],
        "base_norm": [1.0, 2.0, 3.0, 4.0], "tuned_norm": [1.5, 2.5, 3.5, 4.5], "delta_norm": [0.1, 0.2, 0.3, 0.4],
    })
    fig = mlp_delta_by_layer(mlp_table)
    assert len(fig.data) == 2 * 3
    assert list(fig.data[0].y) == [0.1, 0.2]
    projections = pd.DataFrame({"layer": 3, "direction": "PC1", "probe": list("abcd"),
                                "projection": [0.5, 0.1, -0.2, -0.7]})
    projections["abs_projection"] = projections["projection"].abs()
    fig = projection_bars(top_bottom(projections, 1))
    assert list(fig.data[0].y) == ["d", "a"] and list(fig.data[0].x) == [-0.7, 0.5]
    with pytest.raises(ValueError, match="table.*missing"):
        projection_bars(mlp_table)
