"""The attention study of a pair in one call: attention metrics per prompt variant and head types.

:func:`attention_study` runs what the report section, the CLI and ``examples/activation_analyses.py``
share and returns an :class:`AttentionStudy` with the tidy frames (long tuned − base layout,
``model`` in "base", "tuned", "delta") and the derived tables they show:

1. every prompt variant ``(system, user)`` as the model sees it (:func:`interp.prompts.format_prompt`);
2. :func:`~interp.activations.pair_attention_metrics` at the last prompt token (entropy, max,
   first-token sink, keyword attention) for base and tuned;
3. :func:`~interp.activations.pair_head_type_scores` (previous-token, duplicate-token, induction) on
   seeded repeated random tokens;
4. the heatmap: the head-averaged attention pattern of one variant at one layer (default: the
   first variant, the last layer), base and tuned (:func:`~interp.activations.attention_pattern`);
5. the paired nulls (:func:`~interp.activations.nulls.paired_change`): entropy changes (raw and
   normalised) per layer and per head over the prompt variants, head-type changes per head over the
   probe sequences, each with a seeded bootstrap CI and a sign-flip p-value.

Entropy is reported raw (nats) and normalised, ``H / ln n_keys`` with ``n_keys`` the keys the last
token sees: the variants differ in length, and raw entropy grows with it. Each has its own null.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd

from interp._stats import describe_paired
from interp.activations.attention_metrics import (
    AttentionPattern,
    attention_pattern,
    pair_attention_metrics,
    prompt_sensitivity,
)
from interp.activations.head_types import HEAD_TYPES, pair_head_type_frames
from interp.activations.nulls import paired_change
from interp.pair import ModelPair
from interp.prompts import format_prompt
from interp.results import Result, ResultLayout

__all__ = ["AttentionStudy", "attention_study"]


@dataclass(frozen=True, eq=False)
class AttentionStudy(Result):
    """Everything :func:`attention_study` computed.

    ``texts``: label -> formatted prompt; ``heads``/``layers_frame``/``keywords``: the head-level,
    layer-level and keyword frames of the attention metrics; ``head_types``: head-type scores per
    (model, layer, head). All in the long tuned − base layout (:func:`interp.pair.delta_frame`).
    ``base_mean_pattern``/``tuned_mean_pattern`` (also :attr:`mean_patterns`): the head-averaged
    attention pattern of variant ``pattern_variant`` at layer ``pattern_layer``.

    Nulls (:func:`~interp.activations.nulls.paired_change`, verdicts at ``alpha``): ``entropy_layer_nulls``
    (per layer, of the head-averaged entropy: :meth:`entropy_change_by_layer`'s numbers) and
    ``entropy_head_nulls`` (per head) over the prompt variants, and the same of the normalised entropy
    H / ln n_keys (``normalized_entropy_layer_nulls``, ``normalized_entropy_head_nulls``);
    ``head_type_by_sequence`` (head-type scores per probe sequence, long layout) and ``head_type_nulls``
    (per layer, head and type) over the sequences.
    """

    result_layout: ClassVar[ResultLayout] = ResultLayout(
        headline="entropy_change_by_layer",
        tables=("heads", "layer_frame", "keywords", "head_types", "head_type_by_sequence", "entropy_layer_nulls",
                "entropy_head_nulls", "normalized_entropy_layer_nulls", "normalized_entropy_head_nulls",
                "head_type_nulls"),
        metadata=("texts", "layers", "head_type_length", "head_type_sequences", "head_type_seed", "alpha",
                  "pattern_variant", "pattern_layer"),
        results=("base_mean_pattern", "tuned_mean_pattern"),
        derived_tables=("head_changes", "keyword_table", "type_changes", "strong_head_counts"))

    texts: dict[str, str]
    layers: tuple[int, ...] | None
    heads: pd.DataFrame
    layer_frame: pd.DataFrame
    keywords: pd.DataFrame
    head_types: pd.DataFrame
    head_type_length: int
    head_type_sequences: int
    head_type_seed: int
    head_type_by_sequence: pd.DataFrame
    entropy_layer_nulls: pd.DataFrame
    entropy_head_nulls: pd.DataFrame
    normalized_entropy_layer_nulls: pd.DataFrame
    normalized_entropy_head_nulls: pd.DataFrame
    head_type_nulls: pd.DataFrame
    alpha: float
    base_mean_pattern: AttentionPattern
    tuned_mean_pattern: AttentionPattern
    pattern_variant: str
    pattern_layer: int

    @property
    def mean_patterns(self) -> dict[str, AttentionPattern]:
        """``{"base": ..., "tuned": ...}``: the head-averaged attention patterns (the heatmap's data)."""
        return {"base": self.base_mean_pattern, "tuned": self.tuned_mean_pattern}

    def null_phrase(self, row: pd.Series, unit: str, value: str = "mean_abs_delta") -> str:
        """A :func:`paired_change` row in words: the CI of ``value`` ("mean_abs_delta" or "mean_delta")
        and the sign-flip p-value over ``unit`` (e.g. "prompt variants")."""
        return describe_paired(row[f"{value}_low"], row[f"{value}_high"], row["p_value"], int(row["n_units"]),
                               unit, row["level"], self.alpha, bool(row["exact"]))

    def entropy_change_by_layer(self) -> pd.DataFrame:
        """Per layer: ``mean_abs_delta`` and ``mean_delta`` over variants of Δ of the head-averaged last-token entropy,
        with the bootstrap CI of ``mean_abs_delta`` (``ci_low``/``ci_high``) and the sign-flip ``p_value``
        of :attr:`entropy_layer_nulls`; and the same of the normalised entropy H / ln n_keys
        (``mean_abs_delta_normalized``, ``mean_delta_normalized``, ``ci_low_normalized``, ``ci_high_normalized``,
        ``p_value_normalized``, of :attr:`normalized_entropy_layer_nulls`)."""
        delta = self.layer_frame[self.layer_frame["model"] == "delta"]
        table = delta[["layer"]].drop_duplicates().sort_values("layer", ignore_index=True)
        for value, nulls, suffix in (("entropy", self.entropy_layer_nulls, ""),
                                     ("normalized_entropy", self.normalized_entropy_layer_nulls, "_normalized")):
            changes = delta.groupby("layer")[value].agg(mean_abs_delta=lambda s: s.abs().mean(), mean_delta="mean")
            table = table.merge(changes.add_suffix(suffix).reset_index(), on="layer", how="left")
            names = {"mean_abs_delta_low": f"ci_low{suffix}", "mean_abs_delta_high": f"ci_high{suffix}",
                     "p_value": f"p_value{suffix}"}
            table = table.merge(nulls[["layer", *names]].rename(columns=names), on="layer", how="left")
        return table

    def entropy_head_changes(self) -> pd.DataFrame:
        """Per (layer, head), mean over variants: ``base``, ``tuned``, ``delta``, ``abs_delta`` of the
        last-token entropy (nats) with the CI of ``delta`` and its ``p_value``, and ``normalized_base``,
        ``normalized_tuned``, ``normalized_delta``, ``normalized_ci_low``, ``normalized_ci_high``,
        ``normalized_p_value``: the same of H / ln n_keys (see :meth:`head_changes`)."""
        raw = self.head_changes("entropy")
        columns = ["base", "tuned", "delta", "ci_low", "ci_high", "p_value"]
        normalized = self.head_changes("normalized_entropy")[["layer", "head", *columns]]
        normalized = normalized.rename(columns={c: f"normalized_{c}" for c in columns})
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
        """Per (layer, head): ``base``, ``tuned`` and ``delta`` of ``value`` averaged over variants, and
        ``abs_delta``; for ``"entropy"`` and ``"normalized_entropy"`` also the bootstrap CI of ``delta`` over
        the variants (``ci_low``/``ci_high``) and its sign-flip ``p_value`` (:attr:`entropy_head_nulls`,
        :attr:`normalized_entropy_head_nulls`)."""
        wide = self.heads.groupby(["model", "layer", "head"])[value].mean().unstack("model").reset_index()
        out = wide[["layer", "head", "base", "tuned", "delta"]].copy()
        out["abs_delta"] = out["delta"].abs()
        head_nulls = {"entropy": self.entropy_head_nulls, "normalized_entropy": self.normalized_entropy_head_nulls}
        if value not in head_nulls:
            return out
        nulls = head_nulls[value].rename(columns={"mean_delta_low": "ci_low", "mean_delta_high": "ci_high"})
        return out.merge(nulls[["layer", "head", "ci_low", "ci_high", "p_value"]], on=["layer", "head"], how="left")

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
        """One row per (layer, head, type) with ``base``, ``tuned``, ``delta``, ``abs_delta`` and, from
        :attr:`head_type_nulls`, the bootstrap CI of ``delta`` over the sequences and its sign-flip ``p_value``."""
        long = self.head_types.melt(id_vars=["model", "layer", "head"], value_vars=list(HEAD_TYPES), var_name="type",
                                    value_name="score")
        wide = long.pivot_table(index=["layer", "head", "type"], columns="model", values="score").reset_index()
        out = wide[["layer", "head", "type", "base", "tuned", "delta"]].copy()
        out["abs_delta"] = out["delta"].abs()
        nulls = self.head_type_nulls.rename(columns={"mean_delta_low": "ci_low", "mean_delta_high": "ci_high"})
        return out.merge(nulls[["layer", "head", "type", "ci_low", "ci_high", "p_value"]],
                         on=["layer", "head", "type"], how="left")

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
    n_resamples: int = 2000,
    n_permutations: int = 10_000,
    null_seed: int = 0,
    level: float = 0.95,
    alpha: float = 0.05,
) -> AttentionStudy:
    """Attention metrics of every prompt variant and head-type scores, base vs tuned (see the module).

    Args:
        pair: The base/tuned :class:`~interp.ModelPair`.
        variants: Label → ``(system prompt or None, user turn)``, formatted with the base model's chat
            template (or the plain fallback).
        keywords: Strings whose tokens' attention from the last token is measured.
        layers: Analysed layers (default all).
        head_type_length: Length of each random token sequence (repeated twice) for the head types.
        head_type_sequences: Number of such sequences.
        head_type_seed: Seed of the random tokens.
        pattern_variant: The variant of the head-averaged attention heatmap (default: the first).
        pattern_layer: Its layer (default: the model's last layer).
        progress: Progress bars (None: when there is more than one batch; False: silent).
        n_resamples: Bootstrap resamples of the paired nulls (``level`` intervals).
        n_permutations: Sign flips of the paired nulls (all of them when ``2^n_units`` is no more).
        null_seed: Seed of both.
        level: Coverage of the bootstrap intervals.
        alpha: The p-value at or below which a change is called distinguishable. More variants or
            sequences give narrower intervals.

    Returns:
        An :class:`AttentionStudy`: ``heads``, ``layer_frame``, ``keywords`` and ``head_types`` frames with
        ``model`` in "base", "tuned", "delta" (tuned − base), and the derived tables; it displays
        itself in a notebook and saves with ``save``.
    """
    pair = ModelPair.check(pair)
    if not (isinstance(alpha, float) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha: expected a float in (0, 1), got {alpha!r}")
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
    types, by_sequence = pair_head_type_frames(pair, length=head_type_length, n_sequences=head_type_sequences,
                                               seed=head_type_seed, layers=layers, progress=progress)
    null_args = dict(n_resamples=n_resamples, n_permutations=n_permutations, seed=null_seed, level=level)
    heads, layer_frame = compared.to_frame(), compared.layer_frame()
    entropy, layer_deltas = heads[heads["model"] == "delta"], layer_frame[layer_frame["model"] == "delta"]
    type_deltas = by_sequence[by_sequence["model"] == "delta"].melt(
        id_vars=["sequence", "layer", "head"], value_vars=list(HEAD_TYPES), var_name="type", value_name="score")
    patterns = {name: attention_pattern(model, texts[pattern_variant], layer=pattern_layer, head=None)
                for name, model in (("base", pair.base), ("tuned", pair.tuned))}
    return AttentionStudy(
        texts=texts, layers=None if layers is None else tuple(layers) if not isinstance(layers, int) else (layers,),
        heads=heads, layer_frame=layer_frame, keywords=compared.keyword_frame(),
        head_types=types, head_type_length=head_type_length, head_type_sequences=head_type_sequences,
        head_type_seed=head_type_seed, head_type_by_sequence=by_sequence,
        entropy_layer_nulls=paired_change(layer_deltas, "entropy", unit="label", items=["layer"], **null_args),
        entropy_head_nulls=paired_change(entropy, "entropy", unit="label", items=["layer", "head"], **null_args),
        normalized_entropy_layer_nulls=paired_change(layer_deltas, "normalized_entropy", unit="label",
                                                     items=["layer"], **null_args),
        normalized_entropy_head_nulls=paired_change(entropy, "normalized_entropy", unit="label",
                                                    items=["layer", "head"], **null_args),
        head_type_nulls=paired_change(type_deltas, "score", unit="sequence", items=["layer", "head", "type"],
                                      **null_args),
        alpha=alpha,
        base_mean_pattern=patterns["base"], tuned_mean_pattern=patterns["tuned"], pattern_variant=pattern_variant,
        pattern_layer=patterns["base"].layer,
    )
