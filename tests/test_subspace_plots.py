"""Figures of the subspace sweep are built from the tables and carry their numbers."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

from interp.plots.subspace import subspace_layer_curves, subspace_scatter


def _summary() -> pd.DataFrame:
    rows = [
        ("write", "W:write", "write", 2.0, 0.9),
        ("persona", "act:persona", "mixed", 5.0, 1.2),
        ("up_read", "W:read", "read", 1.1, 1.0),
        ("act_ceiling", "ceiling", "ceiling", 60.0, 2.0),
        ("weight_ceiling", "ceiling", "ceiling", 2.5, 40.0),
    ]
    frame = pd.DataFrame(rows, columns=["basis", "family", "axis_kind", "mean_R_act", "mean_R_w_combined"])
    frame["joint"] = (frame["mean_R_act"] * frame["mean_R_w_combined"]) ** 0.5
    return frame


def test_scatter_has_two_log_panels_nulls_and_starred_ceilings():
    table = _summary()
    fig = subspace_scatter(table[table["axis_kind"] != "read"], table[table["axis_kind"] == "read"])
    assert isinstance(fig, go.Figure)
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis2.type == "log" and fig.layout.yaxis.type == "log"
    stars = [t for t in fig.data if t.marker.symbol == "star"]
    assert len(stars) == 2  # ceilings drawn in both panels
    assert sorted(stars[0].x) == [2.5, 60.0] and sorted(stars[0].y) == [2.0, 40.0]
    left = {x for t in fig.data if t.xaxis == "x" and t.marker.symbol != "star" for x in t.x}
    right = {x for t in fig.data if t.xaxis == "x2" and t.marker.symbol != "star" for x in t.x}
    assert left == {2.0, 5.0} and right == {1.1}
    lines = [s for s in fig.layout.shapes if s.line.dash == "dash"]
    assert len(lines) == 4 and all(1.0 in (s.x0, s.y0) for s in lines)


def test_layer_curves_draw_one_line_per_basis_and_score():
    per_layer = pd.DataFrame(
        [(layer, b, kind, r, w) for layer in (9, 10, 11)
         for b, kind, r, w in [("a", "write", 2.0, 1.0), ("b", "mixed", 3.0, 0.8), ("act_ceiling", "ceiling", 50.0, 2.0)]],
        columns=["layer", "basis", "axis_kind", "R_act", "R_w_combined"],
    )
    fig = subspace_layer_curves(per_layer)
    assert len(fig.data) == 6  # 3 bases × 2 scores
    assert list(fig.data[0].x) == [9, 10, 11]
    fig = subspace_layer_curves(per_layer, bases=["b"], scores=["R_act"])
    assert len(fig.data) == 1 and list(fig.data[0].y) == [3.0, 3.0, 3.0]


def test_plots_reject_tables_without_the_needed_columns():
    with pytest.raises(ValueError, match="missing column"):
        subspace_scatter(pd.DataFrame({"basis": ["a"]}))
    with pytest.raises(TypeError, match="DataFrame"):
        subspace_layer_curves([1, 2, 3])
    per_layer = pd.DataFrame({"layer": [1], "basis": ["a"], "axis_kind": ["write"], "R_act": [1.0],
                              "R_w_combined": [1.0]})
    with pytest.raises(ValueError, match="bases"):
        subspace_layer_curves(per_layer, bases=["nope"])
