"""Report section: which candidate residual subspaces explain what tuning changed (the subspace sweep)."""

from __future__ import annotations

from interp.pair import ModelPair
from interp.plots.subspace import subspace_layer_curves, subspace_scatter
from interp.report.html import Section
from interp.report.options import ReportOptions
from interp.report.sections._common import analysed_layers, layer_span, layers_text, section_title
from interp.subspace import CLAIMS, as_delta, delta_diagnostics, subspace_sweep, write_layers

__all__ = ["subspace_section", "sweep_layers"]

_COLUMNS = ["basis", "family", "axis_kind", "mean_rank", "mean_R_act", "mean_z_act", "mean_R_w_combined",
            "mean_z_w_combined", "mean_pct_w_combined_ceiling", "joint"]


def sweep_layers(pair: ModelPair, options: ReportOptions) -> list[int]:
    """``options.sweep_layers``, else the layers where the delta writes to the residual stream
    (W_O / W_out) that are also in ``options.layers``, thinned to ``options.sweep_layer_limit``
    evenly spaced layers (the middle one when the limit is 1)."""
    written = write_layers(as_delta(pair))
    if options.sweep_layers is not None:
        return list(options.sweep_layers)
    chosen = [layer for layer in written if layer in analysed_layers(pair, options)]
    if not chosen:
        raise ValueError(
            f"layers: none of the analysed layers is one where tuning changed a residual-write tensor "
            f"(W_O/W_out change at layers {layer_span(written)}), so the sweep has nothing to score"
        )
    limit = options.sweep_layer_limit
    if limit is not None and len(chosen) > limit:
        step = len(chosen) / limit
        chosen = [chosen[int(step * (i + 0.5))] for i in range(limit)]
    return chosen


def subspace_section(pair: ModelPair, options: ReportOptions) -> tuple[Section, list[str]]:
    """The sweep's summary ranked by joint score, the read-side table, the scatter and layer curves."""
    section = Section(section_title("subspace"), key="subspace")
    layers = sweep_layers(pair, options)
    claims = None if options.sweep_claims is None else list(CLAIMS[: options.sweep_claims])
    result = subspace_sweep(pair, k=options.sweep_k, layers=layers, include=options.sweep_bases, claims=claims)
    n_claims = len(claims) if claims is not None else len(CLAIMS)
    section.add_text(
        f"Each candidate basis (rank ≤ {options.sweep_k}) is scored at {layers_text(layers)} on the activation "
        f"label δ = resid(W + ΔW) − resid(W − ΔW) at the last token of {n_claims} 'I think …, do you agree?' probes "
        f"({'chat-templated' if result.config.get('chat_template') else 'raw text'}; the persona "
        "prompts behind the persona bases are chat-templated; half fit the activation-derived bases, half "
        "evaluate: R_act) and on the residual-write weight deltas "
        "ΔW_O, ΔW_out (Frobenius-balanced: R_w). R = captured energy × d_model / rank, so a random subspace "
        "scores 1; joint = √(R_act · R_w). Ceilings are the best possible rank-k subspaces."
    )
    diagnostics = delta_diagnostics(as_delta(pair))
    diag = (diagnostics.groupby(["side", "kind"])[["frobenius", "effective_rank", "sv_1"]].mean().reset_index()
            .sort_values("frobenius", ascending=False))
    section.add_table("delta-diagnostics", "The weight delta per tensor kind (mean over layers)", diag,
                      note="effective_rank: exp(entropy of the normalised singular values) of the residual view.")
    columns = [c for c in _COLUMNS if c in result.summary.columns]
    section.add_table("sweep-summary", "Write, mixed and ceiling bases ranked by joint score", result.summary[columns])
    section.add_figure(subspace_scatter(result.summary, result.read_side))
    if len(result.read_side):
        section.add_table("sweep-read-side", "Read-side bases (their R_w is cross-space alignment, not 'explains ΔW')",
                          result.read_side[columns])
    section.add_figure(subspace_layer_curves(result.per_layer))

    candidates = result.summary[~result.summary["axis_kind"].isin(["ceiling"]) & (result.summary["basis"] != "random")]
    best = candidates.head(3)
    best_text = ", ".join(f"{r.basis} (joint {r.joint:.3g}: R_act {r.mean_R_act:.3g}, R_w {r.mean_R_w_combined:.3g})"
                          for r in best.itertuples())
    line = f"Subspaces: the bases that best explain the weight delta at {layers_text(layers)} are {best_text}"
    random_rows = result.summary[result.summary["basis"] == "random"]
    if len(random_rows):
        line += f"; the random control scores {random_rows['joint'].iloc[0]:.3g}"
    ceilings = result.summary[result.summary["axis_kind"] == "ceiling"]
    if len(ceilings):
        line += " and the ceilings " + ", ".join(f"{r.basis} {r.joint:.3g}" for r in ceilings.itertuples())
    return section, [line + "."]
