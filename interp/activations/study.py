"""The attention study of a pair in one call: attention metrics per prompt variant and head types.

:func:`attention_study` runs what the report section, the CLI and ``examples/activation_analyses.py``
share and returns an :class:`AttentionStudy` with the tidy frames (long tuned − base layout,
``model`` in "base", "tuned", "delta") and the derived tables they show:

1. every prompt variant ``(system, user)`` as the model sees it (:func:`interp.prompts.format_prompt`);
2. :func:`~interp.activations.pair_attention_metrics` at the last prompt token (entropy, max,
   first-token sink, keyword attention) for base and tuned;
3. :func:`~interp.activations.pair_head_type_scores` (previous-token, duplicate-token, induction) on
   seeded repeated random tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd

from interp.activations.attention_metrics import pair_attention_metrics
from interp.activations.head_types import HEAD_TYPES, pair_head_type_scores
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
    """

    result_layout: ClassVar[ResultLayout] = ResultLayout(
        headline="entropy_change_by_layer", tables=("heads", "layer_frame", "keywords", "head_types"),
        metadata=("texts", "layers", "head_type_length", "head_type_sequences", "head_type_seed"),
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

    def entropy_change_by_layer(self) -> pd.DataFrame:
        """Per layer: ``mean_abs_delta`` and ``mean_delta`` of the last-token entropy over heads and variants."""
        delta = self.layer_frame[self.layer_frame["model"] == "delta"]
        return (delta.groupby("layer")["entropy"].agg(mean_abs_delta=lambda s: s.abs().mean(), mean_delta="mean")
                .reset_index())

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
    progress: bool | None = None,
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
        progress: Progress bars (None: when there is more than one batch; False: silent).

    Returns:
        An :class:`AttentionStudy`: ``heads``, ``layer_frame``, ``keywords`` and ``head_types`` frames with
        ``model`` in "base", "tuned", "delta" (tuned − base), and the derived tables; it displays
        itself in a notebook and saves with ``save``.
    """
    pair = ModelPair.check(pair)
    if not isinstance(variants, Mapping) or len(variants) == 0:
        raise ValueError("variants: expected a non-empty mapping of label -> (system, user)")
    bad = [k for k, v in variants.items() if not (isinstance(v, tuple) and len(v) == 2)]
    if bad:
        raise TypeError(f"variants: values must be (system or None, user) tuples; bad labels {bad[:5]}")
    texts = {label: format_prompt(pair.base, system, user) for label, (system, user) in variants.items()}
    compared = pair_attention_metrics(pair, list(texts.values()), labels=list(texts), keywords=list(keywords),
                                      layers=layers, progress=progress)
    types = pair_head_type_scores(pair, length=head_type_length, n_sequences=head_type_sequences,
                                  seed=head_type_seed, layers=layers, progress=progress)
    return AttentionStudy(
        texts=texts, layers=None if layers is None else tuple(layers) if not isinstance(layers, int) else (layers,),
        heads=compared.to_frame(), layer_frame=compared.layer_frame(), keywords=compared.keyword_frame(),
        head_types=types, head_type_length=head_type_length, head_type_sequences=head_type_sequences,
        head_type_seed=head_type_seed,
    )
