"""The circuit kernels on explicit tensors against plain per-layer, per-head Python loops.

The real-model tests check the kernels against TransformerLens' forward pass, where SmolLM2 and
Gemma have no Q/K/V biases; here biases are nonzero and the head grouping (6 query heads over 2 KV
heads) is checked entry by entry. Tensors are Gaussian from ``torch.Generator().manual_seed(0)``.
"""

from __future__ import annotations

import pytest
import torch

from interp.circuits.qk import qk_mean_scores, qk_scores
from interp.circuits.vo import vo_write

L, H, KV, D, DH, N, M = 2, 6, 2, 16, 4, 5, 3
G = H // KV


@pytest.fixture(scope="module")
def tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    shapes = dict(x=(L, N, D), y=(L, M, D), W_Q=(L, H, D, DH), b_Q=(L, H, DH), W_K=(L, KV, D, DH), b_K=(L, KV, DH),
                  W_V=(L, KV, D, DH), b_V=(L, KV, DH), W_O=(L, H, DH, D))
    out = {name: torch.randn(shape, generator=gen, dtype=torch.float64) for name, shape in shapes.items()}
    out["scale"] = torch.tensor([2.0, 3.0], dtype=torch.float64)
    return out


def test_qk_kernels_match_loops(tensors):
    t = tensors
    expected = torch.zeros(L, H, N, M, dtype=torch.float64)
    for layer in range(L):
        for head in range(H):
            q = t["x"][layer] @ t["W_Q"][layer, head] + t["b_Q"][layer, head]
            k = t["y"][layer] @ t["W_K"][layer, head // G] + t["b_K"][layer, head // G]
            expected[layer, head] = q @ k.T / t["scale"][layer]
    weights = dict(W_Q=t["W_Q"], b_Q=t["b_Q"], W_K=t["W_K"], b_K=t["b_K"], attn_scale=t["scale"])
    torch.testing.assert_close(qk_scores(t["x"], t["y"], **weights), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(qk_mean_scores(t["x"], t["y"], **weights), expected.mean(1), rtol=1e-10, atol=1e-10)


def test_vo_kernels_match_loops(tensors):
    t = tensors
    expected = torch.zeros(L, H, N, D, dtype=torch.float64)
    for layer in range(L):
        for head in range(H):
            values = t["x"][layer] @ t["W_V"][layer, head // G] + t["b_V"][layer, head // G]
            expected[layer, head] = values @ t["W_O"][layer, head]
    weights = dict(W_V=t["W_V"], b_V=t["b_V"], W_O=t["W_O"])
    torch.testing.assert_close(vo_write(t["x"], **weights), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(vo_write(t["x"], **weights, sum_heads=True), expected.sum(1), rtol=1e-10, atol=1e-10)


def test_kernels_refuse_head_counts_that_do_not_group(tensors):
    t = tensors
    with pytest.raises(ValueError, match="W_K: 4 key/value heads do not divide 6"):
        qk_mean_scores(t["x"], t["y"], W_Q=t["W_Q"], b_Q=t["b_Q"], W_K=t["W_Q"][:, :4], b_K=t["b_Q"][:, :4],
                       attn_scale=t["scale"])
    with pytest.raises(ValueError, match="W_V: 4 key/value heads"):
        vo_write(t["x"], W_V=t["W_Q"][:, :4], b_V=t["b_Q"][:, :4], W_O=t["W_O"])
