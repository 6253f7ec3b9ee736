"""Report section: which weight tensors tuning changed, and by how much (relative Frobenius norms)."""

from __future__ import annotations

from interp.pair import ModelPair
from interp.plots.weights import relative_change_heatmap
from interp.report.html import Section
from interp.report.options import ReportOptions
from interp.report.sections._common import analysed_layers, layer_span, layers_text, section_title
from interp.subspace.weight_diff import delta_norms, norms_by_layer, norms_by_tensor

__all__ = ["weights_section"]


def weights_section(pair: ModelPair, options: ReportOptions) -> tuple[Section, list[str]]:
    """Relative weight change per (layer, tensor): a heatmap and the ten largest changes."""
    section = Section(section_title("weights"), key="weights")
    table = delta_norms(pair)
    if options.layers is not None:
        table = table[table.layer.isin(analysed_layers(pair, options)) | (table.layer < 0)].reset_index(drop=True)
    if table.empty:
        section.add_text("The two models have identical weights (in the analysed layers).")
        return section, ["The two models have identical weights (in the analysed layers)."]
    figure = relative_change_heatmap(table)
    in_blocks = table[table.layer >= 0]
    section.add_text(
        f"{len(table)} tensors differ, in layers {layer_span(in_blocks.layer)}. Relative change is "
        "‖W_tuned − W_base‖_F / ‖W_base‖_F, in TransformerLens' layout (after any weight processing, so a "
        "LoRA on W_Q shows up in W_Q and, for GQA, in the shared _W_K/_W_V of its key-value head)."
    )
    per_kind = norms_by_tensor(table)
    section.add_table("by-tensor", "Change per tensor kind (‖ΔW‖_F summed in quadrature over layers)", per_kind)
    section.add_table("largest", "Largest relative changes", table.nlargest(10, "relative"))
    section.add_figure(figure)
    top = table.loc[table.relative.idxmax()]
    by_layer = norms_by_layer(table)
    summary = [
        f"Weights: {len(table)} tensors changed ({layers_text(in_blocks.layer)}); the largest relative change "
        f"is {top.relative:.3%} in layer {top.layer} {top.tensor}"
        + (f", and layer {int(by_layer.idxmax())} changed most overall (‖ΔW‖_F = {by_layer.max():.3g})."
           if len(by_layer) else ".")
    ]
    return section, summary
