"""Report section: weight circuits of persona directions (seeds 000 and 001), base vs tuned.

QK affinity and VO decomposition of the persona PCs (and their negations) z-scored against random
unit directions per layer, tuned − base, the per-PC mean |Δz| over the tuned layers, and the MLP pass
of ±PC1 with what tuning adds projected on role and trait vectors.
"""

from __future__ import annotations

import pandas as pd

from interp.circuits import (
    compare_mlp_pass,
    delta_projections,
    mean_abs_delta,
    self_opposite,
    top_bottom,
    tuned_minus_base,
    weight_circuits,
)
from interp.directions import DirectionSet
from interp.pair import ModelPair
from interp.personas import persona_prompts
from interp.plots.circuits import (
    mlp_delta_by_layer,
    pc_comparison,
    projection_bars,
    zscore_delta_lines,
    zscore_lines,
)
from interp.report.cache import cached_persona_directions
from interp.report.html import Section
from interp.report.options import ReportOptions
from interp.report.sections._common import analysed_layers, changed_layers, layer_span, layers_text

__all__ = ["circuits_section", "probe_directions"]

_CIRCUIT = {"qk": "QK", "vo": "VO"}


def probe_directions(pair: ModelPair, options: ReportOptions) -> tuple[DirectionSet, DirectionSet | None, str]:
    """The named directions to analyse, semantic vectors to read MLP changes against (or None), and a
    sentence saying where they came from: ``options.directions`` (unit-normalised) when given, else
    the persona PCs of ``pair.base`` (cached) with the role and trait vectors."""
    if options.directions is not None:
        named = options.directions.unit()
        where = named.source or "the --directions file"
        return named, None, f"{len(named)} directions from {where}"
    layer = options.persona_layer if options.persona_layer is not None else pair.cfg.n_layers // 2
    questions = persona_prompts().questions[: options.n_questions]
    persona, cached = cached_persona_directions(
        pair.base, cache_dir=options.cache_dir, layer=layer, n_components=options.n_components,
        roles=list(options.roles) if options.roles is not None else None, questions=list(questions),
        traits=options.traits, batch_size=32,
    )
    semantic = persona.roles if persona.traits is None else persona.roles.concat(persona.traits)
    ratios = persona.pcs.metadata.get("explained_variance_ratio", [])
    share = ", ".join(f"{r:.0%}" for r in ratios)
    where = (f"persona PCs of the base model at blocks.{layer}.hook_resid_post from {len(persona.roles)} roles × "
             f"{len(questions)} questions (variance explained: {share})" + (" [cached]" if cached else ""))
    return persona.pcs, semantic, where


def circuits_section(pair: ModelPair, options: ReportOptions) -> tuple[Section, list[str]]:
    """Seeds 000/001 on the pair: z-score lines, Δz lines, per-direction mean |Δz|, the MLP pass."""
    section = Section("Weight circuits: QK, VO and MLP of persona directions", key="circuits")
    layers = analysed_layers(pair, options)
    tuned_layers = [layer for layer in changed_layers(pair.delta()) if layer in layers] or layers
    named, semantic, where = probe_directions(pair, options)
    randoms = DirectionSet.random(options.n_random, pair.cfg.d_model, seed=options.random_seed)
    probes = named.with_negations().concat(randoms)
    section.add_text(
        f"Probes: {where}, each with its negation, plus {options.n_random} random unit directions "
        f"(torch.Generator seed {options.random_seed}) whose self-entries give each layer's baseline mean and "
        "std. QK: pre-softmax affinity q(x)·k(y)/√d_head averaged over heads; VO: cosine of the layer's "
        "summed OV output for key x with probe y. z = (value − random mean) / random std; Δz = z_tuned − z_base. "
        f"Tuned layers averaged over: {layer_span(tuned_layers)}."
    )
    section.add_heading("QK affinity and VO decomposition (seed 000)")
    table = weight_circuits(pair, probes, layers=layers)
    names = list(named.names)
    series = self_opposite(table, names)
    deltas = tuned_minus_base(series)
    ratios = named.metadata.get("explained_variance_ratio")
    explained = ratios if isinstance(ratios, list) and len(ratios) == len(named) else None
    per_pc = mean_abs_delta(deltas, tuned_layers, explained_variance=explained)
    wide = per_pc.pivot_table(index=["direction", "number"], columns=["circuit", "relation"],
                              values="mean_abs_delta_z").sort_index(level="number")
    wide.columns = [f"{_CIRCUIT.get(c, c)} {r}" for c, r in wide.columns]
    wide = wide.reset_index().drop(columns="number")
    if explained is not None:
        wide.insert(1, "explained_variance", explained[: len(wide)])
    section.add_table("mean-abs-delta-z", f"Mean |Δz| over the tuned layers ({layer_span(tuned_layers)}), per direction",
                      wide, note="Self: query x, key x. Opposite: query x, key −x. Larger = tuning moved this circuit more.")
    top_changes = deltas.assign(abs_delta_z=deltas["delta_z"].abs()).nlargest(8, "abs_delta_z")
    top_changes = top_changes[["circuit", "relation", "query", "layer", "z_base", "z_tuned", "delta_z"]]
    top_changes = top_changes.assign(circuit=top_changes["circuit"].map(_CIRCUIT)).rename(columns={"query": "direction"})
    section.add_table("largest-delta-z", "Largest single-layer changes |Δz|", top_changes)

    shown = names[: options.n_plot_directions]
    pca_layer = named.layer if named.layer in layers else None
    section.add_figure(zscore_lines(series, shown, pca_layer=pca_layer))
    section.add_figure(zscore_delta_lines(deltas, shown))
    numbered = per_pc[per_pc["number"] >= 1]
    if numbered["direction"].nunique() >= 2:
        section.add_figure(pc_comparison(numbered))

    # seed 001: the MLP pass of ±(first direction) through every analysed layer
    first = names[0]
    section.add_heading(f"MLP pass of ±{first} (seed 001)")
    mlp = compare_mlp_pass(pair, named.subset([first]).with_negations(), layers=layers)
    mlp_table = mlp.table()
    first_rows = mlp_table[mlp_table["direction"] == first].sort_values("delta_norm", ascending=False)
    peak = first_rows.iloc[0]
    section.add_table("mlp-peak", f"MLP pass of {first}: layers where tuning changed the output most",
                      first_rows.head(5)[["layer", "base_norm", "tuned_norm", "delta_norm", "one_minus_cos"]])
    lines = _summary(per_pc, deltas, tuned_layers, first, peak)
    section.add_figure(mlp_delta_by_layer(mlp_table))
    if semantic is not None:
        layer = named.layer if named.layer in mlp.layers else int(peak["layer"])
        projections = delta_projections(mlp, semantic, layer=layer, direction=first)
        ends = top_bottom(projections, min(options.n_projections, max(1, len(projections) // 2)))
        section.add_table("mlp-projections", f"What tuning adds to {first}'s MLP output at layer {layer}, read "
                          "against role and trait vectors (Δ·v̂)", ends[["end", "probe", "projection", "rank_abs"]])
        section.add_figure(projection_bars(ends))
        top = ends.iloc[0]
        lines.append(f"MLP: tuning adds to {first}'s MLP output at layer {layer} mostly along '{top.probe}' "
                     f"(Δ·v̂ = {top.projection:+.3g}) and against '{ends.iloc[-1].probe}' "
                     f"({ends.iloc[-1].projection:+.3g}).")
    return section, lines


def _summary(per_pc: pd.DataFrame, deltas: pd.DataFrame, tuned_layers: list[int], first: str,
             peak: pd.Series) -> list[str]:
    lines = []
    for circuit in ("qk", "vo"):
        rows = per_pc[per_pc["circuit"] == circuit]
        if rows.empty:
            continue
        best = rows.loc[rows["mean_abs_delta_z"].idxmax()]
        if best.mean_abs_delta_z < 1e-9:
            lines.append(f"{_CIRCUIT[circuit]}: unchanged by tuning (Δz = 0 for every direction in "
                         f"{layers_text(tuned_layers)}).")
            continue
        layer_rows = deltas[(deltas["circuit"] == circuit) & deltas["layer"].isin(tuned_layers)]
        by_layer = layer_rows.groupby("layer")["delta_z"].apply(lambda s: s.abs().mean())
        relation = f"{best.direction} → {best.direction}" if best.relation == "self" else \
            f"{best.direction} → −{best.direction}"
        lines.append(
            f"{_CIRCUIT[circuit]}: tuning moved {best.direction} most ({relation}: mean |Δz| = "
            f"{best.mean_abs_delta_z:.3g} over {layers_text(tuned_layers)}); across directions the largest mean "
            f"|Δz| is at layer {int(by_layer.idxmax())} ({by_layer.max():.3g})."
        )
    lines.append(f"MLP: {first}'s MLP output changes most at layer {int(peak['layer'])} "
                 f"(‖Δ‖ = {peak['delta_norm']:.3g}, base norm {peak['base_norm']:.3g}).")
    return lines
