"""Report section: attention metrics per prompt variant and head types, base vs tuned."""

from __future__ import annotations

from interp.activations.head_types import HEAD_TYPES
from interp.activations.study import attention_study
from interp.pair import ModelPair
from interp.plots.activations import (
    attention_heatmap,
    entropy_by_layer,
    entropy_lines_by_model,
    head_metric_heatmap,
)
from interp.report.html import Section
from interp.report.options import ReportOptions
from interp.report.sections._common import analysed_layers, head_label, section_title

__all__ = ["activations_section"]

_TYPE_TITLE = {"previous_token": "previous-token", "duplicate_token": "duplicate-token", "induction": "induction"}


def activations_section(pair: ModelPair, options: ReportOptions) -> tuple[Section, list[str]]:
    """Entropy/max/sink/keyword attention of every head at the last token of each prompt variant, and
    previous-token / duplicate-token / induction scores on repeated random tokens; tuned − base (laid
    out from :func:`interp.activations.attention_study`)."""
    section = Section(section_title("activations"), key="activations")
    study = attention_study(pair, dict(options.variants), keywords=list(options.keywords),
                            layers=analysed_layers(pair, options), head_type_length=options.head_type_length,
                            head_type_sequences=options.head_type_sequences, head_type_seed=options.head_type_seed,
                            progress=options.progress)
    layer_frame, heads, texts = study.layer_frame, study.heads, study.texts
    section.add_heading("Attention at the last prompt token, per prompt variant")
    section.add_text(
        f"Prompt variants ({', '.join(texts)}) of one question, in the model's chat format. Per head, at the "
        "last prompt token: entropy of the attention distribution (nats), its normalised entropy H / ln n_keys "
        "(n_keys = the tokens the last token can attend to; 0 = one key, 1 = uniform; comparable across the "
        "variants' different lengths), its maximum, and the attention on the first token (the sink, averaged over "
        "all queries). Δ = tuned − base on the same prompts. Null: a "
        f"paired comparison over the {len(texts)} variants: {study.entropy_layer_nulls['level'].iloc[0]:.0%} "
        "bootstrap intervals (variants resampled with replacement, seeded) and a sign-flip p-value (each variant's "
        "tuned − base flipped at random; exact when every flip can be listed). With n variants no p-value can be "
        f"below 2/2^n ({2 / 2 ** len(texts):.2g} here); more variants narrow the intervals."
    )
    delta_heads = heads[heads["model"] == "delta"]
    section.add_figure(
        entropy_lines_by_model(layer_frame),
        entropy_by_layer(layer_frame[layer_frame["model"] == "delta"], value="entropy", by="label",
                         title="Δ entropy by layer (tuned − base)"),
    )
    section.add_figure(
        entropy_lines_by_model(layer_frame, value="normalized_entropy"),
        entropy_by_layer(layer_frame[layer_frame["model"] == "delta"], value="normalized_entropy", by="label",
                         title="Δ normalised entropy H / ln n_keys by layer (tuned − base)"),
    )
    sensitivity = study.prompt_sensitivity("base")
    section.add_table("prompt-sensitive-layers",
                      "Most prompt-sensitive layers (base): spread of the head-mean entropy across variants",
                      sensitivity.head(5),
                      note=f"Ranked by {sensitivity['ranked_by'].iloc[0]}; when the variants differ in length "
                           "the raw spread partly ranks length, so the normalised spread ranks.")
    by_layer = study.entropy_change_by_layer()
    section.add_table("entropy-layers", "Layers whose head-averaged attention entropy changed most (mean |Δ| over variants)",
                      by_layer.nlargest(5, "mean_abs_delta"),
                      note="mean_abs_delta: mean over variants of |Δ| of the head-averaged entropy (nats); "
                           "ci_low/ci_high: its bootstrap interval over the variants; p_value: sign-flip test of a "
                           "change consistent across variants. *_normalized: the same of H / ln n_keys, with its own "
                           "interval and p-value.")
    head_change = study.entropy_head_changes().nlargest(options.n_top_heads, "abs_delta")
    section.add_table("entropy-heads", "Heads whose last-token entropy changed most (mean over variants)",
                      head_change.drop(columns="abs_delta"),
                      note="ci_low/ci_high: bootstrap interval of Δ over the variants; p_value: sign flips; "
                           "normalized_*: the same of H / ln n_keys.")
    section.add_figure(
        head_metric_heatmap(heads[heads["model"] == "base"], "entropy", title="Entropy per head (base, mean over variants)"),
        head_metric_heatmap(delta_heads, "entropy", colorscale="RdBu", zmid=0, title="Δ entropy per head (tuned − base)"),
    )
    section.add_figure(
        head_metric_heatmap(heads[heads["model"] == "base"], "normalized_entropy",
                            title="Normalised entropy H / ln n_keys per head (base, mean over variants)"),
        head_metric_heatmap(delta_heads, "normalized_entropy", colorscale="RdBu", zmid=0,
                            title="Δ normalised entropy per head (tuned − base)"),
    )
    section.add_figure(*[
        attention_heatmap(study.mean_patterns[model],
                          title=f"Attention pattern, layer {study.pattern_layer}, mean over heads ({model}, "
                                f"'{study.pattern_variant}')")
        for model in ("base", "tuned")
    ])
    section.add_figure(
        head_metric_heatmap(heads[heads["model"] == "base"], "max_attention", title="Max attention per head (base)"),
        head_metric_heatmap(heads[heads["model"] == "base"], "mean_sink", title="First-token sink per head (base)"),
    )
    keyword_table = study.keyword_table()
    if len(keyword_table):
        section.add_table("keywords", "Attention from the last token to keywords (mean over layers and heads)",
                          keyword_table)

    section.add_heading("Head types: previous-token, duplicate-token, induction")
    types = study.head_types
    section.add_text(
        f"{options.head_type_sequences} sequences of {options.head_type_length} random tokens, each repeated twice "
        f"(seed {options.head_type_seed}): the share of each head's attention that matches the previous-token, "
        "duplicate-token and induction patterns (TransformerLens head_detector's measure; a perfect induction head "
        "scores about 0.5 on this probe). Null: per head and type, a bootstrap interval of Δ over the "
        f"{options.head_type_sequences} sequences and a sign-flip p-value (no p-value below "
        f"{2 / 2 ** options.head_type_sequences:.2g} with this many sequences; not corrected for the number of "
        "heads looked at)."
    )
    changes = study.type_changes().nlargest(options.n_top_heads, "abs_delta").drop(columns="abs_delta")
    section.add_table("head-types", "Heads whose type score changed most", changes)
    section.add_table("head-type-counts", "Heads scoring above 0.3 per type", study.strong_head_counts(0.3))
    section.add_figure(*[
        head_metric_heatmap(types[types["model"] == "base"], kind, title=f"{_TYPE_TITLE[kind]} score (base)")
        for kind in HEAD_TYPES
    ])
    section.add_figure(*[
        head_metric_heatmap(types[types["model"] == "delta"], kind, colorscale="RdBu", zmid=0,
                            title=f"Δ {_TYPE_TITLE[kind]} (tuned − base)")
        for kind in HEAD_TYPES
    ])

    lines = []
    top_layer = by_layer.loc[by_layer["mean_abs_delta"].idxmax()]
    layer = int(top_layer.layer)
    variant_delta = study.variant_entropy_delta(top_layer.layer)
    null = study.entropy_layer_nulls.set_index("layer").loc[layer]
    normalized_null = study.normalized_entropy_layer_nulls.set_index("layer").loc[layer]
    where = "changed most at" if null["p_value"] <= study.alpha else \
        "changed most (but not distinguishably from no change) at"
    lines.append(
        f"Attention: last-token entropy {where} layer {layer} (head-averaged, mean |Δ| = "
        f"{top_layer.mean_abs_delta:.3g} nats over {len(texts)} variants; {study.null_phrase(null, 'prompt variants')}; "
        f"normalised H / ln n_keys: mean |Δ| = {top_layer.mean_abs_delta_normalized:.3g}, "
        f"{study.null_phrase(normalized_null, 'prompt variants')}; largest for "
        f"'{variant_delta.abs().idxmax()}', Δ = {variant_delta.loc[variant_delta.abs().idxmax()]:+.3g} nats)."
    )
    heads_text = ", ".join(f"{head_label(r.layer, r.head)} ({r.delta:+.2f}, p = {r.p_value:.2g})"
                           for r in head_change.head(3).itertuples())
    lines.append(f"Heads whose entropy changed most (nats, mean over variants; sign-flip p over variants, "
                 f"distinguishable at p ≤ {study.alpha:g}): {heads_text}.")
    if len(changes):
        top = changes.iloc[0]
        null = study.head_type_nulls.set_index(["layer", "head", "type"]).loc[(top["layer"], top["head"], top["type"])]
        lines.append(f"Head types: the largest change of {len(study.head_type_nulls)} (head, type) pairs is "
                     f"{head_label(top['layer'], top['head'])} {_TYPE_TITLE[top['type']]} {top['base']:.2f} → "
                     f"{top['tuned']:.2f} (Δ {top['delta']:+.2f}; "
                     f"{study.null_phrase(null, 'sequences', value='mean_delta')}; p not corrected for picking "
                     "the largest).")
    return section, lines
