"""Report section: which weight tensors tuning changed, and by how much (relative Frobenius norms)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from interp.pair import ModelPair
from interp.report.html import Section
from interp.report.options import ReportOptions
from interp.report.sections._common import analysed_layers, layer_span, layers_text

__all__ = ["delta_norms", "weights_section"]


def delta_norms(pair: ModelPair) -> pd.DataFrame:
    """One row per changed parameter: ``layer`` (−1 outside the blocks), ``tensor``,
    ``delta_fro`` = ‖W_tuned − W_base‖_F and ``relative`` = ‖ΔW‖_F / ‖W_base‖_F."""
    base_params = dict(pair.base.named_parameters())
    rows = []
    for name, delta in pair.delta().items():
        parts = name.split(".")
        layer = int(parts[1]) if parts[0] == "blocks" else -1
        weight_norm = base_params[name].norm().item()
        delta_norm = delta.norm().item()
        rows.append({
            "layer": layer,
            "tensor": ".".join(parts[2:]) if layer >= 0 else name,
            "delta_fro": delta_norm,
            "relative": delta_norm / weight_norm if weight_norm else float("nan"),
        })
    columns = ["layer", "tensor", "delta_fro", "relative"]
    if not rows:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(rows, columns=columns).sort_values(["layer", "tensor"]).reset_index(drop=True)


def weights_section(pair: ModelPair, options: ReportOptions) -> tuple[Section, list[str]]:
    """Relative weight change per (layer, tensor): a heatmap and the ten largest changes."""
    section = Section("What changed in the weights", key="weights")
    table = delta_norms(pair)
    if options.layers is not None:
        table = table[table.layer.isin(analysed_layers(pair, options)) | (table.layer < 0)].reset_index(drop=True)
    if table.empty:
        section.add_text("The two models have identical weights (in the analysed layers).")
        return section, ["The two models have identical weights (in the analysed layers)."]
    grid = table.pivot(index="tensor", columns="layer", values="relative")
    figure = go.Figure(go.Heatmap(z=grid.values, x=[str(c) for c in grid.columns], y=list(grid.index),
                                  colorscale="Viridis", colorbar={"title": "‖ΔW‖/‖W‖"}))
    figure.update_layout(title="Relative weight change per layer and tensor", xaxis_title="layer",
                         yaxis_title="tensor", height=380)
    in_blocks = table[table.layer >= 0]
    section.add_text(
        f"{len(table)} tensors differ, in layers {layer_span(in_blocks.layer)}. Relative change is "
        "‖W_tuned − W_base‖_F / ‖W_base‖_F, in TransformerLens' layout (after any weight processing, so a "
        "LoRA on W_Q shows up in W_Q and, for GQA, in the shared _W_K/_W_V of its key-value head)."
    )
    per_kind = (table.groupby("tensor").agg(layers=("layer", "nunique"), total_delta_fro=("delta_fro", lambda s: (s**2).sum() ** 0.5),
                                            mean_relative=("relative", "mean"), max_relative=("relative", "max"))
                .reset_index().sort_values("total_delta_fro", ascending=False))
    section.add_table("by-tensor", "Change per tensor kind (‖ΔW‖_F summed in quadrature over layers)", per_kind)
    section.add_table("largest", "Largest relative changes", table.nlargest(10, "relative"))
    section.add_figure(figure)
    top = table.loc[table.relative.idxmax()]
    by_layer = in_blocks.groupby("layer")["delta_fro"].apply(lambda s: (s**2).sum() ** 0.5)
    summary = [
        f"Weights: {len(table)} tensors changed ({layers_text(in_blocks.layer)}); the largest relative change "
        f"is {top.relative:.3%} in layer {top.layer} {top.tensor}"
        + (f", and layer {int(by_layer.idxmax())} changed most overall (‖ΔW‖_F = {by_layer.max():.3g})."
           if len(by_layer) else ".")
    ]
    return section, summary
