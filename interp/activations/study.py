"""The attention study of a pair in one call: attention metrics per prompt variant and head types.

:func:`attention_study` runs what the report section, the CLI and ``examples/activation_analyses.py``
share and returns an :class:`AttentionStudy` with the tidy frames (long tuned − base layout,
``model`` in "base", "tuned", "delta") and the derived tables they show:

1. every prompt variant ``(system, user)`` as the model sees it (:func:`interp.prompts.format_prompt`);
2. :func:`~interp.activations.pair_attention_metrics` at the last prompt token (entropy, max,
   first-token sink, keyword attention) for base and tuned;
3. :func:`~interp.activations.pair_head_type_scores` (previous-token, duplicate-token, induction) on
   seeded repeated random tokens;
4. seed 004's heatmap: the head-averaged attention pattern of one variant at one layer (default: the
   first variant, the last layer), base and tuned (:func:`~interp.activations.attention_pattern`).

Entropy is reported raw (nats) and normalised, ``H / ln n_keys`` with ``n_keys`` the keys the last
token sees: the variants differ in length, and raw entropy grows with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from interp.activations.attention_metrics import (
    AttentionPattern,
    attention_pattern,
    pair_attention_metrics,
    prompt_sensitivity,
)
from interp.activations.head_types import HEAD_TYPES, pair_head_type_scores
from interp.pair import ModelPair
from interp.prompts import format_prompt

__all__ = ["AttentionStudy", "attention_study"]


@dataclass(frozen=True, eq=False)
class AttentionStudy:
    """Everything :func:`attention_study` computed.

    ``texts``: label -> formatted prompt; ``heads``/``layers_frame``/``keywords``: the head-level,
    layer-level and keyword frames of the attention metrics; ``head_types``: head-type scores per
    (model, layer, head). All in the long tuned − base layout (:func:`interp.pair.delta_frame`).
    ``mean_patterns``: model ("base", "tuned") -> head-averaged attention pattern of variant
    ``pattern_variant`` at layer ``pattern_layer``.
    """

    texts: dict[str, str]
    layers: tuple[int, ...] | None
    heads: pd.DataFrame
    layer_frame: pd.DataFrame
    keywords: pd.DataFrame
    head_types: pd.DataFrame
    head_type_length: int
    head_type_sequences: int
    head_type_seed: int
    mean_patterns: dict[str, AttentionPattern]
    pattern_variant: str
    pattern_layer: int

    def entropy_change_by_layer(self) -> pd.DataFrame:
        """Per layer: ``mean_abs_delta`` and ``mean_delta`` of the last-token entropy over heads and variants,
        and the same of the normalised entropy H / ln n_keys (``*_normalized``)."""
        delta = self.layer_frame[self.layer_frame["model"] == "delta"]
        raw = delta.groupby("layer")["entropy"].agg(mean_abs_delta=lambda s: s.abs().mean(), mean_delta="mean")
        normalized = delta.groupby("layer")["normalized_entropy"].agg(
            mean_abs_delta_normalized=lambda s: s.abs().mean(), mean_delta_normalized="mean")
        return raw.join(normalized).reset_index()

    def entropy_head_changes(self) -> pd.DataFrame:
        """Per (layer, head), mean over variants: ``base``, ``tuned``, ``delta``, ``abs_delta`` of the
        last-token entropy (nats) and ``normalized_base``, ``normalized_tuned``, ``normalized_delta`` of H / ln n_keys."""
        raw = self.head_changes("entropy")
        normalized = self.head_changes("normalized_entropy")[["layer", "head", "base", "tuned", "delta"]]
        normalized = normalized.rename(columns={c: f"normalized_{c}" for c in ("base", "tuned", "delta")})
        return raw.merge(normalized, on=["layer", "head"], validate="one_to_one")

    def prompt_sensitivity(self, model: str = "base") -> pd.DataFrame:
        """Per layer, the spread of the head-mean entropy across variants for ``model`` ("base" or "tuned"),
        raw and normalised, ranked by the normalised spread when the variants differ in length
        (:func:`interp.activations.attention_metrics.prompt_sensitivity`)."""
        if model not in ("base", "tuned"):
            raise ValueError(f"model: expected 'base' or 'tuned', got {model!r}")
        return prompt_sensitivity(self.layer_frame[self.layer_frame["model"] == model])

    def variant_entropy_delta(self, layer: int) -> pd.Series:
        """Δ entropy (mean over heads) per variant label at ``layer``."""
        frame = self.layer_frame
        return frame[(frame["model"] == "delta") & (frame["layer"] == layer)].set_index("label")["entropy"]

    def head_changes(self, value: str = "entropy") -> pd.DataFrame:
        """Per (layer, head): ``base``, ``tuned`` and ``delta`` of ``value`` averaged over variants, and ``abs_delta``."""
        wide = self.heads.groupby(["model", "layer", "head"])[value].mean().unstack("model").reset_index()
        out = wide[["layer", "head", "base", "tuned", "delta"]].copy()
        out["abs_delta"] = out["delta"].abs()
        return out

    def keyword_table(self) -> pd.DataFrame:
        """Per (variant, keyword that occurs in it): attention from the last token, mean over layers and
        heads, for base, tuned and delta."""
        columns = ["label", "keyword", "base", "tuned", "delta"]
        kw = self.keywords
        if not len(kw):
            return pd.DataFrame(columns=columns)
        present = kw[(kw["model"] == "base") & (kw["n_tokens"] > 0)][["label", "keyword"]].drop_duplicates()
        rows = kw.merge(present, on=["label", "keyword"])  # delta rows carry no n_tokens: select by base's
        if not len(rows):
            return pd.DataFrame(columns=columns)
        table = rows.groupby(["model", "label", "keyword"])["attention"].mean().unstack("model").reset_index()
        return table[columns]

    def type_changes(self) -> pd.DataFrame:
        """One row per (layer, head, type) with ``base``, ``tuned``, ``delta`` and ``abs_delta``."""
        long = self.head_types.melt(id_vars=["model", "layer", "head"], value_vars=list(HEAD_TYPES), var_name="type",
                                    value_name="score")
        wide = long.pivot_table(index=["layer", "head", "type"], columns="model", values="score").reset_index()
        out = wide[["layer", "head", "type", "base", "tuned", "delta"]].copy()
        out["abs_delta"] = out["delta"].abs()
        return out

    def strong_head_counts(self, threshold: float = 0.3) -> pd.DataFrame:
        """Per head type: how many heads score above ``threshold`` in base and in tuned."""
        scores = self.head_types[self.head_types["model"] != "delta"]
        strong = scores.melt(id_vars=["model", "layer", "head"], value_vars=list(HEAD_TYPES), var_name="type",
                             value_name="score")
        return (strong.assign(strong=strong["score"] > threshold).groupby(["type", "model"])["strong"].sum()
                .unstack("model").reset_index()
                .rename(columns={"base": f"heads > {threshold} (base)", "tuned": f"heads > {threshold} (tuned)"}))


def attention_study(
    pair: ModelPair,
    variants: Mapping[str, tuple[str | None, str]],
    *,
    keywords: Sequence[str] = (),
    layers: int | Sequence[int] | None = None,
    head_type_length: int = 40,
    head_type_sequences: int = 8,
    head_type_seed: int = 0,
    pattern_variant: str | None = None,
    pattern_layer: int | None = None,
    progress: bool | None = None,
) -> AttentionStudy:
    """Attention metrics of every prompt variant and head-type scores, base vs tuned (see the module).

    ``variants``: label -> ``(system prompt or None, user turn)``, formatted with the base model's chat
    template (or the plain fallback). ``keywords``: strings whose tokens' attention is measured.
    ``layers``: analysed layers (default all). Head types use ``head_type_sequences`` sequences of
    ``head_type_length`` random tokens, each repeated twice, drawn with ``head_type_seed``.
    ``pattern_variant``/``pattern_layer``: the variant and layer of the head-averaged heatmap
    (default: the first variant, the model's last layer, as seed 004).
    """
    pair = ModelPair.check(pair)
    if not isinstance(variants, Mapping) or len(variants) == 0:
        raise ValueError("variants: expected a non-empty mapping of label -> (system, user)")
    bad = [k for k, v in variants.items() if not (isinstance(v, tuple) and len(v) == 2)]
    if bad:
        raise TypeError(f"variants: values must be (system or None, user) tuples; bad labels {bad[:5]}")
    texts = {label: format_prompt(pair.base, system, user) for label, (system, user) in variants.items()}
    if pattern_variant is None:
        pattern_variant = next(iter(texts))
    if pattern_variant not in texts:
        raise ValueError(f"pattern_variant: {pattern_variant!r} is not a variant; variants are {list(texts)}")
    if pattern_layer is None:
        pattern_layer = pair.base.cfg.n_layers - 1
    compared = pair_attention_metrics(pair, list(texts.values()), labels=list(texts), keywords=list(keywords),
                                      layers=layers, progress=progress)
    types = pair_head_type_scores(pair, length=head_type_length, n_sequences=head_type_sequences,
                                  seed=head_type_seed, layers=layers, progress=progress)
    patterns = {name: attention_pattern(model, texts[pattern_variant], layer=pattern_layer, head=None)
                for name, model in (("base", pair.base), ("tuned", pair.tuned))}
    return AttentionStudy(
        texts=texts, layers=None if layers is None else tuple(layers) if not isinstance(layers, int) else (layers,),
        heads=compared.to_frame(), layer_frame=compared.layer_frame(), keywords=compared.keyword_frame(),
        head_types=types, head_type_length=head_type_length, head_type_sequences=head_type_sequences,
        head_type_seed=head_type_seed,
        mean_patterns=patterns, pattern_variant=pattern_variant, pattern_layer=patterns["base"].layer,
    )
