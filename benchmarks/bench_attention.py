"""Attention metrics and head types for 64 prompts of 128 tokens on SmolLM2: interp's hook-reduced
metrics against (a) a bare forward pass with no hooks and (b) the seed's approach (every attention
pattern returned and kept, then reduced with loops over prompts, layers and heads).

Goals (issue 4): ≤ 1.3× the bare forward time, ≤ 0.5× the seed approach's peak memory.
"""

from __future__ import annotations

import numpy as np
import torch
from transformer_lens import head_detector as hd

from benchmarks._harness import BenchRow, compare
from interp.activations import attention_metrics, head_type_scores, repeated_random_tokens
from interp.loading import load_model
from interp.prompts import batch_from_tokens

N_PROMPTS, N_TOKENS, BATCH = 64, 128, 16
SEED = 0  # torch.Generator seed of the random prompts


def _prompts(model) -> torch.Tensor:  # noqa: ANN001
    """64 × 128 ordinary tokens drawn with a seeded generator (the same for every run)."""
    half = repeated_random_tokens(model, length=N_TOKENS, n_sequences=N_PROMPTS, seed=SEED)
    return half[:, :N_TOKENS]


def _bare(model, tokens: torch.Tensor) -> None:  # noqa: ANN001
    """The same batches through the model with no hooks and no logits."""
    for start in range(0, len(tokens), BATCH):
        model(tokens[start : start + BATCH], return_type=None)


def _seed_patterns(model, tokens: torch.Tensor) -> list[np.ndarray]:  # noqa: ANN001
    """The seed's extraction: all attention patterns of every prompt, kept ([layer, head, q, k] each)."""
    kept = []
    for start in range(0, len(tokens), BATCH):
        _, cache = model.run_with_cache(tokens[start : start + BATCH], return_type=None,
                                        names_filter=lambda n: n.endswith("hook_pattern"))
        stacked = torch.stack([cache["pattern", layer] for layer in range(model.cfg.n_layers)], dim=1)
        kept += list(stacked.numpy())  # [layer, head, q, k] per prompt
    return kept


def _seed_metrics(model, tokens: torch.Tensor) -> list[dict]:  # noqa: ANN001
    """Seed 004's analyze_head_specialization + compute_layer_entropy, plus the mean-over-queries
    entropy and sink interp also reports, with the seed's loops."""
    rows = []
    for attentions in _seed_patterns(model, tokens):
        n_layers, n_heads = attentions.shape[:2]
        for layer in range(n_layers):
            layer_attn = attentions[layer].mean(axis=0)[-1] + 1e-10
            layer_entropy = -np.sum(layer_attn * np.log(layer_attn))
            for head in range(n_heads):
                head_attn = attentions[layer, head, -1, :]
                per_query = -np.sum(attentions[layer, head, 1:] * np.log(attentions[layer, head, 1:] + 1e-10), axis=-1)
                rows.append({
                    "layer": layer, "head": head,
                    "entropy": -np.sum(head_attn * np.log(head_attn + 1e-10)),
                    "max_attention": np.max(head_attn), "focus_position": np.argmax(head_attn),
                    "sink": head_attn[0], "mean_entropy": per_query.mean(),
                    "mean_sink": attentions[layer, head, 1:, 0].mean(), "layer_entropy": layer_entropy,
                })
    return rows


def _seed_head_types(model, tokens: torch.Tensor) -> np.ndarray:  # noqa: ANN001
    """detect_head's way: cached patterns, then one score per (sequence, layer, head, type) in loops."""
    scores = np.zeros((3, len(tokens), model.cfg.n_layers, model.cfg.n_heads))
    patterns = _seed_patterns(model, tokens)
    for i, attentions in enumerate(patterns):
        row = tokens[i : i + 1]
        for k, detector in enumerate((hd.get_previous_token_head_detection_pattern,
                                      hd.get_duplicate_token_head_detection_pattern,
                                      hd.get_induction_head_detection_pattern)):
            detection = detector(row)
            for layer in range(model.cfg.n_layers):
                for head in range(model.cfg.n_heads):
                    scores[k, i, layer, head] = hd.compute_head_attention_similarity_score(
                        torch.from_numpy(attentions[layer, head]), detection,
                        exclude_bos=False, exclude_current_token=False, error_measure="mul")
    return scores.mean(axis=1)


def run() -> list[BenchRow]:
    torch.set_grad_enabled(False)
    model = load_model("smollm2-135m-instruct")
    tokens = _prompts(model)
    batch = batch_from_tokens(model, tokens)
    repeated = repeated_random_tokens(model, length=N_TOKENS // 2, n_sequences=N_PROMPTS, seed=SEED)

    def interp_metrics() -> None:
        attention_metrics(model, batch, batch_size=BATCH, progress=False)

    def interp_heads() -> None:
        head_type_scores(model, repeated, batch_size=BATCH, progress=False)

    shape = f"{N_PROMPTS} prompts × {N_TOKENS} tokens, batches of {BATCH}"
    return [
        compare("attention metrics vs bare forward", interp_metrics, lambda: _bare(model, tokens),
                reference="bare forward, no hooks, no logits", repeats=3,
                notes=f"{shape}; goal ≤ 1.3× bare time"),
        compare("attention metrics vs seed approach", interp_metrics, lambda: _seed_metrics(model, tokens),
                reference="all patterns kept (run_with_cache hook_pattern), numpy loops", repeats=3,
                notes=f"{shape}; goal ≤ 0.5× seed peak memory"),
        compare("head types vs bare forward", interp_heads, lambda: _bare(model, repeated),
                reference="bare forward, no hooks, no logits", repeats=3,
                notes=f"{N_PROMPTS} × [r r], |r| = {N_TOKENS // 2}; goal ≤ 1.3× bare time"),
        compare("head types vs seed approach", interp_heads, lambda: _seed_head_types(model, repeated),
                reference="detect_head-style: all patterns kept, per-head loops", repeats=1,
                notes="goal ≤ 0.5× seed peak memory"),
    ]
