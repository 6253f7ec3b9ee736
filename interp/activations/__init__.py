"""Activation analyses: targeted caching at selected positions, Q/K/V structure at a target token
(seed 002), attention metrics reduced inside the forward pass and head types (seed 004).

Modules: :mod:`~interp.activations.positions` (tokenize and pick positions),
:mod:`~interp.activations.caching` (keep named hooks at those positions),
:mod:`~interp.activations.qkv_structure`, :mod:`~interp.activations.attention_metrics`,
:mod:`~interp.activations.head_types`. Figures live in :mod:`interp.plots.activations`.
"""

from interp.activations.attention_metrics import (
    AttentionMetrics,
    AttentionPattern,
    PairAttentionMetrics,
    attention_metrics,
    attention_pattern,
    compare_prompt_variants,
    few_shot_answer_attention,
    few_shot_answers,
    pair_attention_metrics,
    pair_few_shot_answer_attention,
    reduce_attention,
    with_delta,
)
from interp.activations.caching import PositionCache, cache_positions, check_hook_names
from interp.activations.head_types import (
    HEAD_TYPES,
    HeadTypeScores,
    head_type_scores,
    pair_head_type_scores,
    repeated_random_tokens,
)
from interp.activations.positions import (
    Positions,
    index_positions,
    last_positions,
    occurrence_spans,
    span_mask,
    target_positions,
)
from interp.activations.qkv_structure import (
    BLOCKS,
    QKVActivations,
    QKVSimilarityStudy,
    block_values,
    histogram_frame,
    neuron_similarity,
    qkv_activations,
    qkv_similarity_study,
    shuffle_entries,
    similarity_histograms,
)
from interp.prompts import TokenBatch, batch_from_tokens, run_batched, tokenize

__all__ = [
    "AttentionMetrics", "AttentionPattern", "PairAttentionMetrics", "attention_metrics", "attention_pattern",
    "compare_prompt_variants", "few_shot_answer_attention", "few_shot_answers", "pair_attention_metrics",
    "pair_few_shot_answer_attention", "reduce_attention", "with_delta",
    "PositionCache", "cache_positions", "check_hook_names", "run_batched",
    "HEAD_TYPES", "HeadTypeScores", "head_type_scores", "pair_head_type_scores", "repeated_random_tokens",
    "Positions", "TokenBatch", "batch_from_tokens", "index_positions", "last_positions", "occurrence_spans", "span_mask",
    "target_positions", "tokenize",
    "BLOCKS", "QKVActivations", "QKVSimilarityStudy", "block_values", "histogram_frame", "neuron_similarity",
    "qkv_activations", "qkv_similarity_study", "shuffle_entries", "similarity_histograms",
]
