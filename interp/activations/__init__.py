"""Activation analyses: pick token positions, cache hooks there, Q/K/V structure at a target token,
attention metrics reduced inside the forward pass and head types; one study, :func:`attention_study`.

This package exports the entry points a notebook calls. Kernels and helpers stay importable from
their modules: :mod:`~interp.activations.positions` (pick positions), :mod:`~interp.activations.caching`
(keep named hooks at those positions), :mod:`~interp.activations.qkv_structure`,
:mod:`~interp.activations.attention_metrics`, :mod:`~interp.activations.head_types`,
:mod:`~interp.activations.nulls` (paired bootstrap / sign-flip nulls of tuned − base changes),
:mod:`~interp.activations.study`. Tokenization and batched forwards live in :mod:`interp.prompts`;
figures in :mod:`interp.plots.activations`.
"""

from interp.activations.attention_metrics import (
    AttentionMetrics,
    AttentionPattern,
    PairAttentionMetrics,
    PairAttentionPattern,
    attention_metrics,
    attention_pattern,
    compare_prompt_variants,
    few_shot_answer_attention,
    pair_attention_metrics,
    pair_attention_pattern,
    pair_few_shot_answer_attention,
    prompt_sensitivity,
)
from interp.activations.caching import PositionCache, cache_positions
from interp.activations.head_types import (
    HEAD_TYPES,
    HeadTypeScores,
    head_type_scores,
    pair_head_type_scores,
    repeated_random_tokens,
)
from interp.activations.nulls import paired_change
from interp.activations.positions import Positions, index_positions, last_positions, target_positions
from interp.activations.qkv_structure import (
    QKVActivations,
    QKVSimilarityStudy,
    qkv_activations,
    qkv_similarity_study,
)
from interp.activations.study import AttentionStudy, attention_study
from interp.prompts import TokenBatch, tokenize

__all__ = [
    "AttentionStudy", "attention_study",
    "AttentionMetrics", "AttentionPattern", "PairAttentionMetrics", "attention_metrics", "attention_pattern",
    "PairAttentionPattern", "pair_attention_pattern",
    "compare_prompt_variants", "few_shot_answer_attention", "pair_attention_metrics", "pair_few_shot_answer_attention",
    "prompt_sensitivity",
    "PositionCache", "cache_positions", "paired_change",
    "HEAD_TYPES", "HeadTypeScores", "head_type_scores", "pair_head_type_scores", "repeated_random_tokens",
    "Positions", "TokenBatch", "index_positions", "last_positions", "target_positions", "tokenize",
    "QKVActivations", "QKVSimilarityStudy", "qkv_activations", "qkv_similarity_study",
]
