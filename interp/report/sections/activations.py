"""Report section: attention metrics per prompt variant and head types (seed 004), base vs tuned."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from interp.activations import HEAD_TYPES, pair_attention_metrics, pair_head_type_scores
from interp.pair import ModelPair
from interp.personas import format_prompt
from interp.plots.activations import entropy_by_layer, head_metric_heatmap
from interp.report.html import Section
from interp.report.options import ReportOptions
from interp.report.sections._common import analysed_layers, head_label

__all__ = ["activations_section", "variant_prompts"]

_TYPE_TITLE = {"previous_token": "previous-token", "duplicate_token": "duplicate-token", "induction": "induction"}


def variant_prompts(pair: ModelPair, options: ReportOptions) -> dict[str, str]:
    """``options.variants`` as the text the model sees (its chat template when it has one)."""
    return {name: format_prompt(pair.base, system, user) for name, (system, user) in options.variants.items()}


def _entropy_lines(layer_frame: pd.DataFrame) -> go.Figure:
    """Entropy by layer, one colour per variant, solid = base, dashed = tuned."""
    frame = layer_frame[layer_frame["model"].isin(["base", "tuned"])]
    frame = frame.assign(series=frame["label"] + " · " + frame["model"])
    figure = entropy_by_layer(frame, value="entropy", by="series",
                              title="Last-token attention entropy by layer (mean over heads), base vs tuned")
    colours = {label: qualitative.Plotly[i % 10] for i, label in enumerate(dict.fromkeys(frame["label"]))}
    for trace in figure.data:
        label, model = trace.name.rsplit(" · ", 1)
        trace.line = {"color": colours[label], "dash": "dash" if model == "tuned" else "solid"}
    figure.update_layout(yaxis_title="entropy (nats)", legend_title="variant · model")
    return figure


def activations_section(pair: ModelPair, options: ReportOptions) -> tuple[Section, list[str]]:
    """Entropy/max/sink/keyword attention of every head at the last token of each prompt variant, and
    previous-token / duplicate-token / induction scores on repeated random tokens; tuned − base."""
    section = Section("Activations: attention entropy, head metrics and head types", key="activations")
    layers = analysed_layers(pair, options)
    texts = variant_prompts(pair, options)
    compared = pair_attention_metrics(pair, list(texts.values()), labels=list(texts), keywords=list(options.keywords),
                                      layers=layers, progress=options.progress)
    layer_frame = compared.layer_frame()
    heads = compared.to_frame()
    section.add_heading("Attention at the last prompt token, per prompt variant (seed 004)")
    section.add_text(
        f"Prompt variants ({', '.join(texts)}) of one question, in the model's chat format. Per head, at the "
        "last prompt token: entropy of the attention distribution (nats), its maximum, and the attention on the "
        "first token (the sink, averaged over all queries). Δ = tuned − base on the same prompts."
    )
    delta_heads = heads[heads["model"] == "delta"]
    section.add_figure(
        _entropy_lines(layer_frame),
        entropy_by_layer(layer_frame[layer_frame["model"] == "delta"], value="entropy", by="label",
                         title="Δ entropy by layer (tuned − base)"),
    )
    by_layer = (layer_frame[layer_frame["model"] == "delta"].groupby("layer")["entropy"]
                .agg(mean_abs_delta=lambda s: s.abs().mean(), mean_delta="mean").reset_index())
    section.add_table("entropy-layers", "Layers whose attention entropy changed most (mean over heads and variants)",
                      by_layer.nlargest(5, "mean_abs_delta"))
    head_change = _head_changes(heads, "entropy").nlargest(options.n_top_heads, "abs_delta")
    section.add_table("entropy-heads", "Heads whose last-token entropy changed most (mean over variants)",
                      head_change.drop(columns="abs_delta"))
    section.add_figure(
        head_metric_heatmap(heads[heads["model"] == "base"], "entropy", title="Entropy per head (base, mean over variants)"),
        head_metric_heatmap(delta_heads, "entropy", colorscale="RdBu", zmid=0, title="Δ entropy per head (tuned − base)"),
    )
    section.add_figure(
        head_metric_heatmap(heads[heads["model"] == "base"], "max_attention", title="Max attention per head (base)"),
        head_metric_heatmap(heads[heads["model"] == "base"], "mean_sink", title="First-token sink per head (base)"),
    )
    keywords = compared.keyword_frame()
    if len(keywords):
        kw = (keywords[keywords["n_tokens"] > 0].groupby(["model", "label", "keyword"])["attention"].mean()
              .unstack("model").reset_index())
        if {"base", "tuned", "delta"} <= set(kw.columns):
            section.add_table("keywords", "Attention from the last token to keywords (mean over layers and heads)",
                              kw[["label", "keyword", "base", "tuned", "delta"]])

    section.add_heading("Head types: previous-token, duplicate-token, induction")
    types = pair_head_type_scores(pair, length=options.head_type_length, n_sequences=options.head_type_sequences,
                                  seed=options.head_type_seed, layers=layers, progress=options.progress)
    section.add_text(
        f"{options.head_type_sequences} sequences of {options.head_type_length} random tokens, each repeated twice "
        f"(seed {options.head_type_seed}): the share of each head's attention that matches the previous-token, "
        "duplicate-token and induction patterns (TransformerLens head_detector's measure; a perfect induction head "
        "scores about 0.5 on this probe)."
    )
    changes = _type_changes(types).nlargest(options.n_top_heads, "abs_delta").drop(columns="abs_delta")
    section.add_table("head-types", "Heads whose type score changed most", changes)
    strong = types[types["model"] != "delta"].melt(id_vars=["model", "layer", "head"], value_vars=list(HEAD_TYPES),
                                                   var_name="type", value_name="score")
    counts = (strong.assign(strong=strong["score"] > 0.3).groupby(["type", "model"])["strong"].sum()
              .unstack("model").reset_index().rename(columns={"base": "heads > 0.3 (base)", "tuned": "heads > 0.3 (tuned)"}))
    section.add_table("head-type-counts", "Heads scoring above 0.3 per type", counts)
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
    variant_delta = (layer_frame[(layer_frame["model"] == "delta") & (layer_frame["layer"] == top_layer.layer)]
                     .set_index("label")["entropy"])
    lines.append(
        f"Attention: last-token entropy changed most at layer {int(top_layer.layer)} (mean |Δ| = "
        f"{top_layer.mean_abs_delta:.3g} nats over heads and {len(texts)} variants; largest for "
        f"'{variant_delta.abs().idxmax()}', Δ = {variant_delta.loc[variant_delta.abs().idxmax()]:+.3g})."
    )
    heads_text = ", ".join(f"{head_label(r.layer, r.head)} ({r.delta:+.2f})" for r in head_change.head(3).itertuples())
    lines.append(f"Heads whose entropy changed most (nats, mean over variants): {heads_text}.")
    if len(changes):
        top = changes.iloc[0]
        lines.append(f"Head types: the largest change is {head_label(top['layer'], top['head'])} "
                     f"{_TYPE_TITLE[top['type']]} {top['base']:.2f} → {top['tuned']:.2f} (Δ {top['delta']:+.2f}).")
    return section, lines


def _head_changes(heads: pd.DataFrame, value: str) -> pd.DataFrame:
    """Per (layer, head): base, tuned and Δ of ``value`` averaged over prompts, and |Δ|."""
    wide = heads.groupby(["model", "layer", "head"])[value].mean().unstack("model").reset_index()
    out = wide[["layer", "head", "base", "tuned", "delta"]].copy()
    out["abs_delta"] = out["delta"].abs()
    return out


def _type_changes(types: pd.DataFrame) -> pd.DataFrame:
    """One row per (layer, head, type) with base, tuned, delta and |delta|."""
    long = types.melt(id_vars=["model", "layer", "head"], value_vars=list(HEAD_TYPES), var_name="type",
                      value_name="score")
    wide = long.pivot_table(index=["layer", "head", "type"], columns="model", values="score").reset_index()
    out = wide[["layer", "head", "type", "base", "tuned", "delta"]].copy()
    out["abs_delta"] = out["delta"].abs()
    return out
