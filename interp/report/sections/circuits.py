"""Report section: weight circuits of persona directions, base vs tuned.

QK affinity and VO decomposition of the persona PCs (and their negations) z-scored against random
unit directions per layer, tuned − base, the per-PC mean |Δz| over the tuned layers, and the MLP pass
of ±PC1 with what tuning adds projected on role and trait vectors.
"""

from __future__ import annotations

import pandas as pd
from transformer_lens import HookedTransformer

from interp.circuits.qk import attention_scales
from interp.circuits.study import CIRCUIT_LABELS, CircuitStudy, circuit_study
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
from interp.report.sections._common import analysed_layers, layer_span, layers_text, section_title

__all__ = ["circuits_section", "probe_directions", "qk_formula"]

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


def qk_formula(model: HookedTransformer) -> str:
    """What the QK affinity computes for ``model``: the score divided by the model's own attention scale
    (:func:`interp.circuits.attention_scales`), with qk-norm and softcap where the model has them."""
    scales = sorted(set(attention_scales(model)))
    shown = "/".join(f"{scale:g}" for scale in scales)
    qk = "q_norm(q(x))·k_norm(k(y))" if model.cfg.use_qk_norm else "q(x)·k(y)"
    text = (f"{qk} / s with s = {shown}, the model's own attention scale (√d_head for Llama-style models, "
            f"√query_pre_attn_scalar for Gemma 2/3; d_head = {model.cfg.d_head} here)")
    cap = model.cfg.attn_scores_soft_cap
    if cap is not None and cap > 0:
        text = f"c·tanh(({text}) / c) with the model's softcap c = {cap:g}"
    return text


def circuits_section(pair: ModelPair, options: ReportOptions) -> tuple[Section, list[str]]:
    """Seeds 000/001 on the pair: z-score lines, Δz lines, per-direction mean |Δz|, the MLP pass
    (laid out from :func:`interp.circuits.circuit_study`)."""
    section = Section(section_title("circuits"), key="circuits")
    named, semantic, where = probe_directions(pair, options)
    study = circuit_study(pair, named, semantic=semantic, layers=analysed_layers(pair, options),
                          n_random=options.n_random, random_seed=options.random_seed,
                          n_projections=options.n_projections)
    tuned_layers = list(study.tuned_layers)
    section.add_text(
        f"Probes: {where}, each with its negation, plus {options.n_random} random unit directions "
        f"(torch.Generator seed {options.random_seed}) whose self-entries give each layer's baseline mean and "
        f"std. QK: pre-softmax affinity {qk_formula(pair.base)} averaged over heads; VO: cosine of the layer's "
        "summed OV output for key x with probe y. z = (value − random mean) / random std; Δz = z_tuned − z_base. "
        f"Tuned layers averaged over: {layer_span(tuned_layers)}. Null: each direction's mean |Δz| is placed "
        f"among the same statistic of the {options.n_random} random directions (opposite relation: random r "
        f"against −r); p = (1 + #random ≥ it) / (1 + {options.n_random}), so no p-value can be below "
        f"{1 / (options.n_random + 1):.2g}; 'distinguishable' means p ≤ {study.alpha:g}. More random directions: "
        "ReportOptions(n_random=...). The p-values are not corrected for the number of directions, circuits "
        "and relations looked at."
    )
    section.add_heading("QK affinity and VO decomposition")
    section.add_table("mean-abs-delta-z", f"Mean |Δz| over the tuned layers ({layer_span(tuned_layers)}), per direction",
                      study.summary_wide(),
                      note="Self: query x, key x. Opposite: query x, key −x. Larger = tuning moved this circuit more.")
    section.add_table("delta-z-null", f"Mean |Δz| over the tuned layers against {options.n_random} random directions",
                      study.null_summary(),
                      note="percentile: mid-rank among the random directions' mean |Δz|; null_median/null_max: "
                           "theirs. p-value with the +1 correction.")
    section.add_table("largest-delta-z", "Largest single-layer changes |Δz|", study.largest_changes(8))

    shown = study.names[: options.n_plot_directions]
    pca_layer = named.layer if named.layer in study.layers else None
    section.add_figure(zscore_lines(study.series, shown, pca_layer=pca_layer))
    section.add_figure(zscore_delta_lines(study.deltas, shown))
    numbered = study.summary[study.summary["number"] >= 1]
    if numbered["direction"].nunique() >= 2:
        section.add_figure(pc_comparison(numbered))

    first = study.mlp_direction
    section.add_heading(f"MLP pass of ±{first}")
    first_rows = study.mlp_peak_rows(5)
    peak = first_rows.iloc[0]
    section.add_table("mlp-peak", f"MLP pass of {first}: layers where tuning changed the output most",
                      first_rows[["layer", "base_norm", "tuned_norm", "delta_norm", "one_minus_cos"]])
    section.add_table("mlp-null", f"Mean MLP-output ‖Δ‖ over the tuned layers against {options.n_random} random "
                      "directions of the same norm", study.mlp_null_summary())
    lines = _summary(study, peak)
    section.add_figure(mlp_delta_by_layer(study.mlp_table))
    if study.projection_ends is not None:
        ends, layer = study.projection_ends, study.projection_layer
        section.add_table("mlp-projections", f"What tuning adds to {first}'s MLP output at layer {layer}, read "
                          "against role and trait vectors (Δ·v̂)", ends[["end", "probe", "projection", "rank_abs"]])
        section.add_figure(projection_bars(ends))
        top = ends.iloc[0]
        lines.append(f"MLP: tuning adds to {first}'s MLP output at layer {layer} mostly along '{top.probe}' "
                     f"(Δ·v̂ = {top.projection:+.3g}) and against '{ends.iloc[-1].probe}' "
                     f"({ends.iloc[-1].projection:+.3g}).")
    return section, lines


def _summary(study: CircuitStudy, peak: pd.Series) -> list[str]:
    lines = []
    tuned_layers = list(study.tuned_layers)
    for circuit, label in CIRCUIT_LABELS.items():
        best = study.strongest(circuit)
        if best is None:
            continue
        if best.mean_abs_delta_z < 1e-9:
            lines.append(f"{label}: unchanged by tuning (Δz = 0 for every direction in {layers_text(tuned_layers)}).")
            continue
        by_layer = study.delta_by_layer(circuit)
        relation = f"{best.direction} → {best.direction}" if best.relation == "self" else \
            f"{best.direction} → −{best.direction}"
        null = study.null_of(best.direction, circuit, best.relation)
        change = (f"({relation}: mean |Δz| = {best.mean_abs_delta_z:.3g} over {layers_text(tuned_layers)}; "
                  f"{study.null_phrase(null)})")
        if null["p_value"] <= study.alpha:
            head = f"{label}: tuning moved {best.direction} most {change}"
        else:
            head = (f"{label}: the largest mean |Δz| of the named directions is {best.direction}'s {change}, "
                    "inside what random directions show")
        top_layer = int(by_layer.idxmax())
        lines.append(f"{head}; across directions the largest mean |Δz| is at layer {top_layer} "
                     f"({by_layer.max():.3g}; random directions there: {study.random_layer_mean(circuit, top_layer):.3g}).")
    first, layer = study.mlp_direction, int(peak["layer"])
    at_peak = study.null_of(first, layer=layer)
    over = study.null_of(first)
    lines.append(f"MLP: {first}'s MLP output changes most at layer {layer} "
                 f"(‖Δ‖ = {peak['delta_norm']:.3g}, base norm {peak['base_norm']:.3g}; at that layer "
                 f"{study.null_phrase(at_peak)}); mean ‖Δ‖ over {layers_text(tuned_layers)} "
                 f"{over['delta_norm']:.3g}: {study.null_phrase(over)}.")
    return lines
